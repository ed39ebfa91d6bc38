"""llama.cpp in this process: a GGUF loaded as it is, its own tokenizer and chat template, and generation that
stops for answers between any two batches of work.

Why llama.cpp on the CPU: decoding reads every weight once per token, so it is bound by memory bandwidth, and the
bundled model's Q4_K_M weights are about a seventh of the bytes of transformers' float32 (``bench/decode.py``: decode
7x faster, prefill equal). It also loads any GGUF a user has without converting it.

How it is shaped, and why:
- **One model per GGUF file in the process** (:func:`load_gguf`), with its own :class:`~rag.models.gate.ModelGate`:
  every call on the weights runs on that gate's thread, answers first, background work (summaries) in the gaps.
- **Two contexts (KV caches) over the one model**: ``foreground`` (answers, one sequence) and ``background``
  (summaries, several sequences decoded together: a decode step reads the weights once for all of them). A
  background call stopped for an answer keeps its cache, since the answer runs in the other context. A context is
  created on first use and sized on demand (the next power of two of the longest request, at least
  :data:`MIN_CONTEXT` tokens): a 32k-window model does not hold 384 MB of cache for 1k-token prompts, and a process
  that never summarises never allocates the background one.
- **Prefill in batches, decode one step at a time, and** :meth:`ModelGate.pause_point` **between any two**: an answer
  arriving during a summary waits for at most one prefill batch or one decode step.
- Sampling is done here on the logits (greedy, or temperature + top-p), which also gives each chosen token's log
  probability under the model (``Generation.token_logprobs``) for the answer's confidence at no extra call.
"""

from __future__ import annotations

import codecs
import ctypes
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rag.models.gate import ModelGate
from rag.models.llm import Message
from rag.models.tokens import TokenCounter, plain_transcript

log = logging.getLogger(__name__)

PREFILL_BATCH = 128
"""Prompt tokens per llama_decode call: the most an answer waits behind a background prefill. Answers use it too:
512 was hardly faster here (a 900-token prompt: 90 vs 88 tok/s on one thread of a busy machine, 228 vs 214 tok/s
on two quiet threads, medians of 3-4 interleaved runs), and one batch size gives an answer and a background call
of the same prompt the same numerics, hence the same greedy text."""
MIN_CONTEXT = 4096
"""Tokens per sequence a context is created with at least; it grows (recreated) when a request needs more."""


def missing_reason() -> str | None:
    """Why llama.cpp cannot run here (the package is absent or its library does not load), or None."""
    try:
        import llama_cpp  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - ImportError, or OSError from a library built for another CPU
        return f"{type(exc).__name__}: {exc}"
    return None


def _lib() -> Any:
    """The llama_cpp bindings, initialised once, their log sent to this module's logger (it writes to stderr
    otherwise: every tensor of a model load)."""
    import llama_cpp

    global _log_callback
    with _init_lock:
        if _log_callback is None:
            _log_callback = llama_cpp.llama_log_callback(_forward_log)
            llama_cpp.llama_log_set(_log_callback, ctypes.c_void_p(0))
            llama_cpp.llama_backend_init()
    return llama_cpp


def _forward_log(level: int, text: bytes, _user_data: Any) -> None:
    """llama.cpp's log lines at DEBUG, its errors (GGML_LOG_LEVEL_ERROR, 4) at WARNING: they describe the model
    and its buffers; what matters to a user (a load that failed, a context not made) is raised as an error here."""
    log.log(logging.WARNING if level == 4 else logging.DEBUG, "llama.cpp: %s", text.decode("utf-8", "replace").rstrip())


_init_lock = threading.Lock()
_log_callback: Any = None  # kept referenced: llama.cpp calls it for the life of the process


def _has_amx(lib: Any) -> bool:
    """Whether this llama.cpp build has Intel AMX kernels. Their matrix product crashes the process on Sapphire
    Rapids machines (llama.cpp#20824, seen here with both bundled models), and they are reached only through the
    "extra" weight buffers a model is loaded into, so on such a build the weights stay in plain buffers (this also
    forgoes the weight repacking of other CPUs' builds, which have no AMX)."""
    amx = "AMX_INT8 = 1" in lib.llama_print_system_info().decode("utf-8", "replace")
    if amx:
        log.info("llama.cpp was built with AMX kernels: loading weights without extra buffers (llama.cpp#20824)")
    return amx


@dataclass(frozen=True)
class Sampling:
    """How the next token is chosen: greedy at temperature 0, else temperature and nucleus (top-p) sampling."""

    temperature: float = 0.0
    top_p: float = 1.0


