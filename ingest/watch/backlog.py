"""The changed paths of one watched folder, waiting to be applied: debounced, batched and bounded.

Why a set of paths and not a queue of events: what ingestion needs is which paths to look at again, never the
history of each (create, ten writes, close and a rename of one file are one look at its final state), so a burst
of any size costs one entry per path, and the order of events stops mattering. Bounded: past ``limit`` paths the
set is dropped for a rescan of the whole folder (a hash per file, as ``rag ingest`` does), so memory stays flat
whatever lands in the folder.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

Signature = tuple[int, int]
"""A file's (size, mtime in ns) when it was last found still being written."""


@dataclass
class _Entry:
    first: float  # when the path became dirty (since it was last applied)
    last: float  # its latest event
    signature: Signature | None = None


@dataclass(frozen=True)
class Taken:
    """What one batch applies: the whole folder (``rescan``) and/or these paths, each with the signature it had when
    last held back (``None``: never)."""

    rescan: bool
    paths: dict[Path, Signature | None]


class Backlog:
    """Thread-safe: the observer's thread adds, the watcher's thread takes."""

    def __init__(self, limit: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self._clock = clock
        self._lock = threading.Lock()
        self._paths: dict[Path, _Entry] = {}
        self._rescan_since: float | None = None
        self._applying = 0  # paths of the batch taken and not finished (a whole-folder scan counts as one)
        self.last_event: float | None = None
        self.overflows = 0

    def __len__(self) -> int:
        """Changes not applied yet: waiting, or in the batch being applied."""
        with self._lock:
            return len(self._paths) + (self._rescan_since is not None) + self._applying

    def add(self, path: Path) -> None:
        """Note that ``path`` changed (a file or a folder; created, written, deleted, or one end of a move)."""
        with self._lock:
            now = self._clock()
            self.last_event = now
            entry = self._paths.get(path)
            if entry is not None:
                entry.last, entry.signature = now, None
            elif self._rescan_since is None:
                if len(self._paths) >= self.limit:
                    self._paths.clear()
                    self._rescan_since = now
                    self.overflows += 1
                else:
                    self._paths[path] = _Entry(now, now)

    def rescan(self) -> None:
        """Ask for the whole folder to be compared with the collection (at start, after lost events)."""
        with self._lock:
            self._paths.clear()
            if self._rescan_since is None:
                self._rescan_since = self._clock()

    def hold(self, path: Path, signature: Signature) -> None:
        """Give back a file still being written: it is looked at again once quiet for another debounce."""
        with self._lock:
            if self._rescan_since is not None:
                return
            now = self._clock()
            entry = self._paths.setdefault(path, _Entry(now, now))
            entry.last, entry.signature = now, signature

    def take(self, debounce_s: float, max_delay_s: float, max_paths: int) -> Taken | None:
        """The next batch, or None while nothing is due.

        Everything is due once the folder has had no event for ``debounce_s`` (a burst ends as one batch); under
        events that never pause, paths dirty for ``max_delay_s`` go anyway if they themselves are quiet. At most
        ``max_paths``, oldest first; the rest stay for the next batch."""
        with self._lock:
            now = self._clock()
            quiet = self.last_event is None or now - self.last_event >= debounce_s
            if self._rescan_since is not None:
                if not (quiet or now - self._rescan_since >= max_delay_s):
                    return None
                self._rescan_since = None
                self._applying = 1
                return Taken(True, {})
            due = [
                (path, entry) for path, entry in self._paths.items()
                if now - entry.last >= debounce_s and (quiet or now - entry.first >= max_delay_s)
            ]
            if not due:
                return None
            due.sort(key=lambda item: item[1].first)
            taken = {path: entry.signature for path, entry in due[:max_paths]}
            for path in taken:
                del self._paths[path]
            self._applying = len(taken)
            return Taken(False, taken)

    def finish(self) -> None:
        """The batch taken last is applied (or given back with :meth:`add`, :meth:`hold` or :meth:`rescan`)."""
        with self._lock:
            self._applying = 0
