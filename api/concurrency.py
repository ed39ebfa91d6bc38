"""Admission control for requests that generate with the LLM: a bounded queue in front of the model.

The local model runs one generation at a time (a lock in the backend). Without a gate, every waiting query would
sit in a threadpool thread blocked on that lock, and forty of them would exhaust the threadpool, so retrieval,
document listings and health checks would queue behind generation. Here waiting requests wait on the event loop
(free), only ``slots`` of them hold a thread, and beyond ``max_waiting`` the server answers 503 with Retry-After
instead of building an unbounded backlog. Against vLLM (which batches), the slots are many.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from api.errors import APIError

LOCAL_SLOTS = 2  # one generating, one retrieving/budgeting the next prompt meanwhile
REMOTE_SLOTS = 32
MAX_WAITING = 64


class LLMGate:
    """At most ``slots`` generation requests in progress, at most ``max_waiting`` queued behind them."""

    def __init__(self, slots: int, max_waiting: int = MAX_WAITING) -> None:
        self.slots = slots
        self.max_waiting = max_waiting
        self.waiting = 0
        self._sem = asyncio.Semaphore(slots)

    async def acquire(self) -> Slot:
        """Wait for a slot (or refuse with 503 when the queue is full); release it exactly once when done."""
        if self.waiting >= self.max_waiting:
            raise APIError(503, f"the model is busy ({self.waiting} requests waiting); retry shortly",
                           headers={"Retry-After": "5"})
        self.waiting += 1
        try:
            await self._sem.acquire()
        finally:
            self.waiting -= 1
        return Slot(self._sem)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[Slot]:
        held = await self.acquire()
        try:
            yield held
        finally:
            held.release()


class Slot:
    """One acquired slot; ``release`` is idempotent, so every exit path may call it."""

    def __init__(self, sem: asyncio.Semaphore) -> None:
        self._sem: asyncio.Semaphore | None = sem

    def release(self) -> None:
        if self._sem is not None:
            self._sem.release()
            self._sem = None


def gate_for(backend: str) -> LLMGate:
    return LLMGate(LOCAL_SLOTS if backend == "local" else REMOTE_SLOTS)
