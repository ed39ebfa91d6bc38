"""From ranked hits to a grounded, cited :class:`~rag.types.Answer`: abstain, or run the mode, then map citations.

``Answer.sources`` lists the cited passages; when the model cites nothing (small models often do not) it lists every
passage the model was shown, so provenance is never lost — unless the model said the answer is not there.
Given the embedder, the citations are then verified (:mod:`~rag.synthesis.verify`): each source carries the spans
that support the sentences citing it, and the answer its groundedness. Streaming (:func:`stream_answer`) yields
text pieces and, last, the :class:`Answer`, whose text has the verified citations (they may differ from the
streamed ones).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator, Sequence
from typing import TYPE_CHECKING

from rag.budget import Passage
from rag.synthesis import compact, refine, tree_summarize
from rag.synthesis.abstention import abstain, model_abstained, should_abstain
from rag.synthesis.citations import clean_citations, parse_citations
from rag.synthesis.decision import decide
from rag.synthesis.passage_order import KeySentence
from rag.synthesis.prompts import hits_to_passages
from rag.synthesis.run import Run
from rag.synthesis.verify import Embeds, Verification, verify_citations
from rag.types import Answer, Hit, Source, Span, SynthesisMode, Usage

if TYPE_CHECKING:
    from rag.models.llm import LLM, Message
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


def _sources(numbers: list[int], hits: Sequence[Hit], spans: dict[int, list[Span]]) -> list[Source]:
    """Source ``n`` is hit ``n`` (passages are numbered by rank from 1), with the spans that support its citations."""
    return [Source.of(hits[n - 1], n, spans.get(n, [])) for n in numbers]


def _answer(
    question: str,
    hits: Sequence[Hit],
    llm: LLM,
    settings: Settings,
    mode: str | None,
    streaming: bool,
    max_new_tokens: int | None,
    apply_abstention: bool,
    history: Sequence[Message],
    embedder: Embeds | None,
    key_sentences: Sequence[KeySentence],
) -> Generator[str, None, Answer]:
    chosen = _mode(mode, settings)
    if not question.strip():
        raise ValueError("the question is empty")
    if (apply_abstention and should_abstain(hits, settings)) or not hits:
        abstention = abstain(hits, chosen, settings, llm)
        abstention.question = question
        if streaming:
            yield abstention.text
        return abstention

    run = Run(llm=llm, settings=settings, max_new_tokens=max_new_tokens or settings.max_new_tokens, history=history,
              key_sentences=key_sentences[: settings.key_sentences])
    raw = yield from STRATEGIES[chosen](run, question, hits_to_passages(hits), streaming)
    shown = set(run.shown)
    text = clean_citations(raw, shown).strip()
    abstained = model_abstained(text)
    verified = Verification(text)
    if embedder is not None and settings.verify_citations and not abstained:
        verified = verify_citations(
            text, hits, shown, embedder, settings.citation_min_support, margin=settings.citation_switch_margin,
            question=question,
        )
    text = verified.text
    cited = [n for n in parse_citations(text) if n in shown]
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
        history_messages=len(history) - run.history_dropped,
        history_dropped=run.history_dropped,
    )
    answer = Answer(
        text=text, sources=_sources(numbers, hits, verified.spans), usage=usage,
        kind="abstained" if abstained else "generated", mode=chosen.value, hits=list(hits), question=question,
        groundedness=verified.groundedness, sentences=verified.sentences,
    )
    if embedder is None or not settings.verify_citations:  # nothing verified: nothing to decide on
        return answer
    return decide(answer, hits, key_sentences, run.token_logprobs, settings, run.abstention_logprob)


def synthesize(
    question: str,
    hits: Sequence[Hit],
    llm: LLM,
    settings: Settings,
    mode: str | None = None,
    *,
    max_new_tokens: int | None = None,
    apply_abstention: bool = True,
    history: Sequence[Message] = (),
    embedder: Embeds | None = None,
    key_sentences: Sequence[KeySentence] = (),
) -> Answer:
    """Answer ``question`` from ``hits`` (in rank order) with ``mode`` (default ``settings.synthesis_mode``).

    With ``apply_abstention`` (default) the abstention rule is applied first, so callers need not check it themselves.
    ``history`` (earlier chat messages) fills the room the passages leave; with ``embedder`` the citations are verified
    and the answer decided (:mod:`~rag.synthesis.decision`); ``key_sentences`` (numbered as ``hits``, best first) are
    what an extractive answer quotes, and the first ``settings.key_sentences`` are quoted before the question in
    ``compact`` mode.
    """
    gen = _answer(question, hits, llm, settings, mode, False, max_new_tokens, apply_abstention, history, embedder,
                  key_sentences)
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
    history: Sequence[Message] = (),
    embedder: Embeds | None = None,
    key_sentences: Sequence[KeySentence] = (),
) -> Iterator[str | Answer]:
    """Yield text pieces as the final call generates them, then the :class:`Answer` (sources + usage) last."""
    answer = yield from _answer(question, hits, llm, settings, mode, True, max_new_tokens, apply_abstention, history,
                                embedder, key_sentences)
    yield answer
