"""Citation verification, after generation: does the passage ``[n]`` support the sentence that cites it, and where?

A citation otherwise only says "passage n was shown and the model wrote [n]"; small models cite the first passage
out of habit, or nothing at all. So each sentence of the answer (its citations removed: the claim) is scored against
every sentence of every passage the model was shown:

    support = (cosine of the embedder's vectors, clipped at 0  +  share of the claim's content words in the span) / 2
              x share of the claim's numbers that the span writes too

The last factor is there because a paraphrase-happy cosine and shared words score "The Amazon basin covers
1,000,000 square kilometres" high against "This basin encompasses seven million square kilometres": a number the
passage does not state is the commonest invention of a small model, and it is cheap to check exactly.

The claim is read together with the question it answers, in both halves: "Denver won [2]." says little alone, and
the passage that supports it is the one that also says what was asked (on SQuAD 2.0, ``bench/answers.py replay``:
the gold paragraph cited for 0.978 of the correct answers against 0.870 with the sentence alone). The embedder is
the one retrieval already loaded (one batch of short texts); the lexical half keeps a number or a name from being
lost in a paraphrase-happy cosine.

A citation whose passage scores below ``settings.citation_min_support`` is dropped; the sentence then cites the shown
passage that scores best, when that one clears the bar. A citation that clears it stays unless another shown
passage supports the sentence better by more than ``settings.citation_switch_margin``: the model read the passages
and its choice is evidence too, but the habit of citing [1] is strong. A passage of the document itself is
preferred to a document summary that clears the bar too: its span has offsets in the document and a page. A
sentence left with no citation is unsupported (:class:`~rag.types.SentenceCheck`), and groundedness is the share of
checked sentences supported. Sentences without content words ("Yes.") are not checked and keep their citations.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from rag.synthesis.citations import parse_citations, recite, strip_citations
from rag.synthesis.words import content_words, numbers, sentence_bounds
from rag.types import Hit, SentenceCheck, Span


class Embeds(Protocol):
    """What verification needs of the embedder: L2-normalised vectors of short texts."""

    def embed(self, texts: list[str], *, query: bool = False) -> np.ndarray: ...


@dataclass
class Verification:
    """The answer's text with its citations checked, each sentence's verdict, and the supporting spans by passage."""

    text: str
    sentences: list[SentenceCheck] = field(default_factory=list)
    spans: dict[int, list[Span]] = field(default_factory=dict)

    @property
    def groundedness(self) -> float | None:
        """Share of checked sentences a cited passage supports; None when no sentence could be checked."""
        if not self.sentences:
            return None
        return round(sum(s.supported for s in self.sentences) / len(self.sentences), 4)


@dataclass(frozen=True)
class Candidate:
    """One sentence of a shown passage: where it is in the passage, and its content words."""

    number: int  # the passage's [n]
    start: int
    end: int
    text: str
    words: frozenset[str]
    numbers: frozenset[str] = frozenset()


def verify_citations(
    text: str, hits: Sequence[Hit], shown: Collection[int], embedder: Embeds, min_support: float,
    *, margin: float = 0.0, question: str = "",
) -> Verification:
    """Check, re-point, remove or add the citations of ``text`` (the answer to ``question``) against the passages
    ``shown`` (their ``[n]`` is the hit's rank, from 1); returns the corrected text with the spans that support
    each sentence. A supported citation gives way to a passage that scores more than ``margin`` higher."""
    bounds = sentence_bounds(text)
    claims = [strip_citations(text[start:end]).strip() for start, end in bounds]
    checked = [i for i, claim in enumerate(claims) if content_words(claim)]
    candidates = passage_sentences(hits, shown)
    if not checked or not candidates:
        return Verification(text)
    scores = support_scores([claims[i] for i in checked], question, candidates, embedder)
    passages = {n: hits[n - 1].document_id for n in shown if hits[n - 1].kind == "chunk"}
    summaries = {n: hits[n - 1].document_id for n in shown if hits[n - 1].kind != "chunk"}
    result = Verification(text="")
    pieces: list[str] = []
    cursor = written = 0
    for row, i in enumerate(checked):
        start, end = bounds[i]
        best = best_per_passage(scores[row], candidates)
        cited = parse_citations(text[start:end])
        kept = _decide(cited, best, min_support, margin, passages, summaries)
        sentence = text[start:end] if kept == cited else recite(text[start:end], kept)
        pieces += [text[cursor:start], sentence]
        written += start - cursor
        result.sentences.append(SentenceCheck(
            start=written, end=written + len(sentence), supported=bool(kept),
            score=round(max(score for score, _ in best.values()), 4), citations=kept,
        ))
        written += len(sentence)
        cursor = end
        for n in kept:
            score, candidate = best[n]
            result.spans.setdefault(n, []).append(
                passage_span(hits[n - 1], candidate.start, candidate.end, score, len(result.sentences) - 1))
    result.text = "".join([*pieces, text[cursor:]])
    return result


def passage_sentences(hits: Sequence[Hit], passages: Collection[int]) -> list[Candidate]:
    """The sentences of the passages numbered ``passages`` (``[n]`` is ``hits[n - 1]``), in that order."""
    return [candidate for n in sorted(passages) for candidate in text_sentences(hits[n - 1].text, n)]


def text_sentences(text: str, number: int = 1) -> list[Candidate]:
    """The sentences of one text (passage ``[number]``) as candidates to support a claim."""
    return [
        Candidate(number, start, end, sentence, frozenset(content_words(sentence)), numbers(sentence))
        for start, end in sentence_bounds(text)
        for sentence in (text[start:end],)
    ]


def unsupported_claims(text: str, candidates: list[Candidate], embedder: Embeds, min_support: float) -> list[str]:
    """The sentences of ``text`` (with content words) that no candidate supports by ``min_support``: what a text
    written from those sentences (a summary of a document) says that they do not."""
    claims = [c for start, end in sentence_bounds(text) if content_words(c := strip_citations(text[start:end]).strip())]
    if not claims:
        return []
    if not candidates:
        return claims
    best = support_scores(claims, "", candidates, embedder).max(axis=1)
    return [claim for claim, score in zip(claims, best.tolist(), strict=True) if score < min_support]


def support_scores(claims: list[str], question: str, candidates: list[Candidate], embedder: Embeds) -> np.ndarray:
    """(claims × candidates) support scores: half cosine, half the share of the claim's words found in the span,
    each claim read with the question (a claim of "" scores the sentences for the question alone), times the share
    of the claim's own numbers the span writes too."""
    asked = f"{question.strip()} " if question.strip() else ""
    vectors = embedder.embed([asked + claim for claim in claims] + [c.text for c in candidates])
    cosine = np.clip(vectors[: len(claims)] @ vectors[len(claims):].T, 0.0, 1.0)
    lexical = np.zeros_like(cosine)
    question_words = content_words(question)
    stated = np.ones_like(cosine)
    for row, claim in enumerate(claims):
        words = content_words(claim) | question_words
        figures = numbers(claim)
        for col, candidate in enumerate(candidates):
            lexical[row, col] = len(words & candidate.words) / max(1, len(words))
            if figures:
                stated[row, col] = len(figures & candidate.numbers) / len(figures)
    return (cosine + lexical) / 2 * stated


def best_per_passage(scores: np.ndarray, candidates: list[Candidate]) -> dict[int, tuple[float, Candidate]]:
    """For one claim: each passage's best-scoring sentence and its score."""
    best: dict[int, tuple[float, Candidate]] = {}
    for score, candidate in zip(scores.tolist(), candidates):
        if candidate.number not in best or score > best[candidate.number][0]:
            best[candidate.number] = (score, candidate)
    return best


def _decide(
    cited: list[int], best: dict[int, tuple[float, Candidate]], min_support: float, margin: float,
    passages: dict[int, int], summaries: dict[int, int],
) -> list[int]:
    """The citations a sentence keeps: those whose passage supports it (a cited summary gives way to a passage of
    its own document that supports the sentence too). When none is left, or another shown passage supports the
    sentence better by more than ``margin``, that best passage instead: a document passage (``passages``: number ->
    document) before a summary."""
    kept = []
    for n in cited:
        if n not in best or best[n][0] < min_support:
            continue
        if n in summaries:
            own = [p for p, doc in passages.items() if doc == summaries[n] and p in best and best[p][0] >= min_support]
            n = max(own, key=lambda p: best[p][0], default=n)
        if n not in kept:
            kept.append(n)
    supporting = [n for n in best if best[n][0] >= min_support]
    if not supporting:
        return kept
    top = max(supporting, key=lambda n: (n in passages, best[n][0]))
    if not kept or (top not in kept and best[top][0] > max(best[n][0] for n in kept) + margin):
        return [top]
    return kept


def passage_span(hit: Hit, start: int, end: int, score: float, sentence: int) -> Span:
    """Characters ``start:end`` of the passage (a supporting sentence) as a span, placed in its document and on its
    page."""
    offset = hit.start_char
    return Span(
        start=start, end=end, score=round(score, 4), sentence=sentence,
        page=hit.page_of(start),
        sheet=hit.sheet_of(start),
        doc_start=None if offset is None else offset + start,
        doc_end=None if offset is None else offset + end,
    )
