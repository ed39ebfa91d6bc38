"""The LLM interface the synthesis layer talks to: chat in, text and the model's own token counts out.

Every backend counts tokens with the generating model's own tokenizer (or says how far its count can be off), so the
budgeter can guarantee that no request exceeds the context window. ``count_messages`` counts the prompt exactly as
it will be sent: chat template applied, generation prompt appended.

Streaming returns a :class:`TextStream`: iterate it for text pieces; once exhausted its ``generation`` attribute
holds the :class:`Generation` (full text and token counts) of that call. The counts live on the stream object, not
on the LLM, so concurrent streams never read each other's numbers.

Backends: :class:`rag.models.llamacpp_llm.LlamaCppLLM` (llama.cpp in this process, the CPU default),
:class:`rag.models.local_llm.LocalLLM` (transformers in this process: CUDA, and the CPU fallback) and
:class:`rag.models.openai_llm.OpenAILLM` (an OpenAI-compatible server); :func:`rag.models.load_llm` picks one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field

Message = dict[str, str]


class ContextWindowExceeded(ValueError):
    """A request would not fit the model's context window (prompt + max_new_tokens > window)."""


@dataclass
class Generation:
    """The result of one LLM call; token counts are the model's own."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str = "stop"  # "stop" (end of sequence), "length" (hit max_new_tokens) or "cancelled"
    # The log probability of each generated token under the model, where the backend gives them (llama.cpp): what
    # the answer's confidence reads of the model's own certainty. Empty elsewhere.
    token_logprobs: list[float] = field(default_factory=list)
    # The mean log probability per token of the ``alternative`` continuation the caller asked about (e.g. "The
    # documents do not contain"), scored from the same prompt; None where the backend cannot score one.
    alternative_logprob: float | None = None


class TextStream(Iterator[str]):
    """Text pieces of one streamed call; after exhaustion ``generation`` holds that call's text and counts.

    ``close()`` (or dropping it) stops generation early where the backend can.
    """

    def __init__(self, pieces: Generator[str, None, Generation]) -> None:
        self._pieces = pieces
        self.generation: Generation | None = None

    def __iter__(self) -> TextStream:
        return self

    def __next__(self) -> str:
        try:
            return next(self._pieces)
        except StopIteration as stop:
            self.generation = stop.value
            raise StopIteration from None

    def close(self) -> None:
        self._pieces.close()


class LLM(ABC):
    """A chat model with its own token accounting."""

    name: str
    context_window: int

    @abstractmethod
    def count_tokens(self, text: str) -> int:
        """Tokens of plain text, without special tokens."""

    @abstractmethod
    def truncate(self, text: str, max_tokens: int) -> str:
        """A prefix of ``text`` of at most ``max_tokens`` tokens, cut at a token boundary."""

    @abstractmethod
    def count_messages(self, messages: Sequence[Message]) -> int:
        """Tokens of the fully rendered chat prompt (template + generation prompt), as it will be sent."""

    @abstractmethod
    def generate(
        self, messages: Sequence[Message], *, max_new_tokens: int, temperature: float = 0.0, top_p: float = 1.0,
        alternative: str | None = None,
    ) -> Generation:
        """One answer; with ``alternative``, also how likely the model found that text as the answer's start
        (``Generation.alternative_logprob``), where the backend can tell at little cost (llama.cpp)."""

    @abstractmethod
    def stream(
        self, messages: Sequence[Message], *, max_new_tokens: int, temperature: float = 0.0, top_p: float = 1.0,
        alternative: str | None = None,
    ) -> TextStream: ...

    def background(self, cancel: Callable[[], bool] | None = None) -> AbstractContextManager[object]:
        """Calls made by this thread inside the block are background work (summaries) that give way to answers,
        and stop early (:class:`rag.types.Cancelled`) once ``cancel()`` is true.

        Only a backend whose calls compete for one local model needs it (:class:`~rag.models.local_llm.LocalLLM`);
        a server such as vLLM schedules concurrent requests itself."""
        return nullcontext()

    def check_fits(self, prompt_tokens: int, max_new_tokens: int) -> None:
        """Refuse a request that cannot fit: the budgeter upstream should have made this impossible."""
        if prompt_tokens + max_new_tokens > self.context_window:
            raise ContextWindowExceeded(
                f"prompt of {prompt_tokens} tokens + max_new_tokens {max_new_tokens} exceeds the context window "
                f"of {self.context_window} tokens of {self.name}"
            )
