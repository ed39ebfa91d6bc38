"""The calls of one answer, shared by every mode: budgeting each request, generating, and the final streamed call.

Every request is budgeted by :func:`rag.budget.budget_prompt`, so none exceeds the model's window. In the
multi-call modes only the final call streams; its citations are filtered as they stream (:class:`CitationFilter`),
so the joined pieces equal the cleaned text.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from rag.budget import BudgetedPrompt, Passage, budget_prompt
from rag.synthesis.citations import CitationFilter
from rag.synthesis.passage_order import KeySentence
from rag.synthesis.prompts import ABSTENTION_START, SYSTEM_PROMPT, quote_key_sentences

if TYPE_CHECKING:
    from rag.models.llm import LLM, Generation, Message
    from rag.settings import Settings

Formatter = Callable[[Passage, str], str]


@dataclass
class Run:
    """Accounting across the calls of one answer: calls made, the largest prompt, tokens written, passages shown,
    and the earlier chat messages (``history``) that every request had room for; ``key_sentences`` are quoted in
    the requests that ask for them (``budget(evidence=True)``)."""

    llm: LLM
    settings: Settings
    max_new_tokens: int
    history: Sequence[Message] = ()
    key_sentences: Sequence[KeySentence] = ()
    history_dropped: int = 0  # the most earlier messages any request of this answer left out
    calls: int = 0
    max_prompt: int = 0
    completion: int = 0
    shown: dict[int, bool] = field(default_factory=dict)  # passage number → truncated in any call
    token_logprobs: list[float] = field(default_factory=list)  # of the last call's tokens, where the runtime gives them
    abstention_logprob: float | None = None  # the last call's: how likely the model found ABSTENTION_START instead

    def note_prompt(self, prompt: BudgetedPrompt) -> None:
        """Remember which sources the model saw (citations are valid only for these) and which were cut."""
        for p in prompt.passages:
            self.shown[p.number] = self.shown.get(p.number, False) or p.truncated

    def call(self, prompt: BudgetedPrompt) -> Generation:
        """One non-streamed call with the settings' sampling, counted."""
        gen = self.llm.generate(
            prompt.messages,
            max_new_tokens=self.max_new_tokens,
            temperature=self.settings.temperature,
            top_p=self.settings.top_p,
            alternative=ABSTENTION_START,
        )
        self.record(gen)
        return gen

    def record(self, gen: Generation) -> None:
        self.token_logprobs = list(gen.token_logprobs)
        self.abstention_logprob = gen.alternative_logprob
        self.calls += 1
        self.max_prompt = max(self.max_prompt, gen.prompt_tokens)
        self.completion += gen.completion_tokens

    def budget(
        self,
        question: str,
        passages: Sequence[Passage],
        *,
        template: str,
        start: int = 0,
        overflow: Literal["truncate", "stop"] = "stop",
        existing_answer: str | None = None,
        formatter: Formatter | None = None,
        evidence: bool = False,
    ) -> BudgetedPrompt:
        """One request of ``template`` holding ``passages[start:]`` as far as they fit this run's window; with
        ``evidence``, the key sentences fill the template's ``{evidence}`` slot (else it is left empty).

        A key sentence whose passage the window left out is not quoted: the model would cite a source the reader
        cannot see. Dropping it frees room, so the request is fitted once more without it (at most twice in all);
        the second fit shows every passage the first one did, so the remaining quotes stay valid."""
        fields = {"question": question}
        if existing_answer is not None:
            fields["existing_answer"] = existing_answer
        kwargs = {"formatter": formatter} if formatter is not None else {}

        def fit(quoted: Sequence[KeySentence]) -> BudgetedPrompt:
            return budget_prompt(
                self.llm,
                system=SYSTEM_PROMPT,
                template=template,
                fields={**fields, "evidence": quote_key_sentences(quoted)},
                passages=passages,
                max_new_tokens=self.max_new_tokens,
                start=start,
                overflow=overflow,
                history=self.history,
                **kwargs,
            )

        quoted = list(self.key_sentences) if evidence else []
        prompt = fit(quoted)
        shown = {p.number for p in prompt.passages}
        if any(k.number not in shown for k in quoted):
            prompt = fit([k for k in quoted if k.number in shown])
        self.history_dropped = max(self.history_dropped, prompt.history_dropped)
        return prompt

    def pack(
        self, question: str, passages: Sequence[Passage], *, template: str, formatter: Formatter | None = None
    ) -> list[BudgetedPrompt]:
        """Split all passages into consecutive batches, each one budgeted request."""
        batches: list[BudgetedPrompt] = []
        start = 0
        while start < len(passages):
            prompt = self.budget(question, passages, template=template, start=start, formatter=formatter)
            batches.append(prompt)
            start = prompt.next_index
        return batches

    def final(self, prompt: BudgetedPrompt, streaming: bool) -> Generator[str, None, str]:
        """The last call of an answer: streamed piece by piece when asked, citations filtered against shown passages."""
        if not streaming:
            return self.call(prompt).text
        stream = self.llm.stream(
            prompt.messages,
            max_new_tokens=self.max_new_tokens,
            temperature=self.settings.temperature,
            top_p=self.settings.top_p,
            alternative=ABSTENTION_START,
        )
        citations = CitationFilter(set(self.shown))
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
        self.record(stream.generation)
        return stream.generation.text
