"""Response synthesis: retrieved hits → a grounded, cited :class:`~rag.types.Answer`.

Modes (every LLM call is budgeted by :mod:`rag.budget`, so none exceeds the window):

- ``compact``: one call; passages numbered ``[1]..[n]`` in rank order, as many as fit (the first that does not fit
  is truncated, the rest dropped).
- ``refine``: walk all passages in batches that fit; the first call answers from batch 1, each later call gets the
  answer so far plus the next batch and refines it.
- ``tree_summarize``: map: one call per batch of passages; reduce: combine the partial answers in batches that fit,
  level by level, until one call holds them all.

Citations: the model is asked to cite ``[n]``; ``[1, 2]`` and ``[1][2]`` are understood. A cited number that names
no passage shown to the model is removed from the text. ``Answer.sources`` lists the cited passages; when the model
cites nothing (small models often do not) it lists every passage the model was shown, so provenance is never lost.

Abstention: with no hits, or when the best ``dense_score`` is below ``settings.abstain_threshold``, the answer is the
fixed :data:`ABSTAIN_MESSAGE` and the model is not called (small models invent answers when the context is off).
Relevant-looking passages can still lack the answer; the prompt then asks the model to say so, and an answer that
cites nothing and says the sources do not contain it (:func:`model_abstained`) is marked ``abstained`` too, with no
sources, so clients need not parse the wording.

Streaming (:func:`stream_answer`) yields text pieces and, last, the :class:`Answer`. In refine / tree_summarize only
the final call streams. Invalid citations are filtered out of the stream as well, so the joined pieces equal
``Answer.text`` up to surrounding whitespace.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import TYPE_CHECKING, Literal

from rag.budget import BudgetedPrompt, BudgetError, Passage, budget_prompt, plain
from rag.models.llm import LLM, Generation
from rag.types import Answer, Hit, Source, Usage

if TYPE_CHECKING:
    from rag.settings import Settings

log = logging.getLogger(__name__)

Mode = Literal["compact", "refine", "tree_summarize"]
MODES: tuple[str, ...] = ("compact", "refine", "tree_summarize")

ABSTAIN_MESSAGE = "The documents do not contain an answer to this question."

# Wording chosen on SQuAD questions with the bundled Qwen 0.5B: asking for "a short, direct answer, then the source
# number" gave answers with citations; "cite after each statement" made it answer with the citation alone ("[1]").
SYSTEM_PROMPT = (
    "You are a helpful assistant. Answer the question using only the information in the sources. "
    "Write a complete sentence that answers the question, then give the number of the source you used in square "
    'brackets, for example: "The bridge opened in 1932 [2]." '
    "If the sources do not contain the answer, say that the documents do not contain it."
)

COMPACT_TEMPLATE = (
    "Sources:\n\n{context}\n\n"
    "Question: {question}\n\n"
    "Give a short, direct answer to the question in one sentence, then the number of the source it comes from, "
    "like [1]."
)

REFINE_TEMPLATE = (
    "Question: {question}\n\n"
    "Existing answer: {existing_answer}\n\n"
    "More sources:\n\n{context}\n\n"
    "If the new sources give a better answer to the question, write it as a short, direct answer with the source "
    "numbers like [1]; otherwise repeat the existing answer unchanged."
)

REDUCE_TEMPLATE = (
    "Partial answers to the question, with their source numbers:\n\n{context}\n\n"
    "Question: {question}\n\n"
    "Combine them into one short, direct answer to the question. Keep the source numbers like [1] and add nothing "
    "that is not in them."
)

# [3] or [1, 2] (with any spacing); leading whitespace belongs to the match so removing one leaves no gap.
_CITATION = re.compile(r"(\s*)\[(\d+(?:\s*,\s*\d+)*)\]")
# A tail that may still become a citation when more text streams in: whitespace, then maybe "[1, 2".
_OPEN_TAIL = re.compile(r"\s*(?:\[[\d,\s]*)?$")


# --- citations ---------------------------------------------------------------------------------------
def parse_citations(text: str) -> list[int]:
    """Numbers cited in ``text`` in order of first appearance (``[1]``, ``[1, 2]``, ``[1][2]``)."""
    seen: dict[int, None] = {}
    for match in _CITATION.finditer(text):
        for number in match.group(2).split(","):
            seen.setdefault(int(number), None)
    return list(seen)


def clean_citations(text: str, valid: set[int]) -> str:
    """Remove cited numbers that point at no passage; drop a bracket (and the space before it) left empty."""

    def fix(match: re.Match[str]) -> str:
        numbers = [int(n) for n in match.group(2).split(",")]
        keep = [n for n in numbers if n in valid]
        if len(keep) == len(numbers):
            return match.group(0)
        if not keep:
            return ""
        return f"{match.group(1)}[{', '.join(str(n) for n in keep)}]"

    return _CITATION.sub(fix, text)


class CitationFilter:
    """Applies :func:`clean_citations` to a stream: holds back a tail that might still become a citation."""

    def __init__(self, valid: set[int]) -> None:
        self.valid = valid
        self._pending = ""

    def feed(self, piece: str) -> str:
        text = self._pending + piece
        tail = _OPEN_TAIL.search(text)
        cut = tail.start() if tail else len(text)
        self._pending = text[cut:]
        return clean_citations(text[:cut], self.valid)

    def flush(self) -> str:
        text, self._pending = self._pending, ""
        return clean_citations(text, self.valid)


# --- abstention -------------------------------------------------------------------------------------
def should_abstain(hits: Sequence[Hit], settings: Settings) -> bool:
    """True when retrieval found nothing relevant: no hits, or the best dense cosine is below the threshold.

    Hits without a dense score (lexical-only retrieval) give no evidence either way, so they do not cause abstention.
    """
    if not hits:
        return True
    dense = [h.dense_score for h in hits if h.dense_score is not None]
    return bool(dense) and max(dense) < settings.abstain_threshold


# "The documents do not contain/mention ...", "... is not mentioned in the sources", "I cannot answer ...".
_MODEL_ABSTAINS = re.compile(
    r"\b(?:do(?:es)?\s+not|don't|doesn't|did\s+not)\s+(?:contain|mention|provide|include|say|specify|state|answer)"
    r"|\bnot\s+(?:mentioned|provided|specified|stated|given|found|contained)\s+in\s+the\s+(?:sources|documents|context)"
    r"|\b(?:no|not\s+enough)\s+information\b|\bcannot\s+(?:be\s+)?(?:answer|determine)",
    re.IGNORECASE,
)


def model_abstained(text: str) -> bool:
    """True when the model's answer cites nothing and says the sources do not contain the answer."""
    return not parse_citations(text) and bool(_MODEL_ABSTAINS.search(text))


