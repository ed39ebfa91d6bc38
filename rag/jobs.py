"""Background ingestion jobs: ``RAG.ingest`` in worker threads, with state persisted in SQL.

The job executor of ``rag serve`` (the API holds one and translates its exceptions: :class:`KeyError` 404,
:class:`~rag.types.JobFinished` 409, :class:`~rag.types.ShuttingDown` 503). It drives the engine, so it sits in the
engine layer beside it; with a broker, ``ingest/queue.py`` executes the same jobs in ``rag worker`` processes.

Why this shape:
- SQL (``ingestion_runs``) is the only record of a job, so a restart or another replica behind the same
  database shows what happened; this process only keeps the threads and their cancel flags.
- Every state change is a compare-and-set (``Store.transition_run``): a worker starting a job and a client
  cancelling it cannot both win, even from two replicas.
- Cancelling a running job sets it to ``cancelling`` in SQL; the worker's ``should_cancel`` reads its local
  flag on every file and SQL at most once a second, so a cancel sent to any replica reaches the worker.
- Progress is written at most twice a second: a job over 10,000 small files must not be 10,000 UPDATEs.
- Two jobs on one collection serialise inside the engine (one writer per collection); queries never wait.
- With ``RAG_BROKER_URL`` set, a job is planned here and executed as per-file tasks by ``rag worker`` processes
  (``ingest/queue.py``); this manager then only submits, reports and cancels (tasks of a cancelled job are
  acknowledged without work).
- Each server beats a heartbeat into its unfinished jobs and sweeps for jobs whose heartbeat stopped: those belong
  to a process that died (a job can only run where it was queued), so they are marked interrupted, by whichever
  replica sees it first, while the jobs of live replicas are left alone.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

from rag.engine import RAG
from rag.types import JOB_FINISHED, JOB_STARTED, Cancelled, JobFinished, ShuttingDown, utcnow

log = logging.getLogger(__name__)

STALE_HEARTBEATS = 3
"""Missed heartbeats after which a job's process is taken for dead."""
PROGRESS_INTERVAL_S = 0.5
REMOTE_CANCEL_POLL_S = 1.0


class JobCounters(Protocol):
    """What the executor reports as it goes (the API's Prometheus metrics implement it)."""

    def job_running(self, delta: int) -> None: ...

    def job_finished(self, state: str) -> None: ...

    def file_done(self, status: str) -> None: ...


class _Cancel:
    """The ``should_cancel`` callback of one job: a local flag, and a throttled look at SQL for remote cancels."""

    def __init__(self, manager: JobManager, job_id: str) -> None:
        self.manager = manager
        self.job_id = job_id
        self.event = threading.Event()
        self._last_poll = time.monotonic()

    def __call__(self) -> bool:
        if self.event.is_set() or self.manager.stopping.is_set():
            return True
        now = time.monotonic()
        if now - self._last_poll >= REMOTE_CANCEL_POLL_S:
            self._last_poll = now
            run = self.manager.rag.store.get_run(self.job_id)
            if run is not None and run.state == "cancelling":
                self.event.set()
        return self.event.is_set()


