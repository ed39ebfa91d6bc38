"""``tree_summarize``: map-reduce. Map: one call per batch of passages; reduce: combine the partial answers.

Partial answers are combined in batches that fit, level by level, until one call holds them all; that call streams.
Partials keep their own ``[n]`` citations, so the reduce prompt lists them unnumbered (:func:`rag.budget.plain`).
"""

from __future__ import annotations

import logging
from collections.abc import Generator

from rag.budget import Passage, plain
from rag.synthesis.abstention import ABSTAIN_MESSAGE
from rag.synthesis.citations import clean_citations
from rag.synthesis.prompts import COMPACT_TEMPLATE, REDUCE_TEMPLATE
from rag.synthesis.run import Run

log = logging.getLogger(__name__)


def answer(run: Run, question: str, passages: list[Passage], streaming: bool) -> Generator[str, None, str]:
    """Yield the streamed pieces (when ``streaming``) and return the model's raw text."""
    batches = run.pack(question, passages, template=COMPACT_TEMPLATE)
    for prompt in batches:
        run.note_prompt(prompt)
    if len(batches) == 1:
        return (yield from run.final(batches[0], streaming))
    valid = set(run.shown)
    partials = [clean_citations(run.call(prompt).text, valid).strip() for prompt in batches]
    level = 1
    while True:
        items = [Passage(number=i + 1, text=t) for i, t in enumerate(p for p in partials if p)] or [
            Passage(number=1, text=ABSTAIN_MESSAGE)
        ]
        groups = run.pack(question, items, template=REDUCE_TEMPLATE, formatter=plain)
        if len(groups) == 1:
            return (yield from run.final(groups[0], streaming))
        if len(groups) >= len(items):  # no progress: each partial fills a call; cut them into one final call
            log.warning("tree_summarize: partial answers too long to combine; truncating them into one call")
            final = run.budget(question, items, template=REDUCE_TEMPLATE, overflow="truncate", formatter=plain)
            return (yield from run.final(final, streaming))
        log.debug("tree_summarize: level %d reduces %d partial answers in %d calls", level, len(items), len(groups))
        partials = [clean_citations(run.call(prompt).text, valid).strip() for prompt in groups]
        level += 1