def abstain(
    hits: Sequence[Hit], mode: str = "compact", settings: Settings | None = None, llm: LLM | None = None
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
        abstained=True,
        mode=mode,
        hits=list(hits),
    )


# --- the synthesis run --------------------------------------------------------------------------------
def hit_label(hit: Hit) -> str:
    """The short name shown beside a passage's number: title, else the file name."""
    name = hit.title or PurePath(hit.document).name or hit.document
    return f"summary of {name}" if hit.kind == "summary" else name


def hits_to_passages(hits: Sequence[Hit]) -> list[Passage]:
    return [Passage(number=i + 1, text=h.text, label=hit_label(h)) for i, h in enumerate(hits)]


@dataclass
class _Run:
    """Accounting across the calls of one answer."""

    llm: LLM
    settings: Settings
    max_new_tokens: int
    calls: int = 0
    max_prompt: int = 0
    completion: int = 0
    shown: dict[int, bool] = field(default_factory=dict)  # passage number → truncated in any call

    def note_prompt(self, prompt: BudgetedPrompt) -> None:
        """Remember which sources the model saw (citations are valid only for these) and which were cut."""
        for p in prompt.passages:
            self.shown[p.number] = self.shown.get(p.number, False) or p.truncated

    def call(self, prompt: BudgetedPrompt) -> Generation:
        gen = self.llm.generate(
            prompt.messages,
            max_new_tokens=self.max_new_tokens,
            temperature=self.settings.temperature,
            top_p=self.settings.top_p,
        )
        self.record(gen)
        return gen

    def record(self, gen: Generation) -> None:
        self.calls += 1
        self.max_prompt = max(self.max_prompt, gen.prompt_tokens)
        self.completion += gen.completion_tokens