GREEDY = Sampling()


@dataclass
class Request:
    """One sequence to generate: prompt ids, a limit, and an optional callback per new token (False stops it)."""

    ids: Sequence[int]
    max_new_tokens: int
    on_token: Callable[[int], bool] | None = None
    min_new_tokens: int = 0  # end-of-generation tokens are passed over before this many (as transformers' option)
    alternative: Sequence[int] = ()  # a continuation of the prompt to score too (Decoded.alternative_logprob)


@dataclass
class Decoded:
    """What one sequence produced: new tokens (an end-of-generation token not included), their log probabilities,
    and why it ended: ``stop`` (end of generation), ``length`` (the limit) or ``cancelled`` (``on_token`` said so)."""

    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    finish: str = "length"
    done: bool = False
    ended_by_eog: bool = False
    alternative_logprob: float | None = None  # mean log probability per token of Request.alternative


def pick(logits: np.ndarray, sampling: Sampling, rng: np.random.Generator) -> tuple[int, float]:
    """The next token and its log probability under the model (temperature 1, whatever the sampling)."""
    top = float(logits.max())
    shifted = logits - top
    weights = np.exp(shifted)
    log_z = float(np.log(weights.sum()))
    if sampling.temperature <= 0:
        token = int(logits.argmax())
    else:
        probs = np.exp(shifted / sampling.temperature)
        probs /= probs.sum()
        if sampling.top_p < 1.0:
            order = np.argsort(-probs)
            keep = order[: int(np.searchsorted(np.cumsum(probs[order]), sampling.top_p)) + 1]
            token = int(rng.choice(keep, p=probs[keep] / probs[keep].sum()))
        else:
            token = int(rng.choice(len(probs), p=probs))
    return token, float(shifted[token]) - log_z


def _logprob(logits: np.ndarray, token: int) -> float:
    """``token``'s log probability under these logits (temperature 1)."""
    top = float(logits.max())
    return float(logits[token]) - top - float(np.log(np.exp(logits - top).sum()))


class _Context:
    """One llama.cpp context: a KV cache of ``seqs`` sequences of ``per_seq`` tokens each, and a batch to fill."""

    def __init__(self, lib: Any, model: Any, role: str, seqs: int, per_seq: int, threads: int) -> None:
        params = lib.llama_context_default_params()
        params.n_ctx = seqs * per_seq
        params.n_seq_max = seqs
        params.n_batch = params.n_ubatch = max(PREFILL_BATCH, seqs)
        params.n_threads = params.n_threads_batch = threads
        params.no_perf = True
        self.lib, self.role, self.seqs, self.per_seq = lib, role, seqs, per_seq
        self.ctx = lib.llama_init_from_model(model, params)
        if not self.ctx:
            raise RuntimeError(f"llama.cpp could not create a context of {seqs} x {per_seq} tokens")
        self.memory = lib.llama_get_memory(self.ctx)
        self.batch = lib.llama_batch_init(params.n_batch, 0, 1)

    def fits(self, seqs: int, per_seq: int) -> bool:
        return seqs <= self.seqs and per_seq <= self.per_seq

    def clear(self) -> None:
        self.lib.llama_memory_clear(self.memory, True)

    def decode(self, entries: Sequence[tuple[int, int, int, bool]]) -> None:
        """Run (token, position, sequence, wants logits) entries through the model."""
        batch = self.batch
        for i, (token, pos, seq, logits) in enumerate(entries):
            batch.token[i] = token
            batch.pos[i] = pos
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seq
            batch.logits[i] = logits
        batch.n_tokens = len(entries)
        code = self.lib.llama_decode(self.ctx, batch)
        if code != 0:
            raise RuntimeError(f"llama_decode returned {code} for a batch of {len(entries)} tokens")

    def logits(self, index: int, n_vocab: int) -> np.ndarray:
        return np.ctypeslib.as_array(self.lib.llama_get_logits_ith(self.ctx, index), shape=(n_vocab,))

    def close(self) -> None:
        if self.ctx:
            self.lib.llama_batch_free(self.batch)
            self.lib.llama_free(self.ctx)
            self.ctx = None


