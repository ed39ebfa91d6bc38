"""The local backend on llama.cpp: a GGUF (bundled or the user's own) run as it is, on the CPU.

Callers see what the transformers backend gives them (:class:`~rag.models.local_llm.LocalLLM`): exact counts with the
model's own tokenizer and chat template, streaming that stops when the consumer does, greedy determinism, usage
figures, and background calls (summaries) that give way to answers and are decoded several at a time
(:class:`~rag.models.micro_batch.MicroBatcher` gathers them, :meth:`GGUFModel.run` decodes them together). The
mechanics are in :mod:`rag.models.llamacpp_runtime`.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable, Generator, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from rag.models import bundled
from rag.models.llamacpp_runtime import (
    GREEDY,
    Decoded,
    GGUFTokenCounter,
    Request,
    Sampling,
    TextPieces,
    load_gguf,
)
from rag.models.llm import LLM, Generation, Message, TextStream
from rag.models.micro_batch import MicroBatcher
from rag.models.placement import background_batch

if TYPE_CHECKING:
    from rag.settings import Settings

log = logging.getLogger(__name__)


def llm_threads(settings: Settings) -> int:
    """Threads llama.cpp computes with: ``RAG_LLM_THREADS``, else one per CPU."""
    return settings.llm_threads or os.cpu_count() or 1


class LlamaCppLLM(LLM):
    """A GGUF model on llama.cpp in this process; every call runs on the model's one thread (its gate)."""

    runtime = "llamacpp"

    def __init__(self, settings: Settings, *, model: str | None = None) -> None:
        self.name = model or settings.llm_model
        path = bundled.gguf_file(self.name, settings.models_root)
        self.weights = load_gguf(path, llm_threads(settings))
        self.gate = self.weights.gate
        self.load_seconds = self.weights.load_seconds
        window = settings.context_window or self.weights.n_ctx_train
        if window > self.weights.n_ctx_train:
            log.warning("context window override %d exceeds %s's %d positions", window, self.name,
                        self.weights.n_ctx_train)
        self.context_window = int(window)
        self.tokens = GGUFTokenCounter(self.weights, self.context_window, name=self.name)
        self._background_batches = MicroBatcher(self._decode_batch, background_batch(settings, "cpu"))
        log.info("loaded %s from %s on llama.cpp (%d threads) in %.1fs (window %d)", self.name, path,
                 self.weights.threads, self.load_seconds, self.context_window)

    # --- counting ------------------------------------------------------------------------------
    def count_tokens(self, text: str) -> int:
        return self.tokens.count_tokens(text)

    def truncate(self, text: str, max_tokens: int) -> str:
        return self.tokens.truncate(text, max_tokens)

    def count_messages(self, messages: Sequence[Message]) -> int:
        return self.tokens.count_messages(messages)

    # --- generation ----------------------------------------------------------------------------
    def background(self, cancel: Callable[[], bool] | None = None) -> AbstractContextManager[object]:
        return self.gate.background(cancel)

    def _prompt(self, messages: Sequence[Message], max_new_tokens: int) -> list[int]:
        ids = self.tokens.encode_messages(messages)
        self.check_fits(len(ids), max_new_tokens)
        return ids

    def _generation(self, out: Decoded, prompt_tokens: int) -> Generation:
        text = self.weights.detokenize(out.tokens).decode("utf-8", "replace")
        completion = len(out.tokens) + out.ended_by_eog  # the end token was generated too, as transformers counts
        return Generation(text, prompt_tokens, completion, out.finish, token_logprobs=out.logprobs,
                          alternative_logprob=out.alternative_logprob)

    def generate(
        self, messages: Sequence[Message], *, max_new_tokens: int, temperature: float = 0.0, top_p: float = 1.0,
        alternative: str | None = None,
    ) -> Generation:
        ids = self._prompt(messages, max_new_tokens)
        if temperature <= 0 and self.gate.in_background():  # summaries: decoded together
            return self._generation(self._background_batches((ids, max_new_tokens)), len(ids))
        request = Request(ids, max_new_tokens, alternative=self._alternative(alternative))
        out = self.gate.run(lambda: self.weights.run("foreground", [request], Sampling(temperature, top_p))[0])
        return self._generation(out, len(ids))

    def _decode_batch(self, prompts: list[tuple[list[int], int]]) -> list[Decoded]:
        """One background batch (see :class:`~rag.models.micro_batch.MicroBatcher`), decoded together."""
        requests = [Request(ids, n) for ids, n in prompts]
        return self.gate.run(lambda: self.weights.run("background", requests, GREEDY))

    def stream(
        self, messages: Sequence[Message], *, max_new_tokens: int, temperature: float = 0.0, top_p: float = 1.0,
        alternative: str | None = None,
    ) -> TextStream:
        # Validate before returning so an over-long request fails at the call, not at the first next().
        ids = self._prompt(messages, max_new_tokens)
        return TextStream(self._stream(ids, max_new_tokens, Sampling(temperature, top_p), self._alternative(alternative)))

    def _alternative(self, text: str | None) -> list[int]:
        return self.tokens.encode(text) if text else []

    def _stream(self, ids: list[int], max_new_tokens: int, sampling: Sampling,
                alternative: list[int]) -> Generator[str, None, Generation]:
        pieces: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        stop = threading.Event()
        text = TextPieces(self.weights)

        def on_token(token: int) -> bool:
            piece = text(token)
            if piece:
                pieces.put(piece)
            return not stop.is_set()

        def work() -> Decoded | None:
            try:
                if stop.is_set():  # the consumer stopped before the model thread got to this call
                    return None
                request = Request(ids, max_new_tokens, on_token, alternative=alternative)
                out = self.weights.run("foreground", [request], sampling)[0]
                if tail := text.flush():
                    pieces.put(tail)
                return out
            finally:
                pieces.put(None)  # never leave the consumer waiting

        call = self.gate.submit(work)
        streamed: list[str] = []
        try:
            while (piece := pieces.get()) is not None:
                streamed.append(piece)
                yield piece
        finally:
            stop.set()  # consumer stopped early (close/GeneratorExit) or normal end: either way stop generating
            call.done.wait()
        out = call.wait()
        if out is None:
            return Generation("".join(streamed), len(ids), 0, "cancelled")
        return self._generation(out, len(ids))