def _budget(
    run: _Run,
    question: str,
    passages: Sequence[Passage],
    *,
    template: str,
    start: int = 0,
    overflow: Literal["truncate", "stop"] = "stop",
    existing_answer: str | None = None,
    formatter=None,
) -> BudgetedPrompt:
    fields = {"question": question}
    if existing_answer is not None:
        fields["existing_answer"] = existing_answer
    kwargs = {"formatter": formatter} if formatter is not None else {}
    return budget_prompt(
        run.llm,
        system=SYSTEM_PROMPT,
        template=template,
        fields=fields,
        passages=passages,
        max_new_tokens=run.max_new_tokens,
        start=start,
        overflow=overflow,
        **kwargs,
    )


def _pack(
    run: _Run, question: str, passages: Sequence[Passage], *, template: str, formatter=None
) -> list[BudgetedPrompt]:
    """Split all passages into consecutive batches, each one budgeted request."""
    batches: list[BudgetedPrompt] = []
    start = 0
    while start < len(passages):
        prompt = _budget(run, question, passages, template=template, start=start, formatter=formatter)
        batches.append(prompt)
        start = prompt.next_index
    return batches


def _final(run: _Run, prompt: BudgetedPrompt, streaming: bool) -> Generator[str, None, str]:
    """The last call of an answer: streamed piece by piece when asked, citations filtered against shown passages."""
    valid = set(run.shown)
    if not streaming:
        return run.call(prompt).text
    stream = run.llm.stream(
        prompt.messages,
        max_new_tokens=run.max_new_tokens,
        temperature=run.settings.temperature,
        top_p=run.settings.top_p,
    )
    citations = CitationFilter(valid)
    try:
        for piece in stream:
            out = citations.feed(piece)
            if out:
                yield out
    finally:
        stream.close()
    tail = citations.flush()
    if tail.strip():
        yield tail
    assert stream.generation is not None
    run.record(stream.generation)
    return stream.generation.text


def _compact(run: _Run, question: str, passages: list[Passage], streaming: bool) -> Generator[str, None, str]:
    prompt = _budget(run, question, passages, template=COMPACT_TEMPLATE, overflow="truncate")
    if passages and not prompt.passages:
        raise BudgetError(
            f"the context window of {run.llm.context_window} tokens has no room for any source after the question "
            f"and {run.max_new_tokens} answer tokens; lower max_new_tokens or raise the window"
        )
    run.note_prompt(prompt)
    return (yield from _final(run, prompt, streaming))


def _refine(run: _Run, question: str, passages: list[Passage], streaming: bool) -> Generator[str, None, str]:
    answer: str | None = None
    start = 0
    while start < len(passages):
        try:
            if answer is None:
                prompt = _budget(run, question, passages, template=COMPACT_TEMPLATE, start=start)
            else:
                prompt = _budget(run, question, passages, template=REFINE_TEMPLATE, start=start, existing_answer=answer)
        except BudgetError:
            if answer is None:
                raise
            log.warning("refine: no room for more passages next to the answer so far; stopping at [%d]", start + 1)
            break
        run.note_prompt(prompt)
        start = prompt.next_index
        if start >= len(passages):
            return (yield from _final(run, prompt, streaming))
        text = clean_citations(run.call(prompt).text, set(run.shown)).strip()
        answer = text or answer or ""  # a small model may return nothing: keep what we had
    # Stopped early: the answer so far is final and was not streamed.
    text = clean_citations(answer or "", set(run.shown))
    if streaming and text:
        yield text
    return text


