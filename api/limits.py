"""Per-key limits, so one client cannot starve the others: requests per minute, and answers in progress at once.

Both are counted in this process, on the event loop (no locks needed): with N replicas behind a load balancer a key
gets up to N times each limit. Past either, 429 with ``Retry-After``. A limit of 0 is no limit; with authentication
off there are no keys to count.

- Requests per minute: a sliding window (the times of the key's requests in the last 60 s), exact where a fixed
  window lets a burst of twice the limit through at a minute's edge; ``Retry-After`` is when the oldest leaves it.
- Answers at once: held from admission until the response has ended (a stream's last event included), released
  whatever way the request ends.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from api.errors import APIError

WINDOW_S = 60.0
ANSWER_RETRY_S = 2
"""Retry-After of a key at its concurrent-answer limit: about the time a short answer takes."""


class KeyLimits:
    def __init__(self, per_minute: int, concurrent_answers: int, *, enabled: bool = True) -> None:
        self.per_minute = per_minute if enabled else 0
        self.concurrent_answers = concurrent_answers if enabled else 0
        self._requests: dict[str, deque[float]] = {}
        self._answering: dict[str, int] = {}

    def admit(self, key: str, now: float | None = None) -> None:
        """Count one request of ``key``; 429 when it has made ``per_minute`` in the last minute."""
        if not self.per_minute:
            return
        now = time.monotonic() if now is None else now
        times = self._requests.setdefault(key, deque())
        while times and times[0] <= now - WINDOW_S:
            times.popleft()
        if len(times) >= self.per_minute:
            wait = math.ceil(times[0] + WINDOW_S - now)
            raise APIError(429, f"this API key made {self.per_minute} requests in the last minute (its limit); retry "
                           f"in {wait}s", headers={"Retry-After": str(max(wait, 1))})
        times.append(now)

    @asynccontextmanager
    async def answering(self, key: str) -> AsyncIterator[None]:
        """Hold one of ``key``'s answer slots for the block; 429 when all are taken."""
        if not self.concurrent_answers:
            yield
            return
        held = self._answering.get(key, 0)
        if held >= self.concurrent_answers:
            raise APIError(429, f"this API key has {held} answers in progress (its limit); retry when one ends",
                           headers={"Retry-After": str(ANSWER_RETRY_S)})
        self._answering[key] = held + 1
        try:
            yield
        finally:
            self._answering[key] -= 1
