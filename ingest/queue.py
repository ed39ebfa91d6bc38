"""Ingestion on worker processes: jobs split into per-file tasks on a broker, executed by ``rag worker``.

Why Dramatiq (over Celery, RQ and arq): it acknowledges a message only after the task returns (a worker killed
mid-file leaves its message unacknowledged, and RabbitMQ hands it to another worker as soon as the dead one's
connection drops; the Redis broker requeues it after the dead worker's heartbeat times out), retries failed tasks
with exponential backoff out of the box, and moves a message that exhausted its retries to a dead-letter queue.
Celery needs ``acks_late`` + ``reject_on_worker_lost`` + hand-written retry and dead-letter settings for the same;
RQ has no acknowledgement at all; arq is Redis-only.

The shape of a job (``enqueue_job``): the submitting process walks and diffs the folders (cheap: a stat per file),
removes the documents of files that are gone, records the job with its total, and sends one message per batch of
``RAG_TASK_FILES`` files.
A worker ingests the files of its task (a few, embedded together: see ``Settings.task_files``) start to end,
in one transaction per document, which the change
log orders with every other writer's, so any number of workers may write one collection at once. Each task
records an item row; the job's progress is counted from those rows, and the task that records the last one
finishes the job (a compare-and-set, so two last tasks cannot both finish it). A cancelled job's remaining tasks
are acknowledged without work.

With summaries on, a task that added or updated documents then sends a summary task for them (same queue, lower
priority, so a worker takes the job's remaining files first): the documents are searchable before any summary is
written, and summary work spreads over the workers like the files. A worker runs the same plan as the engine's
background pass (:func:`ingest.summary_pass.summary_plan`: extractive then LLM on a CPU, LLM on a GPU or server).

Tasks are idempotent (see :meth:`ingest.pipeline.IngestPipeline.ingest_files`), so redelivery never stores a file
twice. Errors that another try can fix (the database unreachable, a lock timeout) raise and are retried; a file
that cannot be read is recorded as failed and the job goes on.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import CurrentMessage

from ingest.pipeline import IngestPipeline
from ingest.summary_pass import summary_plan, write_summaries
from rag.models import llm_placement, load_llm
from rag.models.embedder import load_embedder
from rag.models.llm import LLM
from rag.settings import Settings
from rag.store.schema import utcnow
from rag.store.store import Store
from rag.types import RUN_LIVE, FileOutcome

if TYPE_CHECKING:
    from rag.engine import RAG

log = logging.getLogger(__name__)

ACTOR = "ingest_files"
SUMMARY_ACTOR = "summarize_documents"
SUMMARY_PRIORITY = 100
"""Dramatiq runs a worker's prefetched messages by priority, lower first: ingestion (0) before summaries."""
_WORKABLE = ("queued", "running")
"""A task does its work only while its job is in one of these (cancelling and cancelled skip)."""


def make_broker(url: str) -> dramatiq.Broker:
    """The broker named by ``RAG_BROKER_URL``: ``amqp://…`` (RabbitMQ) or ``redis://…``."""
    if url.startswith(("amqp://", "amqps://")):
        broker: dramatiq.Broker = RabbitmqBroker(url=url, confirm_delivery=True)
    elif url.startswith(("redis://", "rediss://", "unix://")):
        broker = RedisBroker(url=url)
    else:
        raise ValueError(f"RAG_BROKER_URL must start with amqp:// or redis://, not {url.split(':', 1)[0]!r}")
    broker.add_middleware(CurrentMessage())
    return broker


class TaskQueue:
    """The broker and the ingestion actor of one process (a submitter, a worker, or both)."""

    def __init__(self, settings: Settings) -> None:
        if not settings.broker_url:
            raise ValueError("no broker configured (RAG_BROKER_URL)")
        self.settings = settings
        self.broker = make_broker(settings.broker_url)
        self.actor = dramatiq.actor(
            _run_task,
            broker=self.broker,
            actor_name=ACTOR,
            queue_name=settings.queue_name,
            max_retries=settings.task_max_retries,
            min_backoff=500,
            max_backoff=30_000,
            time_limit=int(settings.task_time_limit_s * 1000),
        )
        self.summary_actor = dramatiq.actor(
            _run_summary_task,
            broker=self.broker,
            actor_name=SUMMARY_ACTOR,
            queue_name=settings.queue_name,
            priority=SUMMARY_PRIORITY,
            max_retries=settings.task_max_retries,
            min_backoff=500,
            max_backoff=30_000,
            time_limit=int(settings.task_time_limit_s * 1000),
        )

    def enqueue_job(self, rag: RAG, paths: list[str], collection: str, summarize: bool) -> str:
        """Plan the job here and send one task per file; returns the job id."""
        files, report = rag.pipeline.plan(list[str | Path](paths), collection)
        job_id = uuid.uuid4().hex
        # One item per file: those settled while planning (missing, unsupported, removed) and one per task.
        total = len(files) + len(report.files)
        rag.store.create_run(job_id, collection, paths, state="queued", executor="queue", total=total)
        for outcome in report.files:
            rag.store.record_item(job_id, outcome)
        if not files:
            _finish_if_complete(rag.store, job_id)
        size = self.settings.task_files
        for start in range(0, len(files), size):
            self.actor.send(job_id, collection, [str(p) for p in files[start : start + size]], summarize)
        log.info("job %s queued: %d file(s) in tasks of %d into '%s'", job_id, len(files), size, collection)
        return job_id

    def close(self) -> None:
        self.broker.close()


