"""``refine``: walk all passages in batches that fit; each call after the first refines the answer so far.

The first call answers from batch 1 (the compact prompt); each later call gets the answer so far plus the next
batch. Only the last call streams. When the answer so far leaves no room for another passage, the walk stops there.
"""

from __future__ import annotations

import logging
from collections.abc import Generator

from rag.budget import BudgetError, Passage
from rag.synthesis.citations import clean_citations
from rag.synthesis.prompts import COMPACT_TEMPLATE, REFINE_TEMPLATE
from rag.synthesis.run import Run

log = logging.getLogger(__name__)


def answer(run: Run, question: str, passages: list[Passage], streaming: bool) -> Generator[str, None, str]:
    """Yield the streamed pieces (when ``streaming``) and return the model's raw text."""
    so_far: str | None = None
    start = 0
    while start < len(passages):
        try:
            if so_far is None:
                prompt = run.budget(question, passages, template=COMPACT_TEMPLATE, start=start)
            else:
                prompt = run.budget(question, passages, template=REFINE_TEMPLATE, start=start, existing_answer=so_far)
        except BudgetError:
            if so_far is None:
                raise
            log.warning("refine: no room for more passages next to the answer so far; stopping at [%d]", start + 1)
            break
        run.note_prompt(prompt)
        start = prompt.next_index
        if start >= len(passages):
            return (yield from run.final(prompt, streaming))
        text = clean_citations(run.call(prompt).text, set(run.shown)).strip()
        so_far = text or so_far or ""  # a small model may return nothing: keep what we had
    # Stopped early: the answer so far is final and was not streamed.
    text = clean_citations(so_far or "", set(run.shown))
    if streaming and text:
        yield text
    return text
