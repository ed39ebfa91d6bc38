"""Who runs a local model's shared weights: answers first, background work (summaries) in the gaps.

Why it is shaped this way:
- On the embedded default one CPU model writes both answers and the background summaries. A summary call takes tens
  of seconds there, so a query queued behind it on a plain lock would wait that long. Instead, foreground calls
  (answers) take a lock among themselves as before, and background calls take no part in it: they pause, at the
  entry of every decoder layer, while any foreground call is waiting or running. A query therefore waits at most
  for the layer the background call is computing when it arrives (measured in ``bench/summaries.py yield``),
  prefill included, and the paused call resumes exactly where it stopped, its cache intact.
- Background is a property of the calling thread (:meth:`ModelGate.background`), so the summariser needs no
  special LLM object and the LLM interface stays the same for every backend; remote backends simply have no gate.
- Background calls run one at a time among themselves (their own lock): two of them would only halve each other.
- A background block may carry a ``cancel`` callable: the next pause point raises :class:`rag.types.Cancelled`, so a
  server shutting down does not wait for a summary call to finish (tens of seconds on a CPU).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rag.types import Cancelled

WAKE_S = 0.5
"""How often a parked background call looks at its cancel flag."""


class ModelGate:
    """Serialises foreground calls on shared weights and parks background calls while any foreground one is live."""

    def __init__(self) -> None:
        self._foreground = threading.Lock()
        self._background = threading.Lock()
        self._changed = threading.Condition()
        self._live_foreground = 0  # waiting for or holding the foreground lock
        self._thread = threading.local()

    @contextmanager
    def use(self) -> Iterator[None]:
        """Hold the weights for one generation, as a foreground call unless this thread is in :meth:`background`."""
        if self.in_background():
            with self._background:
                self.pause_point()
                yield
            return
        with self._changed:
            self._live_foreground += 1
        try:
            with self._foreground:
                yield
        finally:
            with self._changed:
                self._live_foreground -= 1
                if not self._live_foreground:
                    self._changed.notify_all()

    @contextmanager
    def background(self, cancel: Callable[[], bool] | None = None) -> Iterator[None]:
        """Mark the calls this thread makes inside the block as background work, stopped when ``cancel()``."""
        previous = getattr(self._thread, "background", None)
        self._thread.background = cancel or (lambda: False)
        try:
            yield
        finally:
            self._thread.background = previous

    def in_background(self) -> bool:
        return getattr(self._thread, "background", None) is not None

    def pause_point(self) -> None:
        """Block a background thread while foreground calls are live (raise if it was cancelled); a no-op for any
        other thread."""
        cancel = getattr(self._thread, "background", None)
        if cancel is None:
            return
        with self._changed:
            while True:
                if cancel():
                    raise Cancelled("background work cancelled")
                if not self._live_foreground:
                    return
                self._changed.wait(WAKE_S)

    def install(self, model: Any) -> int:
        """Put a pause point before every decoder layer of ``model``; returns how many layers got one.

        Layers are found by class name (``Qwen2DecoderLayer``, ``LlamaDecoderLayer``, …), which every causal LM in
        transformers follows; a model without any still works, pausing only between calls."""
        layers = [m for m in model.modules() if type(m).__name__.endswith("DecoderLayer")]
        for layer in layers:
            layer.register_forward_pre_hook(lambda _module, _args: self.pause_point())
        return len(layers)
