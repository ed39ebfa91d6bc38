"""``compact``: one call; passages numbered ``[1]..[n]`` in rank order, as many as fit.

The first passage that does not fit is truncated to the room left, the rest are dropped. The key sentences
(:mod:`~rag.synthesis.passage_order`) are quoted before the question.
"""

from __future__ import annotations

from collections.abc import Generator

from rag.budget import BudgetError, Passage
from rag.synthesis.prompts import COMPACT_TEMPLATE
from rag.synthesis.run import Run


def answer(run: Run, question: str, passages: list[Passage], streaming: bool) -> Generator[str, None, str]:
    """Yield the streamed pieces (when ``streaming``) and return the model's raw text."""
    prompt = run.budget(question, passages, template=COMPACT_TEMPLATE, overflow="truncate", evidence=True)
    if passages and not prompt.passages:
        raise BudgetError(
            f"the context window of {run.llm.context_window} tokens has no room for any source after the question "
            f"and {run.max_new_tokens} answer tokens; lower max_new_tokens or raise the window"
        )
    run.note_prompt(prompt)
    return (yield from run.final(prompt, streaming))
