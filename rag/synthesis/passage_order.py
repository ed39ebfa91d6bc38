"""What the model reads first: the passages in the order of how well each one's best sentence answers the question
(with the passage's own similarity to it), and the few sentences that answer it best, quoted before the question.

Why the order: the small local models answer from the first passage far more often than from any other. On SQuAD 2.0
(``bench/answers.py squad``, Dec 3) the answer was right in 40 of the 68 questions whose gold paragraph was passage
[1], and in 6 of the 24 where it came later. Retrieval scores whole chunks, while a question is usually answered by
one sentence; so each passage is scored by its best sentence, with the measure citation verification uses
(:mod:`rag.synthesis.verify`: the embedder's cosine with the question, clipped at 0, plus the share of the
question's content words in the sentence, halved), plus ``settings.passage_order_dense_weight`` times the whole
passage's dense cosine (the passage's topic still counts), and the passages are read best first.

Measured on the shared sets (the gold passage's share of first places among the top 5 hits when it is among them;
scratch script over ``RAG.retrieve``, Dec 3), retrieval's order / the best sentence alone / with half the passage's
cosine (the default) / reciprocal rank fusion of retrieval's and the sentence ranking: SQuAD 2.0 (485 questions)
0.802 / 0.876 / **0.891** / 0.868; HotpotQA (53) 0.830 / 0.792 / **0.830** / 0.830; SciFact (233 claims) 0.742 /
0.738 / **0.760** / 0.734. The weight was chosen on these sets (0.25 / 0.5 / 1: SQuAD 0.885 / 0.891 / 0.887,
SciFact 0.751 / 0.760 / 0.773, HotpotQA 0.830 / 0.830 / 0.811).

Why the key sentences: even with the right passage first, the 0.5B model answered wrongly in 35 of 76 SQuAD
questions: it said the documents do not say, wrote the passage's label ("[1] Normans_21.txt"), or copied whole
passages. Yet the best-scoring sentence of the five passages contains a reference answer for 388 of 500 SQuAD
questions, and one of the best two for 433 (scratch script, Dec 3). So the ``settings.key_sentences`` best sentences
are quoted again, with their passage numbers, right before the question (:func:`rag.synthesis.prompts.quote_key_sentences`).
Measured (``bench/answers.py squad --unanswerable 0``, 100 answerable questions, Dec 6, 2-core AMD EPYC, greedy),
``RAG_KEY_SENTENCES=0`` / 2: contains a reference answer 0.46 / 0.56, gold paragraph cited (of those retrieved)
0.783 / 0.824, p50 answer time 4.13 / 4.51 s; on the held-out questions (``--shift 0.5``, chosen on nothing) 0.51 /
0.59, 0.835 / 0.859, 4.58 / 4.63 s (the quote adds ~79 prompt tokens). The heading is "Key sentences:": a longer
one ("The sentences of the sources most likely to answer it:") did as well (0.61 / 0.813) but 7 of 96 answers
repeated it. Quoting 1 / 2 / 3 sentences (sample 1): contains 0.52 / 0.56 / 0.56, gold cited 0.793 /
0.824 / 0.815, groundedness 0.904 / 0.932 / 0.906; hence 2.

Why passages may be left out (``settings.passage_min_relative_support``, off by default): a passage whose best
sentence scores far under the best passage's is a distractor for a small model and costs prompt tokens. Measured
at 0.6 (``bench/answers.py squad --unanswerable 0 [--shift 0.5]``, Dec 6): 3.3 passages shown instead of 5, p50
prompt 902 -> 630 tokens, contains a reference answer 0.56 -> 0.59 / 0.59 -> 0.57, gold cited 0.824 -> 0.826 /
0.859 -> 0.860: no better answers. Offline over ``RAG.retrieve``'s top 5, 0.6 / 0.7 / 0.8 keep every retrieved gold
passage for 0.996 / 0.992 / 0.977 of 485 SQuAD questions but only 0.962 / 0.906 / 0.660 of 53 HotpotQA ones (the
second hop's passage scores low against the question), hence off.

This runs only for answers, not in :meth:`rag.RAG.retrieve`: it embeds every sentence of the passages (one batch,
60-90 ms on 2 cores for 5 passages), which retrieval's ~20 ms budget cannot carry and an answer of seconds can.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rag.synthesis.verify import Candidate, Embeds, best_per_passage, passage_sentences, support_scores
from rag.types import Hit


@dataclass(frozen=True)
class KeySentence:
    """A sentence of passage ``[number]`` (numbered in reading order) that answers the question well; ``start`` and
    ``end`` place it in the passage's text."""

    number: int
    text: str
    score: float
    start: int = 0
    end: int = 0