class GGUFModel:
    """A GGUF model in this process: tokenizer, chat template, the gate that runs it, and its two contexts."""

    def __init__(self, path: Path, threads: int) -> None:
        lib = self._lib = _lib()
        t0 = time.perf_counter()
        params = lib.llama_model_default_params()
        params.n_gpu_layers = 0
        params.use_extra_bufts = not _has_amx(lib)
        self.model = lib.llama_model_load_from_file(str(path).encode(), params)
        if not self.model:
            raise ValueError(f"llama.cpp could not load {path} (not a GGUF model it supports?)")
        self.path, self.threads = path, threads
        self.vocab = lib.llama_model_get_vocab(self.model)
        self.n_vocab = int(lib.llama_vocab_n_tokens(self.vocab))
        self.n_ctx_train = int(lib.llama_model_n_ctx_train(self.model))
        template = lib.llama_model_chat_template(self.model, None)
        self.chat_template = template.decode("utf-8") if template else None
        self.gate = ModelGate(torch_threads=False)
        self._contexts: dict[str, _Context] = {}
        self._rng = np.random.default_rng()
        self.load_seconds = time.perf_counter() - t0

    # --- vocabulary ---------------------------------------------------------------------------------------
    def tokenize(self, text: str, add_special: bool = False) -> list[int]:
        """Ids of ``text``, special tokens written as text read as such; ``add_special``: BOS etc. as the model
        adds them."""
        data = text.encode("utf-8")
        capacity = len(data) + 8
        while True:
            buffer = (self._lib.llama_token * capacity)()
            n = self._lib.llama_tokenize(self.vocab, data, len(data), buffer, capacity, add_special, True)
            if n >= 0:
                return list(buffer[:n])
            capacity = -n

    def piece(self, token: int, special: bool = False) -> bytes:
        """The bytes of one token (a control token is empty unless ``special``)."""
        size = 64
        while True:
            buffer = ctypes.create_string_buffer(size)
            n = self._lib.llama_token_to_piece(self.vocab, token, buffer, size, 0, special)
            if n >= 0:
                return buffer.raw[:n]
            size = -n

    def detokenize(self, ids: Sequence[int], special: bool = False) -> bytes:
        return b"".join(self.piece(t, special) for t in ids)

    def token_text(self, token: int) -> str:
        """A special token's text (``<|im_end|>``), "" for none: what a chat template calls ``eos_token``."""
        if token < 0:
            return ""
        return (self._lib.llama_vocab_get_text(self.vocab, token) or b"").decode("utf-8", "replace")

    def is_end(self, token: int) -> bool:
        return bool(self._lib.llama_vocab_is_eog(self.vocab, token))

    # --- generation (on the gate's thread) -------------------------------------------------------------------
    def run(self, role: str, requests: Sequence[Request], sampling: Sampling = GREEDY) -> list[Decoded]:
        """Generate every request in the ``role`` context (``foreground`` or ``background``): each prompt
        prefilled in batches, then one decode step for all live sequences at a time; the gate may run waiting
        answers between any two (a background call raises :class:`rag.types.Cancelled` there once cancelled)."""
        if any(not r.ids for r in requests):
            raise ValueError("an empty prompt cannot be generated from")
        ctx = self._context(role, len(requests),
                            max(len(r.ids) + max(r.max_new_tokens, len(r.alternative)) for r in requests))
        ctx.clear()
        results = [Decoded(done=r.max_new_tokens <= 0) for r in requests]
        for seq, (request, result) in enumerate(zip(requests, results, strict=True)):
            ids = list(request.ids)
            if result.done:
                continue
            for start in range(0, len(ids), PREFILL_BATCH):
                self.gate.pause_point()
                chunk = ids[start : start + PREFILL_BATCH]
                ctx.decode([(t, start + j, seq, start + j == len(ids) - 1) for j, t in enumerate(chunk)])
            logits = ctx.logits(-1, self.n_vocab)
            if request.alternative:
                result.alternative_logprob = _logprob(logits, request.alternative[0])
            self._accept(request, result, *self._pick(request, result, logits, sampling))
        live = [seq for seq, result in enumerate(results) if not result.done]
        while live:
            self.gate.pause_point()
            ctx.decode([(results[s].tokens[-1], len(requests[s].ids) + len(results[s].tokens) - 1, s, True)
                        for s in live])
            for index, s in enumerate(live):
                self._accept(requests[s], results[s],
                             *self._pick(requests[s], results[s], ctx.logits(index, self.n_vocab), sampling))
            live = [s for s in live if not results[s].done]
        for seq, (request, result) in enumerate(zip(requests, results, strict=True)):
            if len(request.alternative) > 1 and result.alternative_logprob is not None:
                self._score_alternative(ctx, seq, request, result)
        return results

    def _score_alternative(self, ctx: _Context, seq: int, request: Request, result: Decoded) -> None:
        """The mean log probability of ``request.alternative`` as the continuation of the prompt: the answer's
        tokens are dropped from the cache and the alternative's run in one batch (about one decode step's time)."""
        start = len(request.ids)
        self._lib.llama_memory_seq_rm(ctx.memory, seq, start, -1)
        alternative = list(request.alternative)
        ctx.decode([(t, start + j, seq, True) for j, t in enumerate(alternative[:-1])])
        total = result.alternative_logprob or 0.0
        for j, token in enumerate(alternative[1:]):
            total += _logprob(ctx.logits(j, self.n_vocab), token)
        result.alternative_logprob = total / len(alternative)

    def _pick(self, request: Request, result: Decoded, logits: np.ndarray, sampling: Sampling) -> tuple[int, float]:
        token, logprob = pick(logits, sampling, self._rng)
        while len(result.tokens) < request.min_new_tokens and self.is_end(token):
            logits[token] = -np.inf  # the logits are this step's buffer, overwritten by the next decode
            token, logprob = pick(logits, sampling, self._rng)
        return token, logprob

    def _accept(self, request: Request, result: Decoded, token: int, logprob: float) -> None:
        if self.is_end(token):
            result.done, result.finish, result.ended_by_eog = True, "stop", True
            return
        result.tokens.append(token)
        result.logprobs.append(logprob)
        if request.on_token is not None and not request.on_token(token):
            result.done, result.finish = True, "cancelled"
        elif len(result.tokens) >= request.max_new_tokens:
            result.done, result.finish = True, "length"

    def _context(self, role: str, seqs: int, need: int) -> _Context:
        """The ``role`` context, (re)created when it is missing or too small for ``seqs`` x ``need`` tokens."""
        ctx = self._contexts.get(role)
        if ctx is not None and ctx.fits(seqs, need):
            return ctx
        per_seq = max(MIN_CONTEXT, 1 << (need - 1).bit_length())
        if ctx is not None:
            seqs, per_seq = max(seqs, ctx.seqs), max(per_seq, ctx.per_seq)
            ctx.close()
        self._contexts[role] = ctx = _Context(self._lib, self.model, role, seqs, per_seq, self.threads)
        log.debug("llama.cpp %s context: %d sequence(s) x %d tokens", role, seqs, per_seq)
        return ctx


