"""The LLM interface the synthesis layer talks to, and the local transformers backend.

Every backend counts tokens with the generating model's own tokenizer (or says how far its count can be off), so the
budgeter can guarantee that no request exceeds the context window. ``count_messages`` counts the prompt exactly as
it will be sent: chat template applied, generation prompt appended.

Streaming returns a :class:`TextStream`: iterate it for text pieces; once exhausted its ``generation`` attribute
holds the :class:`Generation` (full text and token counts) of that call. The counts live on the stream object, not
on the LLM, so concurrent streams never read each other's numbers.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rag.models import bundled

if TYPE_CHECKING:
    from rag.settings import Settings

log = logging.getLogger(__name__)

Message = dict[str, str]


class ContextWindowExceeded(ValueError):
    """A request would not fit the model's context window (prompt + max_new_tokens > window)."""


@dataclass
class Generation:
    """The result of one LLM call; token counts are the model's own."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str = "stop"  # "stop" (end of sequence) or "length" (hit max_new_tokens)


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

    def consume(self) -> Generation:
        """Drain the stream (for callers that only want the result)."""
        for _ in self:
            pass
        assert self.generation is not None
        return self.generation


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
        self, messages: Sequence[Message], *, max_new_tokens: int, temperature: float = 0.0, top_p: float = 1.0
    ) -> Generation: ...

    @abstractmethod
    def stream(
        self, messages: Sequence[Message], *, max_new_tokens: int, temperature: float = 0.0, top_p: float = 1.0
    ) -> TextStream: ...

    def check_fits(self, prompt_tokens: int, max_new_tokens: int) -> None:
        """Refuse a request that cannot fit: the budgeter upstream should have made this impossible."""
        if prompt_tokens + max_new_tokens > self.context_window:
            raise ContextWindowExceeded(
                f"prompt of {prompt_tokens} tokens + max_new_tokens {max_new_tokens} exceeds the context window "
                f"of {self.context_window} tokens of {self.name}"
            )


class HFTokenCounter:
    """Token counting with a Hugging Face tokenizer: the piece LocalLLM and the HTTP fallback share.

    It also satisfies what the budgeter needs (``context_window`` + the three counting methods), so budgeting can
    be tested with a real tokenizer and no weights.
    """

    def __init__(self, tokenizer: Any, context_window: int, name: str = "tokenizer", margin: int = 0) -> None:
        self.tokenizer = tokenizer
        self.context_window = context_window
        self.name = name
        self.margin = margin  # added to count_messages when this is not the generating server's own tokenizer
        # Every call here is untruncated and unpadded, but a fast tokenizer loaded with truncation or padding set
        # re-configures its shared backend on the first such call: let that happen now, in one thread, not in
        # two requests at once (see rag.models.fast_tokenizer).
        self.count_tokens("")

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def truncate(self, text: str, max_tokens: int) -> str:
        if max_tokens <= 0:
            return ""
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = enc["input_ids"]
        if len(ids) <= max_tokens:
            return text
        # Cut where token ``max_tokens`` starts: byte-level BPE can split one character over several tokens that
        # share its offsets, and the start offset never keeps half of such a character.
        cut = enc["offset_mapping"][max_tokens][0]
        out = text[:cut]
        # Re-tokenising a prefix can, rarely, merge differently; shrink until the count really fits.
        while out and self.count_tokens(out) > max_tokens:
            out = out[: max(0, len(out) - max(1, len(out) // 50))]
        return out

    def render(self, messages: Sequence[Message]) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
        # A base model without a chat template: a plain transcript ending where the answer starts.
        lines = [f"{m['role']}: {m['content']}" for m in messages]
        return "\n\n".join(lines) + "\n\nassistant:"

    def encode_messages(self, messages: Sequence[Message]) -> list[int]:
        """The exact ids sent to the model; the template writes special tokens as text, so none are added."""
        return self.tokenizer(self.render(messages), add_special_tokens=False)["input_ids"]

    def count_messages(self, messages: Sequence[Message]) -> int:
        return len(self.encode_messages(messages)) + self.margin


def resolve_model_source(spec: str, root: Path) -> str:
    """A path or HF id ``from_pretrained`` can load: bundled names and .gguf files become converted folders."""
    if bundled.is_bundled(spec):
        return str(bundled.ensure_converted(spec, root))
    path = Path(spec).expanduser()
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise FileNotFoundError(f"GGUF file not found: {path}")
        return str(bundled.ensure_converted(str(path), root))
    return str(path) if path.exists() else spec  # a local folder, else a HF id (offline cache with HF_HUB_OFFLINE=1)


def resolve_tokenizer_source(spec: str, root: Path) -> str:
    """Like :func:`resolve_model_source` but converts only the tokenizer when the weights are not needed."""
    if bundled.is_bundled(spec):
        return str(bundled.ensure_tokenizer(spec, root))
    path = Path(spec).expanduser()
    if path.suffix.lower() == ".gguf":
        return str(bundled.ensure_tokenizer(str(path), root))
    return str(path) if path.exists() else spec


def _window_from_config(source: str) -> int | None:
    from transformers import AutoConfig

    window_file = Path(source) / bundled.WINDOW_FILE  # a tokenizer-only conversion of a GGUF
    if window_file.is_file():
        return int(json.loads(window_file.read_text())["max_position_embeddings"])
    try:
        config = AutoConfig.from_pretrained(source)
    except (OSError, ValueError):
        return None
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    return getattr(text_config, "max_position_embeddings", None)


def load_token_counter(spec: str, root: Path, *, context_window: int | None = None, margin: int = 0) -> HFTokenCounter:
    """A tokenizer-only counter for a model spec (bundled name, .gguf, folder or HF id), without its weights.

    ``root`` is the models folder (``settings.models_root``).
    """
    from transformers import AutoTokenizer

    source = resolve_tokenizer_source(spec, root)
    tokenizer = AutoTokenizer.from_pretrained(source)
    window = context_window or _window_from_config(source)
    if window is None:
        raise ValueError(f"cannot tell the context window of {spec!r}; set RAG_CONTEXT_WINDOW")
    return HFTokenCounter(tokenizer, window, name=spec, margin=margin)


def pick_device(device: str) -> tuple[str, Any]:
    """``auto`` → CUDA + bfloat16 when present, else CPU + float32 (bf16 prefill is ~5× slower on CPU)."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("RAG_DEVICE=cuda but torch sees no CUDA device")
        return "cuda", torch.bfloat16
    return "cpu", torch.float32