def _tree(run: _Run, question: str, passages: list[Passage], streaming: bool) -> Generator[str, None, str]:
    batches = _pack(run, question, passages, template=COMPACT_TEMPLATE)
    for prompt in batches:
        run.note_prompt(prompt)
    if len(batches) == 1:
        return (yield from _final(run, batches[0], streaming))
    valid = set(run.shown)
    partials = [clean_citations(run.call(prompt).text, valid).strip() for prompt in batches]
    level = 1
    while True:
        items = [Passage(number=i + 1, text=t) for i, t in enumerate(p for p in partials if p)] or [
            Passage(number=1, text=ABSTAIN_MESSAGE)
        ]
        groups = _pack(run, question, items, template=REDUCE_TEMPLATE, formatter=plain)
        if len(groups) == 1:
            return (yield from _final(run, groups[0], streaming))
        if len(groups) >= len(items):  # no progress: each partial fills a call; cut them into one final call
            log.warning("tree_summarize: partial answers too long to combine; truncating them into one call")
            final = _budget(run, question, items, template=REDUCE_TEMPLATE, overflow="truncate", formatter=plain)
            return (yield from _final(run, final, streaming))
        log.debug("tree_summarize: level %d reduces %d partial answers in %d calls", level, len(items), len(groups))
        partials = [clean_citations(run.call(prompt).text, valid).strip() for prompt in groups]
        level += 1


_STRATEGIES = {"compact": _compact, "refine": _refine, "tree_summarize": _tree}


def _answer(
    question: str,
    hits: Sequence[Hit],
    llm: LLM,
    settings: Settings,
    mode: str | None,
    streaming: bool,
    max_new_tokens: int | None,
    apply_abstention: bool,
) -> Generator[str, None, Answer]:
    mode = mode or settings.synthesis_mode
    if mode not in _STRATEGIES:
        raise ValueError(f"unknown synthesis mode {mode!r}; choose one of {', '.join(MODES)}")
    if not question.strip():
        raise ValueError("the question is empty")
    if (apply_abstention and should_abstain(hits, settings)) or not hits:
        answer = abstain(hits, mode, settings, llm)
        if streaming:
            yield answer.text
        return answer

    run = _Run(llm=llm, settings=settings, max_new_tokens=max_new_tokens or settings.max_new_tokens)
    passages = hits_to_passages(hits)
    raw = yield from _STRATEGIES[mode](run, question, passages, streaming)
    shown = set(run.shown)
    text = clean_citations(raw, shown).strip()
    cited = [n for n in parse_citations(text) if n in shown]
    abstained = model_abstained(text)
    # Nothing cited: show what the answer was drawn from — unless the model said the answer is not there.
    numbers = sorted(cited) if cited else ([] if abstained else sorted(shown))
    sources = [
        Source(
            number=n,
            document=h.document,
            document_id=h.document_id,
            chunk_id=h.chunk_id,
            position=h.position,
            text=h.text,
            score=h.score,
            kind=h.kind,
        )
        for n in numbers
        for h in (hits[n - 1],)
    ]
    usage = Usage(
        context_window=llm.context_window,
        prompt_tokens=run.max_prompt,
        completion_tokens=run.completion,
        max_new_tokens=run.max_new_tokens,
        llm_calls=run.calls,
        chunks_used=len(shown),
        chunks_dropped=len(hits) - len(shown),
        chunks_truncated=sum(1 for truncated in run.shown.values() if truncated),
    )
    return Answer(text=text, sources=sources, usage=usage, abstained=abstained, mode=mode, hits=list(hits))


def synthesize(
    question: str,
    hits: Sequence[Hit],
    llm: LLM,
    settings: Settings,
    mode: str | None = None,
    *,
    max_new_tokens: int | None = None,
    apply_abstention: bool = True,
) -> Answer:
    """Answer ``question`` from ``hits`` (in rank order) with ``mode`` (default ``settings.synthesis_mode``).

    With ``apply_abstention`` (default) the abstention rule is applied first, so callers need not check it themselves.
    """
    gen = _answer(question, hits, llm, settings, mode, False, max_new_tokens, apply_abstention)
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value


def stream_answer(
    question: str,
    hits: Sequence[Hit],
    llm: LLM,
    settings: Settings,
    mode: str | None = None,
    *,
    max_new_tokens: int | None = None,
    apply_abstention: bool = True,
) -> Iterator[str | Answer]:
    """Yield text pieces as the final call generates them, then the :class:`Answer` (sources + usage) last."""
    answer = yield from _answer(question, hits, llm, settings, mode, True, max_new_tokens, apply_abstention)
    yield answer
