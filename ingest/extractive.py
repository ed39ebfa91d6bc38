"""Extractive summaries: a document's most central sentences, chosen with the embedder, no LLM.

Why: on the CPU default an LLM summary costs ~20-40 s of the only two cores per document, so a new folder would wait
hours for the routing that summaries give. The chunk vectors are already in SQL; their mean is the document's
centre, and the sentences closest to it (from the lead chunk, which names the subject, and the most central chunks)
say what the document is about. Cost: one embedding batch of a few dozen sentences. ``bench/summaries.py recall``
measures what each kind adds to routing; an LLM summary later replaces an extractive one where configured.
Redundant sentences are held back by maximal marginal relevance, and tables (mostly numbers) are not sentences.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from rag.models.embedder import Embedder

_SPLIT = re.compile(r"(?<=[.!?])\s+|\n+")
_WORD = re.compile(r"[^\W\d_]{2,}")

LEAD_CHUNKS = 1
CENTRAL_CHUNKS = 4
MAX_CANDIDATES = 64
MIN_WORDS, MAX_WORDS = 5, 60
DIVERSITY = 0.3
"""Weight of the redundancy penalty (maximal marginal relevance): 0 picks by centrality alone."""


def sentences(text: str) -> list[str]:
    """Candidate sentences: prose of 5-60 words, at least half of them words rather than numbers or symbols."""
    out = []
    for raw in _SPLIT.split(text):
        sentence = " ".join(raw.split())
        tokens = sentence.split()
        if MIN_WORDS <= len(tokens) <= MAX_WORDS and len(_WORD.findall(sentence)) >= len(tokens) / 2:
            out.append(sentence)
    return out


def extractive_summary(
    title: str, texts: Sequence[str], vectors: np.ndarray, embedder: Embedder, max_words: int
) -> str:
    """``title`` and up to ``max_words`` words of the document's most central sentences, in document order.

    ``texts`` are the document's chunks in order and ``vectors`` their stored embeddings."""
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-9)
    centre = unit.mean(axis=0)
    centre /= max(float(np.linalg.norm(centre)), 1e-9)
    central = np.argsort(-(unit @ centre))[:CENTRAL_CHUNKS]
    chosen_chunks = sorted(set(range(min(LEAD_CHUNKS, len(texts)))) | {int(i) for i in central})
    candidates: list[str] = []
    for i in chosen_chunks:
        for sentence in sentences(texts[i]):
            if sentence not in candidates:
                candidates.append(sentence)
    candidates = candidates[:MAX_CANDIDATES]
    if not candidates:  # no prose at all (a table, a list of names): the lead itself
        return f"{title}: {' '.join(' '.join(texts[0].split()).split()[:max_words])}" if texts else title
    emb = embedder.embed(candidates)
    emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-9)
    relevance = emb @ centre
    picked: list[int] = []
    words = 0
    while len(picked) < len(candidates):
        redundancy = (emb @ emb[picked].T).max(axis=1) if picked else np.zeros(len(candidates))
        score = (1 - DIVERSITY) * relevance - DIVERSITY * redundancy
        score[picked] = -np.inf
        best = int(np.argmax(score))
        length = len(candidates[best].split())
        if picked and words + length > max_words:
            break
        picked.append(best)
        words += length
    return f"{title}: " + " ".join(candidates[i] for i in sorted(picked))