class JobManager:
    """Accepts ingestion jobs, runs them on a small thread pool, and answers for their state."""

    def __init__(self, rag: RAG, metrics: JobCounters, workers: int = 2) -> None:
        self.rag = rag
        self.metrics = metrics
        self.stopping = threading.Event()
        self._cancels: dict[str, _Cancel] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ingest-job")
        self._heartbeat_s = rag.settings.job_heartbeat_s
        self._stopped = threading.Event()  # set once shutdown is complete: ends the heartbeat thread
        self.sweep()
        self._heartbeat = threading.Thread(target=self._beat, name="job-heartbeat", daemon=True)
        self._heartbeat.start()

    # --- API -----------------------------------------------------------------------------------------
    def submit(self, paths: list[str], collection: str, summarize: bool | None = None) -> str:
        if self.stopping.is_set():
            raise ShuttingDown("the server is shutting down")
        if self.rag.settings.broker_url:  # workers execute it; this replica only plans and enqueues
            return self.rag.submit(paths, collection, summarize=summarize)
        job_id = uuid.uuid4().hex
        self.rag.store.create_run(job_id, collection, paths, state="queued")
        cancel = _Cancel(self, job_id)
        with self._lock:
            self._cancels[job_id] = cancel
        self._pool.submit(self._run, job_id, paths, collection, summarize, cancel)
        log.info("job %s queued: %d path(s) into '%s'", job_id, len(paths), collection)
        return job_id

    def get(self, job_id: str) -> dict[str, Any]:
        try:
            return self.rag.job(job_id).to_dict()
        except KeyError:
            raise KeyError(f"no job {job_id!r}") from None

    def list_jobs(self, limit: int = 50, collections: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """The newest jobs, of every collection or of ``collections`` (what an API key sees)."""
        return [self.rag.job(r.id).to_dict() for r in self.rag.store.list_runs(limit, collections=collections)]

    def cancel(self, job_id: str) -> dict[str, Any]:
        """Queued jobs are cancelled at once; running ones stop after the file in hand (any replica's)."""
        store = self.rag.store
        if store.transition_run(job_id, ["queued"], state="cancelled", message="cancelled before it started",
                                finished_at=utcnow()):
            self.metrics.job_finished("cancelled")
        elif store.transition_run(job_id, ["running"], state="cancelling", message="cancel requested"):
            pass
        else:
            run = store.get_run(job_id)
            if run is None:
                raise KeyError(f"no job {job_id!r}")
            if run.state in JOB_FINISHED:
                raise JobFinished(f"job {job_id} has already finished ({run.state})")
        with self._lock:
            local = self._cancels.get(job_id)
        if local is not None:
            local.event.set()
        return self.get(job_id)

    def shutdown(self) -> None:
        """Stop taking jobs; running ones stop after their current file and are marked interrupted."""
        self.stopping.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            left = list(self._cancels)
        for job_id in left:  # queued jobs whose futures were cancelled never ran
            self.rag.store.transition_run(
                job_id, ["queued"], state="interrupted", message="the server stopped before the job started",
                finished_at=utcnow(),
            )
        self._stopped.set()
        self._heartbeat.join()

    def sweep(self) -> int:
        """Mark interrupted the jobs of processes that died (no heartbeat for ``STALE_HEARTBEATS`` beats)."""
        stale = self.rag.store.interrupt_stale_runs(STALE_HEARTBEATS * self._heartbeat_s)
        if stale:
            log.warning("marked %d ingestion job(s) of a stopped process as interrupted", stale)
        return stale

    def _beat(self) -> None:
        while not self._stopped.wait(self._heartbeat_s):
            try:
                with self._lock:
                    mine = list(self._cancels)
                self.rag.store.heartbeat_runs(mine)
                self.sweep()
            except Exception:  # a database hiccup must not end the heartbeat for good
                log.exception("job heartbeat failed")

    # --- worker ------------------------------------------------------------------------------------
    def _run(self, job_id: str, paths: list[str], collection: str, summarize: bool | None, cancel: _Cancel) -> None:
        store = self.rag.store
        try:
            if not store.transition_run(job_id, ["queued"], state="running", started_at=utcnow()):
                log.info("job %s was cancelled before it started", job_id)
                return
            self.metrics.job_running(1)
            try:
                self._ingest(job_id, paths, collection, summarize, cancel)
            finally:
                self.metrics.job_running(-1)
        except Exception:  # the worker thread must never die silently; the job records what happened
            log.exception("job %s: bookkeeping failed", job_id)
        finally:
            with self._lock:
                self._cancels.pop(job_id, None)

    def _ingest(self, job_id: str, paths: list[str], collection: str, summarize: bool | None, cancel: _Cancel) -> None:
        store = self.rag.store
        last_write = 0.0
        progress_state = {"processed": 0, "total": 0}

        def progress(done: int, total: int, path: str) -> None:
            nonlocal last_write
            progress_state.update(processed=done, total=total)
            now = time.monotonic()
            if now - last_write >= PROGRESS_INTERVAL_S or done == total:
                last_write = now
                store.update_run(job_id, processed=done, total=total, message=f"last file: {path}")

        try:
            report = self.rag.ingest(
                list[str | Path](paths), collection, summarize=summarize, progress=progress, should_cancel=cancel
            )
        except Cancelled as exc:
            state = "interrupted" if self.stopping.is_set() and not cancel.event.is_set() else "cancelled"
            why = "the server stopped during the job" if state == "interrupted" else str(exc)
            store.transition_run(job_id, JOB_STARTED, state=state, message=why, finished_at=utcnow(), **progress_state)
            self.metrics.job_finished(state)
            log.info("job %s %s: %s", job_id, state, why)
            return
        except Exception as exc:
            log.exception("job %s failed", job_id)
            store.transition_run(job_id, JOB_STARTED, state="failed", message=f"{type(exc).__name__}: {exc}"[:1000],
                                 finished_at=utcnow(), **progress_state)
            self.metrics.job_finished("failed")
            return
        counts = {**report.counts(), "summaries_pending": report.summaries_pending}
        errors = [{"path": f.path, "status": f.status, "error": f.error} for f in report.failures]
        seen = sum(1 for f in report.files if f.status != "removed")
        store.transition_run(
            job_id, JOB_STARTED, state="done", counts=counts, errors=errors, finished_at=utcnow(),
            processed=max(progress_state["processed"], seen), total=max(progress_state["total"], seen),
            message=f"{report.elapsed_s:.1f}s" + (", finished before the cancel took effect" if cancel.event.is_set() else ""),
        )
        for f in report.files:
            self.metrics.file_done(f.status)
        self.metrics.job_finished("done")
        log.info("job %s done: %s", job_id, counts)
