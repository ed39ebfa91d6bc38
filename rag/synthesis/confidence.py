"""One calibrated confidence per answer: the probability that the model's answer is right, from what is known before
and after generation, at no extra model call.

The signals, each already computed on the way to an answer:
- ``retrieval``: the best dense cosine of the passages shown (are they about the question at all?);
- ``question_support``: how well the best sentence of those passages supports the question, by the verifier's own
  scorer (:func:`rag.synthesis.verify.support_scores`, the question alone): does some sentence say what was asked?
- ``answer_in_best_sentence``: the share of what the answer adds to the question (its content words that are not the
  question's) that the best such sentence that is a statement (not a heading, a table row or a question) says too:
  did the model answer from it?
- ``token_logprob``: the mean log probability of the answer's tokens under the model, where the runtime gives them
  (llama.cpp: :class:`rag.models.llm.Generation.token_logprobs`); a model unsure of its words is often inventing;
- ``abstention_unlikely``: minus the mean log probability per token the model gave "The documents do not contain"
  as its answer's start instead (:data:`rag.synthesis.prompts.ABSTENTION_START`, scored in the same call from the
  cache, about one decode step): a model that nearly said the answer is not there;
- ``groundedness``: the share of the answer's sentences a cited passage supports (:mod:`rag.synthesis.verify`);
- ``claim_support``: the weakest checked sentence's best support among the passages.

They are combined by logistic regression (:class:`Calibration`), fitted on the SQuAD 2.0 questions of two of its
articles and reported on the others (``python bench/calibrate.py``, which also draws the reliability diagram in
``docs/querying.md``). Runtimes without token probabilities (transformers, an OpenAI-compatible server) use the
weights fitted without them. Measured alone (AUC for "the answer contains a reference", 305 answers), each signal is
weak: 0.54-0.60; the answer's share in the best sentence is the strongest (0.68). Together, held out: AUC 0.74.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Signals:
    """The evidence behind one answer (see the module docstring); the two model probabilities are None where the
    runtime gives none."""

    retrieval: float
    question_support: float
    answer_in_best_sentence: float
    groundedness: float
    claim_support: float
    token_logprob: float | None = None
    abstention_unlikely: float | None = None

    def to_dict(self) -> dict[str, float | None]:
        return {k: (None if v is None else round(v, 4)) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class Calibration:
    """A fitted logistic regression over :class:`Signals`: ``sigmoid(intercept + sum(weight * signal))``."""

    intercept: float
    weights: Mapping[str, float]

    def __call__(self, signals: Signals) -> float:
        values = signals.to_dict()
        z = self.intercept + sum(w * float(values[name] or 0.0) for name, w in self.weights.items())
        return 1.0 / (1.0 + math.exp(-z))


# Fitted by `python bench/calibrate.py` on `python bench/answers.py squad --answerable 200 --unanswerable 120` (Dec 7,
# llama.cpp, the bundled Qwen 0.5B; 139 calibration answers, 167 held out). Signals whose weight came out negative or
# zero were dropped (token_logprob, question_support, claim_support), so confidence only rises with the evidence.
# Held out: ECE 0.069, AUC 0.736 with the model's probabilities; ECE 0.034, AUC 0.725 without.
WITH_LOGPROBS = Calibration(
    intercept=-3.5855,
    weights={"retrieval": 0.5416, "answer_in_best_sentence": 1.3392, "groundedness": 0.3678,
             "abstention_unlikely": 0.6156},
)
WITHOUT_LOGPROBS = Calibration(
    intercept=-1.7818,
    weights={"retrieval": 0.3192, "answer_in_best_sentence": 1.3476, "groundedness": 0.2967},
)


def confidence(signals: Signals) -> float:
    """The calibrated probability that the answer these signals describe is right (0..1)."""
    calibration = WITHOUT_LOGPROBS if signals.abstention_unlikely is None else WITH_LOGPROBS
    return round(calibration(signals), 4)
