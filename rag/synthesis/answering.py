"""From ranked hits to a grounded, cited :class:`~rag.types.Answer`: abstain, or run the mode, then map citations.

``Answer.sources`` lists the cited passages; when the model cites nothing (small models often do not) it lists every
passage the model was shown, so provenance is never lost — unless the model said the answer is not there.
Streaming (:func:`stream_answer`) yields text pieces and, last, the :class:`Answer`.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator, Sequence
from typing import TYPE_CHECKING

from rag.budget import Passage
from rag.synthesis import compact, refine, tree_summarize
from rag.synthesis.abstention import abstain, model_abstained, should_abstain
from rag.synthesis.citations import clean_citations, parse_citations
from rag.synthesis.prompts import hits_to_passages
from rag.synthesis.run import Run
from rag.types import Answer, Hit, Source, SynthesisMode, Usage

if TYPE_CHECKING:
    from rag.models.llm import LLM
    from rag.settings import Settings

Strategy = Callable[[Run, str, list[Passage], bool], Generator[str, None, str]]

STRATEGIES: dict[SynthesisMode, Strategy] = {
    SynthesisMode.COMPACT: compact.answer,
    SynthesisMode.REFINE: refine.answer,
    SynthesisMode.TREE_SUMMARIZE: tree_summarize.answer,
}


def _mode(mode: str | None, settings: Settings) -> SynthesisMode:
    chosen = mode or settings.synthesis_mode
    try:
        return SynthesisMode(chosen)
    except ValueError:
        raise ValueError(f"unknown synthesis mode {chosen!r}; choose one of {', '.join(SynthesisMode)}") from None


def _sources(numbers: list[int], hits: Sequence[Hit]) -> list[Source]:
    """Source ``n`` is hit ``n`` (passages are numbered by rank from 1)."""
    return [
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
    chosen = _mode(mode, settings)
    if not question.strip():
        raise ValueError("the question is empty")
    if (apply_abstention and should_abstain(hits, settings)) or not hits:
        abstention = abstain(hits, chosen, settings, llm)
        if streaming:
            yield abstention.text
        return abstention

    run = Run(llm=llm, settings=settings, max_new_tokens=max_new_tokens or settings.max_new_tokens)
    raw = yield from STRATEGIES[chosen](run, question, hits_to_passages(hits), streaming)
    shown = set(run.shown)
    text = clean_citations(raw, shown).strip()
    cited = [n for n in parse_citations(text) if n in shown]
    abstained = model_abstained(text)
    # Nothing cited: show what the answer was drawn from — unless the model said the answer is not there.
    numbers = sorted(cited) if cited else ([] if abstained else sorted(shown))
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
    return Answer(
        text=text, sources=_sources(numbers, hits), usage=usage, abstained=abstained, mode=chosen.value, hits=list(hits)
    )


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