@dataclass
class Reading:
    """The passages in the order the model reads them, and the sentences quoted again before the question."""

    hits: list[Hit]
    key_sentences: list[KeySentence]
    shown: int  # the model reads hits[:shown]; the rest scored too far below the best passage


def _sentence_scores(question: str, hits: Sequence[Hit], embedder: Embeds) -> tuple[list[Candidate], np.ndarray]:
    """Every sentence of ``hits`` (``[n]`` is ``hits[n - 1]``) and its score for ``question`` (0..1)."""
    candidates = passage_sentences(hits, range(1, len(hits) + 1))
    if not candidates:
        return [], np.zeros(0)
    return candidates, support_scores([""], question, candidates, embedder)[0]


def _passage_best(candidates: list[Candidate], scores: np.ndarray, count: int) -> np.ndarray:
    """Each of the ``count`` passages' best sentence score (0 for a passage without a sentence)."""
    best = np.zeros(count)
    for n, (score, _) in best_per_passage(scores, candidates).items():
        best[n - 1] = score
    return best


def best_sentence_scores(question: str, hits: Sequence[Hit], embedder: Embeds) -> np.ndarray:
    """Each hit's best sentence's score for ``question`` (0..1; 0 for a hit without a sentence)."""
    return _passage_best(*_sentence_scores(question, hits, embedder), len(hits))


def order_for_answer(
    question: str, hits: Sequence[Hit], embedder: Embeds, dense_weight: float, *, reorder: bool = True,
    key_sentences: int = 0, min_relative_support: float = 0.0,
) -> Reading:
    """``hits`` in the order the model should read them (with ``reorder``: best sentence's score plus
    ``dense_weight`` times the passage's dense cosine, highest first; a hit without a dense score counts 0 there;
    ties keep retrieval's order), and the ``key_sentences`` best sentences, best first, numbered in that order.

    A passage whose best sentence scores under ``min_relative_support`` times the best passage's is not shown
    (:attr:`Reading.shown`): it goes after the shown ones, in the same order, and gives no key sentence."""
    pruning = min_relative_support > 0 and len(hits) > 1
    if not hits or (not key_sentences and not pruning and (not reorder or len(hits) < 2)):
        return Reading(list(hits), [], len(hits))
    candidates, scores = _sentence_scores(question, hits, embedder)
    sentence_best = _passage_best(candidates, scores, len(hits))
    rank = sentence_best + dense_weight * np.array([h.dense_score or 0.0 for h in hits]) if reorder else np.zeros(len(hits))
    kept = sentence_best >= min_relative_support * sentence_best.max()
    order = np.lexsort((np.arange(len(hits)), -rank, ~kept))  # shown first, then by rank, ties in retrieval's order
    number = {int(old) + 1: new + 1 for new, old in enumerate(order)}
    quoted = [
        KeySentence(number[c.number], c.text.strip(), round(float(scores[i]), 4), c.start, c.end)
        for i in np.argsort(-scores, kind="stable") if kept[(c := candidates[i]).number - 1]
    ][:key_sentences]
    return Reading([hits[i] for i in order], quoted, int(kept.sum()))
