"""Context-window budgeting: fit ranked passages into one request so that it never exceeds the window.

The guarantee is exact: ``llm.count_messages(result.messages) + max_new_tokens <= llm.context_window``, counted with
the generating model's own tokenizer on the fully rendered chat prompt. Passage sizes are first estimated piece by
piece (fast), then the real rendered prompt is counted and the last passage shrunk or dropped until it fits, because
a chat template and the joins between pieces can merge or split tokens at their boundaries.

Policy: the question and the prompt scaffolding are never cut (if they alone do not fit, :class:`BudgetError`);
passages enter in rank order while they fit; the first one that does not fit is truncated to the room left when that
room is useful (``min_truncated_tokens``), otherwise dropped with all later ones (``overflow="truncate"``, one-call
modes) or left for the next call (``overflow="stop"``, the batch walks of refine / tree_summarize). Earlier turns of
a conversation come last: as many of the most recent as the room left after the passages holds (:func:`fit_history`),
whole turns, the oldest dropped first, counted on the rendered prompt like everything else, and at most
:data:`HISTORY_MAX_TOKENS` of them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from rag.models.llm import Message

log = logging.getLogger(__name__)

MIN_TRUNCATED_TOKENS = 32
HISTORY_MAX_TOKENS = 1024
"""Tokens of earlier turns one request carries at most (issue 32). Without a bound a long conversation filled the
window: 499 messages took 67.7 s to answer instead of 2.5 s, nearly all of it the prefill of ~8k tokens of history
on a CPU. The turns a follow-up leans on are the last few; 1,024 tokens hold about five exchanges."""


class TokenBudgetModel(Protocol):
    """What budgeting needs of a model: its window and its own token counts (any LLM, or HFTokenCounter)."""

    context_window: int

    def count_tokens(self, text: str) -> int: ...

    def truncate(self, text: str, max_tokens: int) -> str: ...

    def count_messages(self, messages: Sequence[Message]) -> int: ...


class BudgetError(ValueError):
    """The request cannot be built within the window (question + scaffolding too long, or no room for a passage)."""


@dataclass(frozen=True)
class Passage:
    """A passage to place: ``number`` is its ``[n]`` label, ``label`` (e.g. the document) is never truncated."""

    number: int
    text: str
    label: str = ""


@dataclass
class PlacedPassage:
    number: int
    index: int  # position in the input sequence
    text: str  # as placed; a prefix of the original when truncated
    truncated: bool


@dataclass
class BudgetedPrompt:
    messages: list[Message]
    passages: list[PlacedPassage]
    prompt_tokens: int  # real count of the rendered messages
    max_new_tokens: int
    context_window: int
    next_index: int  # first input passage not placed; == len(input) when all were placed
    dropped: int = 0  # passages not placed (with overflow="stop" they remain for the next call)
    truncated: int = 0
    scaffold_tokens: int = 0  # rendered prompt without any passage
    shrinks: int = 0  # times the real rendered count forced a cut after the estimate (template boundary effects)
    history: int = 0  # earlier chat messages carried (the most recent ones)
    history_dropped: int = 0  # earlier chat messages left out (the oldest ones)


def numbered(passage: Passage, text: str) -> str:
    """``[n] label\\ntext``: the label tells the model (and a reader) where the passage comes from."""
    return f"[{passage.number}] {passage.label}\n{text}" if passage.label else f"[{passage.number}] {text}"


def plain(passage: Passage, text: str) -> str:
    """Unnumbered item (e.g. partial answers in tree_summarize's reduce step, which carry their own [n])."""
    return f"- {text}"


def build_messages(system: str, user: str, history: Sequence[Message] = ()) -> list[Message]:
    """System prompt, earlier turns of the conversation, then this request as the last user message."""
    messages: list[Message] = [{"role": "system", "content": system}] if system else []
    messages.extend(history)
    messages.append({"role": "user", "content": user})
    return messages


def fit_history(
    llm: TokenBudgetModel,
    render: Callable[[Sequence[Message]], list[Message]],
    history: Sequence[Message],
    max_new_tokens: int,
) -> tuple[list[Message], int, int]:
    """The prompt ``render(recent)`` with the longest suffix of ``history`` that still fits the window, carrying at
    most :data:`HISTORY_MAX_TOKENS` tokens more than ``render([])``.

    Cut only where a user message begins, so whole turns are dropped, the oldest first, and the roles keep
    alternating as chat templates expect. ``render([])`` must fit already (the caller budgeted it). The history is
    first cut to the turns whose own tokens fit that bound (:func:`recent_turns`), so a conversation of any length
    costs what its last turns cost; the count grows with the suffix, so a binary search over the turn starts finds
    the longest in a few real counts. Returns (messages, their tokens, history messages kept).
    """
    best = render([])
    best_tokens = llm.count_messages(best)
    limit = min(llm.context_window - max_new_tokens, best_tokens + HISTORY_MAX_TOKENS)
    recent = recent_turns(llm, history, limit - best_tokens)
    cuts = sorted({i for i, m in enumerate(recent) if m.get("role") == "user"} | {len(recent)})
    lo, hi = 0, len(cuts) - 1  # cuts[hi] fits (it keeps no history); find the smallest index that fits
    while lo < hi:
        mid = (lo + hi) // 2
        messages = render(recent[cuts[mid]:])
        tokens = llm.count_messages(messages)
        if tokens <= limit:
            best, best_tokens, hi = messages, tokens, mid
        else:
            lo = mid + 1
    return best, best_tokens, len(recent) - cuts[hi]


def recent_turns(
    llm: TokenBudgetModel, history: Sequence[Message], max_tokens: int, per_message: int | None = None
) -> Sequence[Message]:
    """The last whole turns of ``history`` (starting at a user message) whose contents add up to at most
    ``max_tokens`` (each counted as at most ``per_message`` when given: the caller truncates them to that). Walks
    from the newest message and stops past the bound, so it counts only what may be shown, whatever the length."""
    total, start = 0, len(history)
    for i in range(len(history) - 1, -1, -1):
        tokens = llm.count_tokens(history[i].get("content", ""))
        total += tokens if per_message is None else min(tokens, per_message)
        if total > max_tokens:
            break
        if history[i].get("role") == "user":
            start = i
    return history[start:]


def budget_prompt(
    llm: TokenBudgetModel,
    *,
    system: str,
    template: str,
    fields: Mapping[str, str],
    passages: Sequence[Passage],
    max_new_tokens: int,
    start: int = 0,
    overflow: Literal["truncate", "stop"] = "truncate",
    formatter: Callable[[Passage, str], str] = numbered,
    separator: str = "\n\n",
    min_truncated_tokens: int = MIN_TRUNCATED_TOKENS,
    history: Sequence[Message] = (),
) -> BudgetedPrompt:
    """Place ``passages[start:]`` into ``template`` (``{context}`` + ``fields``) within the window, then as much of
    ``history`` (earlier chat messages, oldest first) as the room left holds.

    ``fields`` (question, existing answer …) are never truncated. Raises :class:`BudgetError` when they do not fit
    with ``max_new_tokens``, or (``overflow="stop"``) when not even a truncated first passage fits.
    """
    window = llm.context_window
    if max_new_tokens < 1:
        raise BudgetError("max_new_tokens must be at least 1")

    def render(placed: list[list], recent: Sequence[Message] = ()) -> list[Message]:
        context = separator.join(formatter(passages[i], text) for i, text, _ in placed)
        return build_messages(system, template.format(context=context, **fields), recent)

    scaffold = llm.count_messages(render([]))
    if scaffold + max_new_tokens > window:
        raise BudgetError(
            f"the question and prompt need {scaffold} tokens + {max_new_tokens} for the answer, more than the "
            f"context window of {window} tokens; shorten the question or lower max_new_tokens"
        )

    # 1. Estimate: piece by piece, in rank order. Entries are [input index, text as placed, truncated?].
    room = window - max_new_tokens - scaffold
    placed: list[list] = []
    for index in range(start, len(passages)):
        passage = passages[index]
        cost = llm.count_tokens((separator if placed else "") + formatter(passage, passage.text))
        if cost <= room:
            placed.append([index, passage.text, False])
            room -= cost
            continue
        # The first passage that does not fit: truncate it to the room left, if that is worth it.
        if overflow == "truncate" or not placed:
            overhead = llm.count_tokens((separator if placed else "") + formatter(passage, ""))
            keep = room - overhead - 1  # one token of slack for the join
            if keep >= min_truncated_tokens:
                text = llm.truncate(passage.text, keep)
                if text.strip():
                    placed.append([index, text, True])
        break

    # 2. Verify with the real rendered count; shrink the last passage (or drop it) until it fits exactly.
    messages = render(placed)
    prompt_tokens = llm.count_messages(messages)
    shrinks = 0
    while prompt_tokens + max_new_tokens > window:
        shrinks += 1
        excess = prompt_tokens + max_new_tokens - window
        last = placed[-1]  # non-empty: with no passages the scaffold fits (checked above)
        keep = llm.count_tokens(last[1]) - excess - 1
        # "stop" leaves a whole passage for the next call rather than cutting it, unless it is the only one.
        may_cut = overflow == "truncate" or last[2] or len(placed) == 1
        shorter = llm.truncate(last[1], keep) if may_cut and keep >= min_truncated_tokens else ""
        if shorter.strip() and len(shorter) < len(last[1]):
            last[1], last[2] = shorter, True
            log.debug("budget: shrank passage [%d] by %d tokens after rendering", passages[last[0]].number, excess)
        else:
            placed.pop()
        messages = render(placed)
        prompt_tokens = llm.count_messages(messages)

    if overflow == "stop" and not placed and start < len(passages):
        raise BudgetError(
            f"the context window of {window} tokens leaves no useful room for a passage "
            f"(needs {min_truncated_tokens}) after the prompt and {max_new_tokens} answer tokens"
        )
    kept = 0
    if history:
        messages, prompt_tokens, kept = fit_history(llm, lambda recent: render(placed, recent), history, max_new_tokens)

    result_passages = [
        PlacedPassage(number=passages[i].number, index=i, text=text, truncated=flag) for i, text, flag in placed
    ]
    return BudgetedPrompt(
        messages=messages,
        passages=result_passages,
        prompt_tokens=prompt_tokens,
        max_new_tokens=max_new_tokens,
        context_window=window,
        next_index=start + len(placed),
        dropped=len(passages) - start - len(placed),
        truncated=sum(1 for *_, flag in placed if flag),
        scaffold_tokens=scaffold,
        shrinks=shrinks,
        history=kept,
        history_dropped=len(history) - kept,
    )
