"""Admission control: a bounded queue in front of the model, and a bound on retrievals running at once.

The local model runs one generation at a time (a lock in the backend). Without a gate, every waiting query would
sit in a threadpool thread blocked on that lock, and forty of them would exhaust the threadpool, so retrieval,
document listings and health checks would queue behind generation. Here waiting requests wait on the event loop
(free), only ``slots`` of them hold a thread, and beyond ``max_waiting`` the server answers 503 with Retry-After
instead of building an unbounded backlog. Against vLLM (which batches), the slots are many.

Only work that needs the model queues: a question that retrieval finds nothing relevant for is answered with the
abstention before the queue (:func:`abstention`), and a request whose client left while it waited gives its slot
back without generating (:func:`admit`).

Retrievals are bounded too (:class:`RetrievalLimit`): each one holds the GIL for its Python parts (SQL rows, fusion,
JSON), so twenty of them in threads on a 2-core machine run no faster than two, and every other request, even
``/healthz`` on the event loop, waits its turn for the GIL behind them (bench/reliability.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from api.errors import APIError

if TYPE_CHECKING:
    from rag.engine import RAG
    from rag.types import Answer, Hit

log = logging.getLogger(__name__)
T = TypeVar("T")

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


class Slot:
    """One acquired slot; ``release`` is idempotent, so every exit path may call it."""

    def __init__(self, sem: asyncio.Semaphore | None) -> None:
        self._sem = sem

    def release(self) -> None:
        if self._sem is not None:
            self._sem.release()
            self._sem = None


NO_SLOT = Slot(None)
"""What a response that never queued for the model (an abstention) releases: nothing."""


class RetrievalLimit:
    """At most ``slots`` retrievals in threads at once; the others wait on the event loop, holding no thread."""

    def __init__(self, slots: int | None) -> None:
        self.slots = slots or os.cpu_count() or 2
        self._sem = asyncio.Semaphore(self.slots)

    async def run(self, work: Callable[[], T]) -> T:
        async with self._sem:
            return await run_in_threadpool(work)


def gate_for(backend: str) -> LLMGate:
    return LLMGate(LOCAL_SLOTS if backend == "local" else REMOTE_SLOTS)


async def admit(gate: LLMGate, request: Request) -> Slot:
    """A slot for ``request``, unless its client goes away first: then the request leaves the queue at once with
    499 (nginx's "client closed request") instead of generating an answer for nobody when its turn comes."""
    waiting = asyncio.ensure_future(gate.acquire())
    leaving = asyncio.ensure_future(_disconnect(request))
    try:
        await asyncio.wait((waiting, leaving), return_when=asyncio.FIRST_COMPLETED)
    finally:  # also when this request is cancelled itself
        leaving.cancel()
        waiting.cancel()  # a no-op once the slot is acquired
    if not leaving.done() or leaving.cancelled():
        return waiting.result()  # the slot, or the 503 of a full queue
    if waiting.done() and not waiting.cancelled() and waiting.exception() is None:
        waiting.result().release()  # acquired at the moment the client left
    log.info("%s %s: the client left while waiting for the model", request.method, request.url.path)
    raise APIError(499, "the client closed the request while it waited for the model", "client_closed_request")


async def _disconnect(request: Request) -> None:
    """Returns when the client closes the connection. The body has been read, so the next message is the
    disconnect; waiting for it also resumes reading the socket, which is how the server notices the close."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def abstention(
    rag: RAG, limit: RetrievalLimit, question: str, top_k: int | None, collection: str, mode: str | None,
    path_prefix: str | None = None, document_ids: list[int] | None = None,
) -> tuple[list[Hit], Answer | None]:
    """:meth:`RAG.evidence` within the retrieval limit, before queueing for the LLM: the hits, and the abstention
    when they hold nothing relevant. A question that does go to the model passes these hits on
    (``RAG.chat(..., hits=...)``), so it is not retrieved twice."""
    return await limit.run(lambda: rag.evidence(question, top_k, collection, mode=mode, path_prefix=path_prefix,
                                                document_ids=document_ids))
