"""Bridging the engine's blocking iterators (``RAG.stream``, ``LLM.stream``) to async streaming responses.

Each ``next()`` runs in the threadpool, so a slow model never blocks the event loop. The first item is pulled
*before* the response starts (``prime``): retrieval and prompt budgeting happen there, and their errors still
become a proper status code instead of a 200 stream that breaks. When the client goes away, the iterator is
closed (after any ``next()`` in flight returns), which stops local generation at the next token.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Generic, TypeVar

import anyio
from starlette.concurrency import run_in_threadpool
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from api.sse import SSE_HEADERS, SSE_MEDIA_TYPE

T = TypeVar("T")
log = logging.getLogger(__name__)

_DONE = object()


class BlockingStream(Generic[T]):
    """A blocking iterator consumed from async code, one ``next()`` per threadpool call, closable safely."""

    def __init__(self, iterator: Iterator[T]) -> None:
        self._it = iterator
        self._lock = threading.Lock()  # close() must wait for a next() in flight: generators are not reentrant
        self._closed = False
        self._head: list[T] = []

    def _next(self) -> Any:
        with self._lock:
            if self._closed:
                return _DONE
            try:
                return next(self._it)
            except StopIteration:
                return _DONE

    def _close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            close = getattr(self._it, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:  # closing must not raise into the server; the stream is over anyway
                    log.debug("closing a stream failed", exc_info=True)

    async def prime(self) -> BlockingStream[T]:
        """Pull the first item now, so errors before the first token surface as exceptions here."""
        try:
            item = await run_in_threadpool(self._next)
        except BaseException:
            await run_in_threadpool(self._close)
            raise
        if item is not _DONE:
            self._head.append(item)
        return self

    async def __aiter__(self) -> AsyncIterator[T]:
        try:
            while self._head:
                yield self._head.pop(0)
            while True:
                item = await run_in_threadpool(self._next)
                if item is _DONE:
                    return
                yield item
        finally:
            # Runs on normal end, on error and on client disconnect. After a cancellation nothing may be awaited
            # here, so the close happens in its own thread (it waits for a next() in flight, then stops the model).
            threading.Thread(target=self._close, name="stream-close", daemon=True).start()


class GatedStreamingResponse(StreamingResponse):
    """An SSE response that gives its LLM slot back when it ends, however it ends (done, error, disconnect).

    The body generator is closed here too, so the model stops at once rather than when it is garbage-collected.
    """

    def __init__(self, content: AsyncIterator[str], release: Callable[[], None]) -> None:
        super().__init__(content, media_type=SSE_MEDIA_TYPE, headers=SSE_HEADERS)
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                aclose = getattr(self.body_iterator, "aclose", None)
                if aclose is not None:
                    await aclose()
            self._release()
