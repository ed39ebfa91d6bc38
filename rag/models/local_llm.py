"""The local backend: a transformers causal LM in this process (CPU or CUDA), run by its weights' own thread.

Weights come from :mod:`rag.models.weights` (loaded once per process), the device from :mod:`rag.models.device`,
token counts from the model's own tokenizer (:class:`~rag.models.tokens.HFTokenCounter`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Generator, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from rag.models.batched_decode import generate_greedy
from rag.models.device import choose_device
from rag.models.llm import LLM, Generation, Message, TextStream
from rag.models.micro_batch import MicroBatcher
from rag.models.placement import background_batch
from rag.models.sources import resolve_model_source
from rag.models.tokens import HFTokenCounter
from rag.models.weights import load_weights

if TYPE_CHECKING:
    from rag.settings import Settings

log = logging.getLogger(__name__)


class LocalLLM(LLM):
    """A transformers causal LM in this process; one generation at a time, on the weights' own thread.

    Weights are shared between instances of the same model and device (e.g. with different window overrides), and
    so is their :class:`~rag.models.gate.ModelGate`, the one thread that runs them: answers run one at a time, and
    background calls (summaries) let every waiting answer run at their next decoder layer.
    """

    runtime = "transformers"

    def __init__(self, settings: Settings, *, model: str | None = None, device: str | None = None) -> None:
        import torch

        self.name = model or settings.llm_model
        source = resolve_model_source(self.name, settings.models_root)
        self.device = choose_device(device or settings.device)
        # bfloat16 on a GPU; float32 on the CPU, where bf16 prefill is ~5x slower.
        self.dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        loaded = load_weights(source, self.device, self.dtype)
        self.model, self.tokenizer, self.gate = loaded.model, loaded.tokenizer, loaded.gate
        self.load_seconds = loaded.load_seconds
        config_window = getattr(self.model.config.get_text_config(), "max_position_embeddings", None)
        window = settings.context_window or config_window
        if window is None:
            raise ValueError(f"{self.name} has no max_position_embeddings; set RAG_CONTEXT_WINDOW")
        if config_window and window > config_window:
            log.warning("context window override %d exceeds %s's %d positions", window, self.name, config_window)
        self.context_window = int(window)
        self.tokens = HFTokenCounter(self.tokenizer, self.context_window, name=self.name)
        self._torch = torch
        self._eos = self._eos_ids()
        self._pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self._eos[0]
        runs_on = "cuda" if self.device.startswith("cuda") else "cpu"
        self._background_batches = MicroBatcher(self._decode_batch, background_batch(settings, runs_on))
        log.info(
            "loaded %s from %s on %s/%s in %.1fs (window %d)",
            self.name,
            source,
            self.device,
            str(self.dtype).removeprefix("torch."),
            self.load_seconds,
            self.context_window,
        )

    def _eos_ids(self) -> list[int]:
        """Stop on every end marker the model may emit (chat models end turns with e.g. <|im_end|>)."""
        ids: set[int] = set()
        for value in (
            self.tokenizer.eos_token_id,
            self.model.generation_config.eos_token_id,
            self.model.config.eos_token_id,
        ):
            if isinstance(value, int):
                ids.add(value)
            elif isinstance(value, (list, tuple)):
                ids.update(v for v in value if isinstance(v, int))
        for marker in ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end|>"):
            tid = self.tokenizer.convert_tokens_to_ids(marker)
            if isinstance(tid, int) and tid != self.tokenizer.unk_token_id:
                ids.add(tid)
        return sorted(ids)

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

    def _prepare(
        self, messages: Sequence[Message], max_new_tokens: int, temperature: float, top_p: float
    ) -> tuple[dict[str, Any], int]:
        ids = self.tokens.encode_messages(messages)
        self.check_fits(len(ids), max_new_tokens)
        input_ids = self._torch.tensor([ids], device=self.device)
        kwargs: dict[str, Any] = {
            "input_ids": input_ids,
            "attention_mask": self._torch.ones_like(input_ids),
            "max_new_tokens": max_new_tokens,
            "eos_token_id": self._eos,
            "pad_token_id": self._pad,
        }
        if temperature > 0:
            kwargs.update(do_sample=True, temperature=temperature, top_p=top_p, top_k=0)
        else:  # greedy: deterministic answers
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        return kwargs, len(ids)

    def _generation(self, new: list[int], prompt_len: int, max_new_tokens: int) -> Generation:
        ended = bool(new) and new[-1] in self._eos
        finish = "stop" if ended or len(new) < max_new_tokens else "length"
        text = self.tokenizer.decode(new, skip_special_tokens=True)
        return Generation(text=text, prompt_tokens=prompt_len, completion_tokens=len(new), finish_reason=finish)

    def generate(
        self, messages: Sequence[Message], *, max_new_tokens: int, temperature: float = 0.0, top_p: float = 1.0,
        alternative: str | None = None,
    ) -> Generation:
        if temperature <= 0 and self.gate.in_background():  # summaries: decoded in batches (batched_decode)
            ids = self.tokens.encode_messages(messages)
            self.check_fits(len(ids), max_new_tokens)
            return self._generation(self._background_batches((ids, max_new_tokens)), len(ids), max_new_tokens)
        kwargs, prompt_len = self._prepare(messages, max_new_tokens, temperature, top_p)
        output = self.gate.run(lambda: self._generate(kwargs))
        return self._generation(output[0][prompt_len:].tolist(), prompt_len, max_new_tokens)

    def _generate(self, kwargs: dict[str, Any]) -> Any:
        """``model.generate`` on the model thread (inference mode is per thread, so it is entered there)."""
        with self._torch.inference_mode():
            return self.model.generate(**kwargs)

    def _decode_batch(self, prompts: list[tuple[list[int], int]]) -> list[list[int]]:
        """One background batch (see :class:`~rag.models.micro_batch.MicroBatcher`): each prompt's new tokens."""
        longest = max(n for _, n in prompts)

        def decode() -> list[list[int]]:
            with self._torch.inference_mode():
                return generate_greedy(self.model, [ids for ids, _ in prompts], longest, self._eos, self._pad)

        rows = self.gate.run(decode)
        return [row[:n] for row, (_, n) in zip(rows, prompts, strict=True)]

    def stream(
        self, messages: Sequence[Message], *, max_new_tokens: int, temperature: float = 0.0, top_p: float = 1.0,
        alternative: str | None = None,
    ) -> TextStream:
        # Validate before returning so an over-long request fails at the call, not at the first next().
        kwargs, prompt_len = self._prepare(messages, max_new_tokens, temperature, top_p)
        return TextStream(self._stream(kwargs, prompt_len, max_new_tokens))

    def _stream(self, kwargs: dict[str, Any], prompt_len: int, max_new_tokens: int) -> Generator[str, None, Generation]:
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        cancel = threading.Event()

        class _Cancel(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **_: Any) -> Any:
                return cancel.is_set()

        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)

        def work() -> Any:
            try:
                if cancel.is_set():  # the consumer stopped before the model thread got to this call
                    return None
                return self._generate({**kwargs, "streamer": streamer,
                                       "stopping_criteria": StoppingCriteriaList([_Cancel()])})
            finally:
                streamer.text_queue.put(streamer.stop_signal)  # never leave the consumer waiting

        call = self.gate.submit(work)
        pieces: list[str] = []
        try:
            for piece in streamer:
                if piece:
                    pieces.append(piece)
                    yield piece
        finally:
            cancel.set()  # consumer stopped early (close/GeneratorExit) or normal end: either way stop generating
            call.done.wait()
        output = call.wait()
        if output is None:
            return Generation("".join(pieces), prompt_len, 0, "cancelled")
        return self._generation(output[0][prompt_len:].tolist(), prompt_len, max_new_tokens)