class TextPieces:
    """Token bytes → text as they stream: a character split over two tokens is written once it is whole."""

    def __init__(self, model: GGUFModel) -> None:
        self._model = model
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def __call__(self, token: int) -> str:
        return self._decoder.decode(self._model.piece(token))

    def flush(self) -> str:
        return self._decoder.decode(b"", final=True)


class GGUFTokenCounter(TokenCounter):
    """Counting with the GGUF's own vocabulary and chat template (llama.cpp's tokenizer; no transformers import)."""

    def __init__(self, model: GGUFModel, context_window: int, name: str = "tokenizer") -> None:
        super().__init__(context_window, name)
        self.model = model
        self._formatter = None
        if model.chat_template:
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            vocab, lib = model.vocab, model._lib
            self._formatter = Jinja2ChatFormatter(
                model.chat_template, eos_token=model.token_text(lib.llama_vocab_eos(vocab)),
                bos_token=model.token_text(lib.llama_vocab_bos(vocab)), add_generation_prompt=True,
            )

    def encode(self, text: str, *, add_special: bool = False) -> list[int]:
        return self.model.tokenize(text, add_special)

    def decode(self, ids: Sequence[int]) -> str:
        return self.model.detokenize(ids, special=True).decode("utf-8", "replace")

    @property
    def vocab_size(self) -> int:
        return self.model.n_vocab

    def render(self, messages: Sequence[Message]) -> str:
        if self._formatter is None:
            return plain_transcript(messages)
        return self._formatter(messages=list(messages)).prompt  # type: ignore[arg-type]

    def _prefix(self, text: str, max_tokens: int) -> str:
        ids = self.encode(text)
        head = self.model.detokenize(ids[:max_tokens], special=True)
        if text.encode("utf-8").startswith(head):  # byte-level BPE: the tokens' bytes are the text's
            return head.decode("utf-8", "ignore")  # a character cut in half is left out
        return text[: len(text) * max_tokens // len(ids)]  # other vocabularies: a proportional cut, then shrunk


_models: dict[tuple[str, int], GGUFModel] = {}
_models_lock = threading.Lock()


def load_gguf(path: Path, threads: int) -> GGUFModel:
    """The model of a GGUF file, loaded once per (file, threads) in this process."""
    key = (str(Path(path).resolve()), threads)
    with _models_lock:
        if key not in _models:
            _models[key] = GGUFModel(Path(path), threads)
        return _models[key]
