"""After generation and verification: is the model's answer shown, or do the documents speak for themselves?

The rule (why it is this one: ``docs/querying.md``, measured by ``bench/answers.py squad`` and ``bench/calibrate.py``):
- ``generated``: the model answered, at least one of its sentences is supported by a cited passage, and the
  calibrated :func:`~rag.synthesis.confidence.confidence` reaches ``settings.min_confidence``;
- otherwise ``extractive``: the passages' sentences that best support the question (the key sentences, scored by the
  verifier) are quoted under a plain lead, with their citations, pages and spans — nothing in that text is the
  model's — when the best one scores at least ``settings.extractive_min_support``;
- otherwise ``abstained``: no answer, and the closest passages as related reading.

A model that said the documents do not hold the answer is weighed the same way: small models say so for answers
that are there, and the quotes then carry them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rag.synthesis.abstention import ABSTAIN_MESSAGE
from rag.synthesis.citations import strip_citations
from rag.synthesis.confidence import Signals, confidence
from rag.synthesis.passage_order import KeySentence
from rag.synthesis.prompts import KEY_SENTENCE_MAX_CHARS
from rag.synthesis.verify import passage_span
from rag.synthesis.words import content_words
from rag.types import Answer, Hit, SentenceCheck, Source

if TYPE_CHECKING:
    from rag.settings import Settings

EXTRACTIVE_LEAD = "The documents say:"
MIN_QUOTE_WORDS = 4
RELATED_READING = 3
"""Closest passages listed with an abstention that follows generation."""


def answer_in_sentence(answer: str, question: str, sentence: str) -> float:
    """The share of what the answer adds to the question (its content words that are not the question's) that the
    sentence says too: 1 when the model answered from that sentence, 0 when it wrote nothing of it."""
    added = content_words(strip_citations(answer)) - content_words(question)
    return len(added & content_words(sentence)) / len(added) if added else 0.0


def signals_of(answer: Answer, hits: Sequence[Hit], quotes: Sequence[KeySentence],
               token_logprobs: Sequence[float], abstention_logprob: float | None = None) -> Signals:
    """The evidence behind ``answer`` (see :mod:`rag.synthesis.confidence`); ``quotes`` best first."""
    dense = [h.dense_score for h in hits if h.dense_score is not None]
    checked = [s.score for s in answer.sentences]
    best = next((q for q in quotes if quotable(q.text)), None)  # a heading or a question answers nothing
    return Signals(
        retrieval=max(0.0, max(dense, default=0.0)),
        question_support=max((q.score for q in quotes), default=0.0),
        answer_in_best_sentence=answer_in_sentence(answer.text, answer.question, best.text) if best else 0.0,
        groundedness=answer.groundedness or 0.0,
        claim_support=min(checked, default=0.0),
        token_logprob=sum(token_logprobs) / len(token_logprobs) if token_logprobs else None,
        abstention_unlikely=None if abstention_logprob is None else -abstention_logprob,
    )


def decide(answer: Answer, hits: Sequence[Hit], quotes: Sequence[KeySentence], token_logprobs: Sequence[float],
           settings: Settings, abstention_logprob: float | None = None) -> Answer:
    """``answer`` (verified, over ``hits`` numbered from 1; ``kind`` already ``abstained`` when the model said the
    documents do not hold the answer) kept as ``generated``, or replaced by quotes or an abstention; either way it
    carries its confidence and the signals behind it."""
    signals = signals_of(answer, hits, quotes, token_logprobs, abstention_logprob)
    answer.confidence, answer.signals = confidence(signals), signals.to_dict()
    supported = any(s.supported for s in answer.sentences)
    if supported and answer.kind != "abstained" and answer.confidence >= settings.min_confidence:
        answer.kind = "generated"
        return answer
    chosen = [q for q in quotes if q.score >= settings.extractive_min_support and quotable(q.text)]
    chosen = chosen[: settings.extractive_quotes]
    return extractive(answer, hits, chosen) if chosen else related_reading(answer, hits)


def quotable(sentence: str) -> bool:
    """A statement that can stand as an answer: not a heading, a table row or a question, and not a fragment."""
    text = sentence.strip()
    return not text.startswith(("#", "|")) and not text.endswith("?") and len(text.split()) >= MIN_QUOTE_WORDS


def extractive(answer: Answer, hits: Sequence[Hit], quotes: Sequence[KeySentence]) -> Answer:
    """``answer`` turned into the quoted sentences, each cited, with its page where the document has pages."""
    pieces = [EXTRACTIVE_LEAD]
    sentences: list[SentenceCheck] = []
    spans: dict[int, list] = {}
    cursor = len(EXTRACTIVE_LEAD) + 1
    for i, quote in enumerate(quotes):
        hit = hits[quote.number - 1]
        flat = " ".join(quote.text.split())  # a sentence wrapped over lines reads as one
        words = flat if len(flat) <= KEY_SENTENCE_MAX_CHARS else flat[:KEY_SENTENCE_MAX_CHARS].rstrip() + "…"
        page = hit.page_of(quote.start)
        piece = f"“{words}” [{quote.number}]" + (f" (p. {page})" if page is not None else "")
        sentences.append(SentenceCheck(start=cursor, end=cursor + len(piece), supported=True, score=quote.score,
                                       citations=[quote.number]))
        spans.setdefault(quote.number, []).append(passage_span(hit, quote.start, quote.end, quote.score, i))
        pieces.append(piece)
        cursor += len(piece) + 1
    answer.text = " ".join(pieces)
    answer.kind = "extractive"
    answer.sentences = sentences
    answer.sources = [Source.of(hits[n - 1], n, spans[n]) for n in sorted(spans)]
    answer.groundedness = 1.0
    return answer


def related_reading(answer: Answer, hits: Sequence[Hit]) -> Answer:
    """``answer`` turned into an abstention that lists the closest passages."""
    numbers = list(range(1, min(RELATED_READING, len(hits)) + 1))
    listed = " ".join(f"[{n}]" for n in numbers)
    answer.text = f"{ABSTAIN_MESSAGE} The closest passages: {listed}" if numbers else ABSTAIN_MESSAGE
    answer.kind = "abstained"
    answer.sentences = []
    answer.sources = [Source.of(hits[n - 1], n, []) for n in numbers]
    answer.groundedness = None
    return answer