# --- the worker side ---------------------------------------------------------------------------------------
@dataclass
class _WorkerParts:
    """What a task needs: the store and the pipeline (with its embedder), not a whole engine."""

    settings: Settings
    store: Store
    pipeline: IngestPipeline
    queue: TaskQueue

    def llm(self) -> LLM:
        return load_llm(self.settings)


_parts: _WorkerParts | None = None
_parts_lock = threading.Lock()


def _worker_parts(queue: TaskQueue | None = None) -> _WorkerParts:
    """One store and pipeline per worker process, built from the environment (``RAG_*``) on first use. The store
    never loads or follows the search indexes: workers write; the processes that answer follow the log."""
    global _parts
    with _parts_lock:
        if _parts is None:
            settings = Settings()
            store = Store(settings)
            store.follow_indexes = False
            pipeline = IngestPipeline(store, load_embedder(settings), settings)
            _parts = _WorkerParts(settings, store, pipeline, queue or TaskQueue(settings))
        return _parts


def _run_task(job_id: str, collection: str, paths: list[str], summarize: bool) -> None:
    parts = _worker_parts()
    store = parts.store
    run = store.get_run(job_id)
    if run is None or run.state not in _WORKABLE:  # cancelled (or deleted): acknowledge without work
        for path in paths:
            store.record_item(job_id, FileOutcome(path, "skipped", error=f"job {run.state if run else 'gone'}"))
        _finish_if_complete(store, job_id)
        return
    store.transition_run(job_id, ["queued"], state="running", started_at=utcnow())
    started = time.monotonic()
    try:
        outcomes = parts.pipeline.ingest_files(collection, [Path(p) for p in paths], summarize_pending=summarize)
    except Exception as exc:
        message = CurrentMessage.get_current_message()
        retries = message.options.get("retries", 0) if message is not None else 0
        if retries >= parts.settings.task_max_retries:  # the last try: the message goes to the dead letters
            log.exception("giving up on %d file(s) after %d retries", len(paths), retries)
            for path in paths:
                store.record_item(job_id, FileOutcome(path, "failed", error=f"{type(exc).__name__}: {exc}"[:1000]))
            _finish_if_complete(store, job_id)
        raise
    worked = time.monotonic() - started
    for outcome in outcomes:
        size = Path(outcome.path).stat().st_size if outcome.status in ("added", "updated") else 0
        store.record_item(job_id, outcome, size)
    _finish_if_complete(store, job_id)
    written = [o.path for o in outcomes if o.status in ("added", "updated")]
    if summarize and written:
        parts.queue.summary_actor.send(collection, written)
    log.info("%d file(s) in %.3fs (bookkeeping %.3fs)", len(paths), worked, time.monotonic() - started - worked)


def _run_summary_task(collection: str, paths: list[str]) -> None:
    """Summaries of the documents one ingestion task wrote (those changed or deleted since are left alone)."""
    parts = _worker_parts()
    docs = [parts.store.find_document(path, collection) for path in paths]
    doc_ids = [d.id for d in docs if d is not None]
    plan = summary_plan(parts.settings, llm_placement(parts.settings))
    for method in plan.methods:
        write_summaries(
            parts.store, parts.settings, plan, lambda: parts.pipeline.embedder, parts.llm, collection, method,
            doc_ids=doc_ids,
        )


def _finish_if_complete(store: Store, job_id: str) -> None:
    """The task that records a job's last file finishes it."""
    run = store.get_run(job_id)
    if run is None:
        return
    if store.item_count(job_id) < (run.total or 0):  # one COUNT per task; the summary only for the last one
        return
    counts, failures, _, _ = store.item_summary(job_id)
    state = "cancelled" if run.state in ("cancelling", "cancelled") else "done"
    store.transition_run(
        job_id, RUN_LIVE, state=state, counts=counts, errors=failures,
        processed=run.total or 0, finished_at=utcnow(), message=None,
    )


def run_worker(settings: Settings, threads: int) -> None:
    """``rag worker``: consume ingestion tasks until SIGINT / SIGTERM, then finish the tasks in hand."""
    queue = TaskQueue(settings)
    _worker_parts(queue)  # load the embedder before the first message, not while holding one
    worker = dramatiq.Worker(queue.broker, worker_threads=threads, worker_timeout=1000)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    worker.start()
    log.info("worker consuming '%s' with %d thread(s)", settings.queue_name, threads)
    stop.wait()
    log.info("worker stopping: finishing the tasks in hand")
    worker.stop()
    queue.close()