@dataclass
class _LoadedWeights:
    """Weights + tokenizer + the one lock that serialises their use, shared by every LocalLLM of that model."""

    model: Any
    tokenizer: Any
    source: str
    lock: threading.Lock
    load_seconds: float


_weights: dict[tuple[str, str, str], _LoadedWeights] = {}
_weights_lock = threading.Lock()


def _load_weights(source: str, device: str, dtype: Any) -> _LoadedWeights:
    """Load a model folder/id once per (source, device, dtype) in this process."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    key = (source, device, str(dtype))
    with _weights_lock:
        if key not in _weights:
            t0 = time.perf_counter()
            tokenizer = AutoTokenizer.from_pretrained(source)
            model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype).to(device).eval()  # type: ignore[arg-type]
            _weights[key] = _LoadedWeights(model, tokenizer, source, threading.Lock(), time.perf_counter() - t0)
        return _weights[key]


def clear_weights() -> None:
    """Drop the process-wide weights cache (instances still holding a model keep it alive until they go)."""
    with _weights_lock:
        _weights.clear()


class LocalLLM(LLM):
    """A transformers causal LM in this process; one generation at a time (a lock), streaming via a thread.

    Weights are shared between instances of the same model and device (e.g. with different window overrides), and
    so is the lock: two threads never run the same weights at once.
    """

    def __init__(self, settings: Settings, *, model: str | None = None, device: str | None = None) -> None:
        import torch

        self.name = model or settings.llm_model
        source = resolve_model_source(self.name, settings.models_root)
        self.device, self.dtype = pick_device(device or settings.device)
        loaded = _load_weights(source, self.device, self.dtype)
        self.model, self.tokenizer, self._lock = loaded.model, loaded.tokenizer, loaded.lock
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
            "pad_token_id": self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self._eos[0],
        }
        if temperature > 0:
            kwargs.update(do_sample=True, temperature=temperature, top_p=top_p, top_k=0)
        else:  # greedy: deterministic answers
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        return kwargs, len(ids)

    def _finish(self, output: Any, prompt_len: int, max_new_tokens: int) -> tuple[list[int], str]:
        new = output[0][prompt_len:].tolist()
        ended = bool(new) and new[-1] in self._eos
        finish = "stop" if ended or len(new) < max_new_tokens else "length"
        return new, finish

    def generate(
        self, messages: Sequence[Message], *, max_new_tokens: int, temperature: float = 0.0, top_p: float = 1.0
    ) -> Generation:
        kwargs, prompt_len = self._prepare(messages, max_new_tokens, temperature, top_p)
        with self._lock, self._torch.inference_mode():
            output = self.model.generate(**kwargs)
        new, finish = self._finish(output, prompt_len, max_new_tokens)
        text = self.tokenizer.decode(new, skip_special_tokens=True)
        return Generation(text=text, prompt_tokens=prompt_len, completion_tokens=len(new), finish_reason=finish)

    def stream(
        self, messages: Sequence[Message], *, max_new_tokens: int, temperature: float = 0.0, top_p: float = 1.0
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
        result: dict[str, Any] = {}

        def work() -> None:
            try:
                with self._lock, self._torch.inference_mode():
                    if cancel.is_set():
                        return
                    result["output"] = self.model.generate(
                        **kwargs, streamer=streamer, stopping_criteria=StoppingCriteriaList([_Cancel()])
                    )
            except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer's thread
                result["error"] = exc
            finally:
                streamer.text_queue.put(streamer.stop_signal)  # never leave the consumer waiting

        thread = threading.Thread(target=work, name="llm-stream", daemon=True)
        thread.start()
        pieces: list[str] = []
        try:
            for piece in streamer:
                if piece:
                    pieces.append(piece)
                    yield piece
        finally:
            cancel.set()  # consumer stopped early (close/GeneratorExit) or normal end: either way stop generating
            thread.join()
        if "error" in result:
            raise result["error"]
        if "output" not in result:
            return Generation("".join(pieces), prompt_len, 0, "cancelled")
        new, finish = self._finish(result["output"], prompt_len, max_new_tokens)
        text = self.tokenizer.decode(new, skip_special_tokens=True)
        return Generation(text=text, prompt_tokens=prompt_len, completion_tokens=len(new), finish_reason=finish)
