"""Watched folders: file events become batches of the same incremental ingestion as ``rag ingest``.

How a change travels: watchdog's observer thread notes each changed path in the folder's :class:`Backlog` (nothing
else: a burst of 10,000 files costs 10,000 set entries); the watcher's thread takes a batch once the folder is quiet
(``RAG_WATCH_DEBOUNCE_S``, or ``RAG_WATCH_MAX_DELAY_S`` under a stream of events), looks at the paths again
(:mod:`ingest.watch.changes`), and hands the files to visit and the paths gone to ``apply`` — the engine's ingestion
in this process, or tasks for ``rag worker`` processes with a broker. Ingestion diffs by content hash, so an
unchanged file costs a hash and a renamed one moves its document (``ingest/moves.py``).

Restart-safe: every start of a folder begins with a whole-folder scan (the hash diff of ``rag ingest``), so what
changed while nothing watched is applied; a batch commits per document, so a crash loses only the batch in hand,
which the next start's scan finds again. Events that are lost (the backlog overflowed, or the kernel's inotify queue)
end in the same scan.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.api import BaseObserver, ObservedWatch

from ingest.discover import IgnoreRules
from ingest.watch.backlog import Backlog, Taken
from ingest.watch.changes import Planner
from ingest.watch.observers import Kind, OverflowSignal, choose_kind, make_observer, observer_name
from rag.settings import Settings, WatchedFolder
from rag.store.store import Store
from rag.types import Cancelled, WatchState, WatchStatus, utcnow

log = logging.getLogger(__name__)

Apply = Callable[[str, list[Path], list[int], Callable[[], bool]], dict[str, int]]
"""``apply(collection, paths, drop, should_cancel)``: ingest ``paths`` (files to visit, paths of stored documents that
are gone), remove the documents ``drop``; returns files per outcome."""

EVENTS = [
    FileCreatedEvent, FileModifiedEvent, FileClosedEvent, FileDeletedEvent, FileMovedEvent,
    DirCreatedEvent, DirDeletedEvent, DirMovedEvent,
]
"""What is watched: no opens, reads or attribute changes, and no "folder modified" (it only repeats its files' news)."""
TICK_S = 0.1
MISSING_RETRY_S = 5.0
MAX_BACKOFF_S = 60.0
_CHANGES = ("added", "updated", "moved", "removed", "queued")


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or path.is_relative_to(folder)


class _Folder:
    """One watched folder: its backlog, its planner and what its status shows."""

    def __init__(self, spec: WatchedFolder, settings: Settings, store: Store) -> None:
        self.spec = spec
        self.data_dir = settings.data_dir
        self.patterns = settings.ignore_patterns
        self.backlog = Backlog(settings.watch_max_backlog)
        self.planner = Planner(store, spec.path, spec.collection, settings.data_dir, settings.ignore_patterns,
                               settings.watch_debounce_s)
        self.rules = IgnoreRules(spec.path, self.patterns)  # the events' filter; read again when a .ragignore changes
        self.watch: ObservedWatch | None = None
        self.kind: Kind | None = None
        self.observer = ""
        self.state: WatchState = "starting"
        self.error: str | None = None
        self.last_event: str | None = None
        self.last_change: str | None = None
        self.batches = 0
        self.rescans = 0
        self.counts: dict[str, int] = {}
        self.failures = 0
        self.retry_at = 0.0

    def note(self, path: Path) -> None:
        """A file event's path: kept for the next batch unless it is one a walk of the folder would skip."""
        root = self.spec.path
        if not _inside(path, root) or _inside(path, self.data_dir):
            return
        self.last_event = utcnow().isoformat()
        if path.name == ".ragignore":  # what the folder holds changes: its folder is looked at again, whole
            self.rules = IgnoreRules(root, self.patterns)
            self.backlog.add(path.parent)
        elif path == root or not self.rules.ignored(path):
            self.backlog.add(path)

    def status(self) -> WatchStatus:
        return WatchStatus(
            path=str(self.spec.path), collection=self.spec.collection, state=self.state, observer=self.observer,
            backlog=len(self.backlog), last_event=self.last_event, last_change=self.last_change, batches=self.batches,
            rescans=self.rescans, counts=dict(self.counts), error=self.error,
        )


class _Handler(FileSystemEventHandler):
    def __init__(self, folder: _Folder) -> None:
        self.folder = folder

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_synthetic:  # the contents of a folder moved or created whole: its own event covers them
            return
        for raw in (event.src_path, event.dest_path):
            if raw:
                self.folder.note(Path(os.fsdecode(raw)))


class Watcher:
    """Keeps collections in line with folders until :meth:`stop`; :meth:`status` says how each folder stands."""

    def __init__(self, store: Store, settings: Settings, folders: list[WatchedFolder], apply: Apply,
                 prepare: Callable[[], object] | None = None) -> None:
        """``prepare``: loads what ``apply`` needs (the embedder), first thing in the watcher's thread, so the first
        change does not wait for it."""
        self.settings = settings
        self._apply = apply
        self._prepare = prepare
        self._folders = [_Folder(spec, settings, store) for spec in dict.fromkeys(folders)]
        self._observers: dict[Kind, BaseObserver] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._overflow = OverflowSignal(self._events_lost)

    def start(self) -> None:
        """Watch every folder (each begins with its catch-up scan, in the watcher's thread) and return."""
        self._overflow.install()
        for folder in self._folders:
            self._schedule(folder)
        self._thread = threading.Thread(target=self._run, name="watcher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = 30.0) -> None:
        """Stop noticing changes and end the batch in hand (it stops after the file it is on: what was committed
        stays, the rest is found by the next start's scan)."""
        self._stop.set()
        for observer in self._observers.values():
            observer.stop()
        for observer in self._observers.values():
            observer.join(timeout)
        if self._thread is not None:
            self._thread.join(timeout)
        self._overflow.remove()

    def status(self) -> list[WatchStatus]:
        return [folder.status() for folder in self._folders]

    # --- observers ------------------------------------------------------------------------------------
    def _observer(self, kind: Kind) -> BaseObserver:
        observer = self._observers.get(kind)
        if observer is None:
            observer = self._observers[kind] = make_observer(kind, self.settings.watch_poll_s)
            observer.start()
        return observer

    def _schedule(self, folder: _Folder) -> None:
        """Start noticing the folder's changes, then ask for its catch-up scan; a missing folder is looked for again
        every few seconds (an unmounted share keeps its documents meanwhile)."""
        root = folder.spec.path
        if not root.is_dir():
            self._missing(folder)
            return
        kind = choose_kind(self.settings.watch_observer, root)
        try:
            folder.watch = self._observer(kind).schedule(_Handler(folder), str(root), recursive=True,
                                                         event_filter=EVENTS)  # type: ignore[arg-type]
        except OSError as exc:
            if kind == "polling" or self.settings.watch_observer == "native":
                log.error("cannot watch %s: %s", root, exc)
                self._failed(folder, f"cannot watch {root}: {exc}")
                return
            log.warning("%s cannot be watched natively (%s): polled every %gs instead", root, exc,
                        self.settings.watch_poll_s)
            kind = "polling"
            folder.watch = self._observer(kind).schedule(_Handler(folder), str(root), recursive=True,
                                                         event_filter=EVENTS)  # type: ignore[arg-type]
        folder.kind, folder.observer = kind, observer_name(self._observers[kind])
        folder.state, folder.error = "scanning", None
        folder.backlog.rescan()
        log.info("watching %s for collection '%s' (%s)", root, folder.spec.collection, folder.observer)

    def _missing(self, folder: _Folder) -> None:
        if folder.watch is not None and folder.kind is not None:
            self._observers[folder.kind].unschedule(folder.watch)
            folder.watch = None
        if folder.state != "missing":
            log.warning("watched folder %s is missing: its documents stay; looked for again every %gs",
                        folder.spec.path, MISSING_RETRY_S)
        folder.state, folder.error, folder.observer = "missing", "no such folder", ""
        folder.retry_at = time.monotonic() + MISSING_RETRY_S

    @staticmethod
    def _failed(folder: _Folder, error: str) -> None:
        folder.state, folder.error = "failed", error
        folder.failures += 1
        folder.retry_at = time.monotonic() + min(MAX_BACKOFF_S, 2.0**folder.failures)

    def _events_lost(self) -> None:
        for folder in self._folders:
            if folder.kind == "native":
                folder.backlog.rescan()

    # --- batches --------------------------------------------------------------------------------------
    def _run(self) -> None:
        if self._prepare is not None:
            try:
                self._prepare()
            except Exception:  # the batches will fail with the same reason, shown in the status
                log.exception("loading the ingestion of watched folders failed")
        while not self._stop.is_set():
            for folder in self._folders:
                if self._stop.is_set():
                    break
                self._step(folder)
            self._stop.wait(TICK_S)

    def _step(self, folder: _Folder) -> None:
        if time.monotonic() < folder.retry_at:
            return
        if folder.watch is None:  # missing, or it could not be watched: try again
            self._schedule(folder)
            return
        s = self.settings
        taken = folder.backlog.take(s.watch_debounce_s, s.watch_max_delay_s, s.watch_batch_files)
        if taken is None:
            if folder.state != "failed":
                folder.state = "watching"
            return
        if not folder.spec.path.is_dir():
            folder.backlog.finish()  # its changes wait for the folder's return, whose scan covers them
            self._missing(folder)
            return
        folder.state = "scanning" if taken.rescan else "applying"
        try:
            self._batch(folder, taken)
        except Cancelled:  # stopping: the next start's scan finds what this batch did not apply
            return
        except Exception as exc:  # the folder retries with backoff; the watcher goes on
            log.exception("a batch of watched folder %s failed", folder.spec.path)
            for path in taken.paths:
                folder.backlog.add(path)
            if taken.rescan:
                folder.backlog.rescan()
            self._failed(folder, f"{type(exc).__name__}: {exc}")
            return
        finally:
            folder.backlog.finish()
        folder.failures, folder.error = 0, None
        folder.state = "watching" if not len(folder.backlog) else "applying"

    def _batch(self, folder: _Folder, taken: Taken) -> None:
        started = time.monotonic()
        work = folder.planner.plan(taken.paths, whole=taken.rescan)
        for path, signature in work.held:
            folder.backlog.hold(path, signature)
        folder.rescans += taken.rescan
        if not work:
            return
        counts = self._apply(folder.spec.collection, work.files + work.gone, work.drop, self._stop.is_set)
        folder.batches += 1
        for outcome, n in counts.items():
            if n:
                folder.counts[outcome] = folder.counts.get(outcome, 0) + n
        if any(counts.get(k) for k in _CHANGES):
            folder.last_change = utcnow().isoformat()
        done = ", ".join(f"{n} {k}" for k, n in counts.items() if n) or "nothing changed"
        log.info("%s → '%s': %s in %.2fs%s", folder.spec.path, folder.spec.collection, done,
                 time.monotonic() - started, f" ({len(work.held)} still being written)" if work.held else "")
