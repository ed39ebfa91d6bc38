"""Calls made at about the same time from several threads, run as one batch by one of them.

Why: a decode step reads every weight of a local model whatever the batch, so several sequences decode for less
than the sum of their single costs (on this CPU a batch of 4 cost ~3.3x one sequence per step: 1.29x the summaries
per minute, ``bench/summaries.py throughput``; more on a GPU), and the summary pass's threads should share generate
calls instead of queueing for the model one by one. Each thread keeps a plain blocking call (``batcher(item)``); the first caller of
a round becomes its leader, waits briefly for the others, runs the batch and hands each caller its result. No extra
thread exists, so the leader's thread-local state (the background mark of :class:`~rag.models.gate.ModelGate`, its
cancel flag) applies to the whole batch.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

GATHER_S = 0.25
"""How long a leader waits for more calls before running a batch that is not full (generation takes seconds)."""


@dataclass
class _Slot(Generic[T, R]):
    item: T
    result: R | None = None
    error: BaseException | None = None
    done: bool = False
    taken: bool = False


class MicroBatcher(Generic[T, R]):
    """``batcher(item)`` returns ``run([..., item, ...])``'s answer for ``item``; up to ``max_batch`` calls that
    arrive within :data:`GATHER_S` of each other (or while a batch is running) share one ``run``."""

    def __init__(self, run: Callable[[list[T]], list[R]], max_batch: int, gather_s: float = GATHER_S) -> None:
        self._run = run
        self.max_batch = max(1, max_batch)
        self.gather_s = gather_s
        self._queue: list[_Slot[T, R]] = []
        self._leading = False
        self._changed = threading.Condition()
        self.batches = self.calls = 0  # counters, for logs and benchmarks (calls / batches = mean batch size)

    def __call__(self, item: T) -> R:
        slot: _Slot[T, R] = _Slot(item)
        with self._changed:
            self._queue.append(slot)
            self._changed.notify_all()
            while not slot.taken and (self._leading or self._queue[0] is not slot):
                self._changed.wait()
            batch = None if slot.taken else self._gather()  # taken: another thread's batch carries this call
        if batch is not None:
            self._execute(batch)
        return self._wait(slot)

    def _gather(self) -> list[_Slot[T, R]]:
        """As leader (lock held): wait for a full batch or a quiet moment, then take the batch off the queue."""
        self._leading = True
        deadline = time.monotonic() + self.gather_s
        while len(self._queue) < self.max_batch and (left := deadline - time.monotonic()) > 0:
            self._changed.wait(left)
        batch, self._queue[:] = self._queue[: self.max_batch], self._queue[self.max_batch :]
        for s in batch:
            s.taken = True
        self.batches += 1
        self.calls += len(batch)
        return batch

    def _execute(self, batch: list[_Slot[T, R]]) -> None:
        try:
            results = self._run([s.item for s in batch])
            for s, r in zip(batch, results, strict=True):
                s.result = r
        except BaseException as exc:  # noqa: BLE001 - every caller of the batch gets it
            for s in batch:
                s.error = exc
        finally:
            with self._changed:
                for s in batch:
                    s.done = True
                self._leading = False
                self._changed.notify_all()

    def _wait(self, slot: _Slot[T, R]) -> R:
        with self._changed:
            while not slot.done:
                self._changed.wait()
        if slot.error is not None:
            raise slot.error
        return slot.result  # type: ignore[return-value]
