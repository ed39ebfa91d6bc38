"""Extractive summaries: a document's most central sentences, chosen with the embedder, no LLM.

Why: on the CPU default an LLM summary costs ~20-40 s of the only two cores per document, so a new folder would wait
hours for the routing that summaries give. The chunk vectors are already in SQL; their mean is the document's
centre, and the sentences closest to it (from the lead chunk, which names the subject, and the most central chunks)
say what the document is about. Cost: one embedding batch of a few dozen sentences. ``bench/summaries.py recall``
measures what each kind adds to routing; an LLM summary later replaces an extractive one where configured.
Redundant sentences are held back by maximal marginal relevance, and tables (mostly numbers) are not sentences.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rag.models.embedder import Embedder

_SPLIT = re.compile(r"(?<=[.!?])\s+|\n+")
_WORD = re.compile(r"[^\W\d_]{2,}")
_NAME = re.compile(r"(?<![.!?]\s)(?<!^)\b(?:[A-Z][A-Za-z]*[a-z][A-Za-z]*|[a-z]+[A-Z][A-Za-z]*)\b", re.MULTILINE)
"""A capitalised (or camel-case) word that does not open a sentence or a line: names of companies, products,
people, places."""

LEAD_CHUNKS = 1
CENTRAL_CHUNKS = 4
MAX_CANDIDATES = 64
MIN_WORDS, MAX_WORDS = 5, 60
DISTINCT = 0.5
"""How much of the collection's centre is taken out of the document's before sentences are scored."""
KEY_TERMS = 6
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


@dataclass
class CollectionSample:
    """What a sample of the collection's chunks says about all documents: their mean vector, and in how many
    sampled chunks each name occurs (so that names every document shares are not taken as a document's subject)."""

    centre: np.ndarray
    name_counts: Counter[str]
    chunks: int

    @classmethod
    def of(cls, vectors: np.ndarray, texts: Sequence[str]) -> CollectionSample:
        counts: Counter[str] = Counter()
        for text in texts:
            counts.update(set(_NAME.findall(text)))
        return cls(vectors.mean(axis=0), counts, len(texts))


def key_terms(texts: Sequence[str], sample: CollectionSample | None, k: int = KEY_TERMS) -> list[str]:
    """The names this document uses most that are rare in the rest of the collection (tf-idf over the sample):
    its subject ("Apple", "iPhone") rather than what every document says ("Company", "Total")."""
    tf: Counter[str] = Counter()
    for text in texts:
        tf.update(_NAME.findall(text))
    if sample is None:
        return [name for name, _ in tf.most_common(k)]
    n = sample.chunks
    score = {name: count * math.log((1 + n) / (1 + sample.name_counts[name])) for name, count in tf.items() if count > 1}
    return sorted(score, key=lambda name: -score[name])[:k]


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-9)


def extractive_summary(
    title: str, texts: Sequence[str], vectors: np.ndarray, embedder: Embedder, max_words: int,
    collection: CollectionSample | None = None,
) -> str:
    """``title`` and up to ``max_words`` words of the document's most central sentences, in document order.

    ``texts`` are the document's chunks in order and ``vectors`` their stored embeddings. With a sample of the
    ``collection``, centrality is measured against what sets this document apart from the others, and the
    summary opens with the document's distinctive names: boilerplate that every document of the collection shares
    (the cover page of every SEC filing) says nothing about which document to route to."""
    unit = _unit(vectors)
    centre = _unit(unit.mean(axis=0))
    if collection is not None:
        centre = _unit(centre - DISTINCT * _unit(collection.centre))
    terms = key_terms(texts, collection)
    head = f"{title} ({', '.join(terms)})" if terms else title
    central = np.argsort(-(unit @ centre))[:CENTRAL_CHUNKS]
    chosen_chunks = sorted(set(range(min(LEAD_CHUNKS, len(texts)))) | {int(i) for i in central})
    candidates: list[str] = []
    for i in chosen_chunks:
        for sentence in sentences(texts[i]):
            if sentence not in candidates:
                candidates.append(sentence)
    candidates = candidates[:MAX_CANDIDATES]
    if not candidates:  # no prose at all (a table, a list of names): the lead itself
        return f"{head}: {' '.join(' '.join(texts[0].split()).split()[:max_words])}" if texts else head
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
    return f"{head}: " + " ".join(candidates[i] for i in sorted(picked))
