"""Who runs a local model's shared weights: one thread of their own, answers first, background work in the gaps.

Why it is shaped this way:
- **One thread runs every call on the weights** (answers, summaries, streamed or not). PyTorch's CPU kernels use
  OpenMP, and libgomp gives every thread that runs a parallel region a team of its own. When it manages more threads
  than there are CPUs it shortens its spin-wait ("throttled"), so the threads of the team doing the work sleep and
  wake between the ops of every decode step. With answers and summaries each on their calling thread, a parked
  summary's idle team alone made every decode step of an answer ~30% slower (``bench/summaries.py yield``, Dec 3);
  with one model thread there is one team, whatever the number of callers.
- **Answers first.** A call from a thread inside :meth:`ModelGate.background` (the summary pass) is background work:
  at the entry of every decoder layer it checks for waiting foreground calls and runs them there, on the same
  thread, before its own next layer. A query therefore waits at most for the layer in flight (prefill is chunked for
  that, :mod:`rag.models.batched_decode`), and the background call resumes exactly where it stopped, its cache
  intact. Foreground calls run one at a time in arrival order; background calls run when no answer waits.
- Background is a property of the calling thread (:meth:`ModelGate.background`), so the summariser needs no special
  LLM object and the LLM interface stays the same for every backend; remote backends simply have no gate.
- A background block may carry a ``cancel`` callable: the next decoder layer raises :class:`rag.types.Cancelled`,
  so a server shutting down does not wait for a summary call to finish (tens of seconds on a CPU).
- With ``torch_threads`` (the transformers runtime) the model thread takes the calling thread's
  ``torch.get_num_threads()`` for each call, so ``torch.set_num_threads`` keeps working as it does for code that
  calls the model directly. llama.cpp sets its threads per context (``RAG_LLM_THREADS``), so its gate leaves them.
- The pause points are the backend's to place: a transformers model gets one before every decoder layer
  (:meth:`ModelGate.install`); the llama.cpp runtime calls :meth:`ModelGate.pause_point` between prefill batches and
  between decode steps (:mod:`rag.models.llamacpp_runtime`).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from rag.types import Cancelled

R = TypeVar("R")


@dataclass
class ModelCall(Generic[R]):
    """One call queued for the model thread; :meth:`wait` returns its result or raises its error."""

    fn: Callable[[], R]
    cancel: Callable[[], bool] | None  # None: a foreground call
    threads: int  # the caller's torch intra-op threads (0: the backend sets its own)
    done: threading.Event = field(default_factory=threading.Event)
    result: R | None = None
    error: BaseException | None = None

    def run(self) -> None:
        try:
            if self.cancel is not None and self.cancel():
                raise Cancelled("background work cancelled")
            self.result = self.fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread by wait()
            self.error = exc
        finally:
            self.done.set()

    def wait(self) -> R:
        self.done.wait()
        if self.error is not None:
            raise self.error
        return self.result  # type: ignore[return-value]


class ModelGate:
    """Runs every call on one model's weights on one thread: foreground calls in order, background calls in the
    gaps, pausing at every decoder layer for the foreground calls that arrived meanwhile."""

    def __init__(self, name: str = "llm-model", *, torch_threads: bool = True) -> None:
        self._torch_threads = torch_threads
        self._foreground: deque[ModelCall[Any]] = deque()
        self._background: deque[ModelCall[Any]] = deque()
        self._changed = threading.Condition()
        self._caller = threading.local()
        self._running_background: ModelCall[Any] | None = None
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[], R]) -> ModelCall[R]:
        """Queue ``fn()`` for the model thread, as background work if this thread is in :meth:`background`."""
        call = ModelCall(fn, getattr(self._caller, "background", None), self._caller_threads())
        with self._changed:
            (self._foreground if call.cancel is None else self._background).append(call)
            self._changed.notify_all()
        return call

    def run(self, fn: Callable[[], R]) -> R:
        """``fn()``, computed on the model thread (see :meth:`submit`)."""
        return self.submit(fn).wait()

    @contextmanager
    def background(self, cancel: Callable[[], bool] | None = None) -> Iterator[None]:
        """Mark the calls this thread makes inside the block as background work, stopped when ``cancel()``."""
        previous = getattr(self._caller, "background", None)
        self._caller.background = cancel or (lambda: False)
        try:
            yield
        finally:
            self._caller.background = previous

    def in_background(self) -> bool:
        return getattr(self._caller, "background", None) is not None

    def _serve(self) -> None:
        while True:
            with self._changed:
                while not (self._foreground or self._background):
                    self._changed.wait()
                call = (self._foreground or self._background).popleft()
            self._use_threads(call.threads)
            self._running_background = call if call.cancel is not None else None
            try:
                call.run()
            finally:
                self._running_background = None

    def pause_point(self) -> None:
        """At a decoder layer of a background call: run the foreground calls waiting (raise if it was cancelled).
        A no-op in a foreground call and on any thread but the model thread (code calling the weights directly)."""
        running = self._running_background
        if running is None or threading.current_thread() is not self._thread:
            return
        assert running.cancel is not None
        if running.cancel():
            raise Cancelled("background work cancelled")
        while self._foreground:
            with self._changed:
                call = self._foreground.popleft()
            self._running_background = None  # the foreground call's own layers must not pause
            self._use_threads(call.threads)
            try:
                call.run()
            finally:
                self._running_background = running
                self._use_threads(running.threads)

    def _caller_threads(self) -> int:
        if not self._torch_threads:
            return 0
        import torch

        return torch.get_num_threads()

    @staticmethod
    def _use_threads(threads: int) -> None:
        if not threads:
            return
        import torch

        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)

    def install(self, model: Any) -> int:
        """Put a pause point before every decoder layer of ``model``; returns how many layers got one.

        Layers are found by class name (``Qwen2DecoderLayer``, ``LlamaDecoderLayer``, …), which every causal LM in
        transformers follows; a model without any still works, pausing only between calls."""
        layers = [m for m in model.modules() if type(m).__name__.endswith("DecoderLayer")]
        for layer in layers:
            layer.register_forward_pre_hook(lambda _module, _args: self.pause_point())
        return len(layers)
