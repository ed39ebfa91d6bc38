"""The order the model reads its passages in: how well each passage's best sentence answers the question, with
the passage's own similarity to it.

Why: the small local models answer from the first passage far more often than from any other. On SQuAD 2.0
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

This runs only for answers, not in :meth:`rag.RAG.retrieve`: it embeds every sentence of the passages (one batch,
60-90 ms on 2 cores for 5 passages), which retrieval's ~20 ms budget cannot carry and an answer of seconds can.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rag.synthesis.verify import Embeds, best_per_passage, passage_sentences, support_scores
from rag.types import Hit


def best_sentence_scores(question: str, hits: Sequence[Hit], embedder: Embeds) -> np.ndarray:
    """Each hit's best sentence's score for ``question`` (0..1; 0 for a hit without a sentence)."""
    best = np.zeros(len(hits))
    candidates = passage_sentences(hits, range(1, len(hits) + 1))
    if candidates:
        scores = support_scores([""], question, candidates, embedder)[0]
        for n, (score, _) in best_per_passage(scores, candidates).items():
            best[n - 1] = score
    return best


def order_for_answer(question: str, hits: Sequence[Hit], embedder: Embeds, dense_weight: float) -> list[Hit]:
    """``hits`` in the order the model should read them: best sentence's score plus ``dense_weight`` times the
    passage's dense cosine, highest first (a hit without a dense score counts 0 there; ties keep retrieval's order)."""
    if len(hits) < 2:
        return list(hits)
    scores = best_sentence_scores(question, hits, embedder)
    scores += dense_weight * np.array([h.dense_score or 0.0 for h in hits])
    return [hits[i] for i in np.argsort(-scores, kind="stable")]
