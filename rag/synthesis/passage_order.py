"""The order the model reads its passages in: retrieval's ranking fused with how well each passage's best sentence
answers the question.

Why: the small local models answer from the first passage far more often than from any other. On SQuAD 2.0
(``bench/answers.py squad``, Dec 3) the answer was right in 40 of the 68 questions whose gold paragraph was passage
[1], and in 6 of the 24 where it came later. Retrieval scores whole chunks, while a question is usually answered by
one sentence; so each passage is also scored by its best sentence, with the same measure citation verification uses
(:mod:`rag.synthesis.verify`: the embedder's cosine with the question, clipped at 0, plus the share of the
question's content words in the sentence, halved), and the two rankings are fused by reciprocal rank fusion
(``settings.passage_order_weight`` for the sentence ranking, 1 for retrieval's; a tie goes to the sentence ranking).

Measured on the shared sets (the gold passage's share of first places among the top 5 hits when it is among them;
scratch script over ``RAG.retrieve``, Dec 3): SQuAD 2.0 (485 questions) 0.802 -> 0.868, HotpotQA (53) 0.830 ->
0.830, SciFact (233 claims) 0.742 -> 0.734. The sentence ranking alone gave 0.876 / 0.792 / 0.738, so retrieval's
ranking keeps a say.

This runs only for answers, not in :meth:`rag.RAG.retrieve`: it embeds every sentence of the passages (one batch,
~60 ms on 2 cores for 5 passages), which retrieval's ~20 ms budget cannot carry and an answer of seconds can.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rag.retrieval import reciprocal_rank_fusion
from rag.synthesis.verify import Embeds
from rag.synthesis.words import content_words, sentence_bounds
from rag.types import Hit


def best_sentence_scores(question: str, hits: Sequence[Hit], embedder: Embeds) -> np.ndarray:
    """Each hit's best sentence's score for ``question`` (0..1; 0 for a hit without a sentence)."""
    sentences: list[str] = []
    owners: list[int] = []
    for i, hit in enumerate(hits):
        for start, end in sentence_bounds(hit.text):
            sentences.append(hit.text[start:end])
            owners.append(i)
    best = np.zeros(len(hits))
    asked = content_words(question)
    if not sentences:
        return best
    vectors = embedder.embed([question, *sentences])
    cosine = np.clip(vectors[1:] @ vectors[0], 0.0, 1.0)
    for sentence, owner, cos in zip(sentences, owners, cosine.tolist()):
        lexical = len(asked & content_words(sentence)) / len(asked) if asked else 0.0
        best[owner] = max(best[owner], (cos + lexical) / 2)
    return best


def order_for_answer(question: str, hits: Sequence[Hit], embedder: Embeds, weight: float, rrf_k: int) -> list[Hit]:
    """``hits`` in the order the model should read them (retrieval's order where ``weight`` is 0)."""
    if weight <= 0 or len(hits) < 2:
        return list(hits)
    by_sentence = np.argsort(-best_sentence_scores(question, hits, embedder), kind="stable")
    sentence_rank = {int(i): rank for rank, i in enumerate(by_sentence)}
    fused = reciprocal_rank_fusion([np.arange(len(hits)), by_sentence], rrf_k, [1.0, weight])
    # At equal weights two passages that swap places in the two rankings tie; the sentence ranking, the finer
    # evidence, breaks the tie (otherwise [2] could never become [1]).
    order = sorted(range(len(hits)), key=lambda i: (-round(fused[i], 12), sentence_rank[i]))
    return [hits[i] for i in order]
