"""When not to answer: retrieval found nothing relevant, or the model said the sources do not hold the answer.

Small models invent answers when the context is off, so with no hits, or when the best ``dense_score`` is below
``settings.abstain_threshold``, the answer is the fixed :data:`ABSTAIN_MESSAGE` and the model is not called.
Relevant-looking passages can still lack the answer; the prompt then asks the model to say so, and an answer that
cites nothing and says so (:func:`model_abstained`) is marked ``abstained`` too, so clients need not parse wording.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from rag.synthesis.citations import parse_citations
from rag.types import Answer, Hit, SynthesisMode, Usage

if TYPE_CHECKING:
    from rag.models.llm import LLM
    from rag.settings import Settings

ABSTAIN_MESSAGE = "The documents do not contain an answer to this question."

# "The documents do not contain/mention ...", "... is not mentioned in the sources", "I cannot answer ...".
_MODEL_ABSTAINS = re.compile(
    r"\b(?:do(?:es)?\s+not|don't|doesn't|did\s+not)\s+(?:contain|mention|provide|include|say|specify|state|answer)"
    r"|\bnot\s+(?:mentioned|provided|specified|stated|given|found|contained)\s+in\s+the\s+(?:sources|documents|context)"
    r"|\b(?:no|not\s+enough)\s+information\b|\bcannot\s+(?:be\s+)?(?:answer|determine)",
    re.IGNORECASE,
)


def should_abstain(hits: Sequence[Hit], settings: Settings) -> bool:
    """True when retrieval found nothing relevant: no hits, or the best dense cosine is below the threshold.

    Hits without a dense score (lexical-only retrieval) give no evidence either way, so they do not cause abstention.
    """
    if not hits:
        return True
    dense = [h.dense_score for h in hits if h.dense_score is not None]
    return bool(dense) and max(dense) < settings.abstain_threshold


def model_abstained(text: str) -> bool:
    """True when the model's answer cites nothing and says the sources do not contain the answer."""
    return not parse_citations(text) and bool(_MODEL_ABSTAINS.search(text))


def abstain(
    hits: Sequence[Hit], mode: str = SynthesisMode.COMPACT, settings: Settings | None = None, llm: LLM | None = None
) -> Answer:
    """The fixed abstention answer, given without calling the model (``settings``/``llm`` only fill in usage)."""
    window = settings.context_window or 0 if settings is not None else 0
    if llm is not None and not window:
        try:
            window = llm.context_window
        except (ValueError, RuntimeError):  # e.g. an HTTP backend that cannot be reached: abstaining needs no model
            window = 0
    return Answer(
        text=ABSTAIN_MESSAGE,
        sources=[],
        usage=Usage(
            context_window=window,
            max_new_tokens=settings.max_new_tokens if settings is not None else 0,
            chunks_dropped=len(hits),
        ),
        kind="abstained",
        confidence=0.0,
        mode=str(mode),
        hits=list(hits),
    )
