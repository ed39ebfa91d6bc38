"""Ingestion on worker processes: jobs split into per-file tasks on a broker, executed by ``rag worker``.

Why Dramatiq (over Celery, RQ and arq): it acknowledges a message only after the task returns (a worker killed
mid-file leaves its message unacknowledged, and RabbitMQ hands it to another worker as soon as the dead one's
connection drops; the Redis broker requeues it after the dead worker's heartbeat times out: see
:class:`CheckedRedisBroker` for the bound), retries failed tasks with exponential backoff out of the box, and moves
a message that exhausted its retries to a dead-letter queue.
Celery needs ``acks_late`` + ``reject_on_worker_lost`` + hand-written retry and dead-letter settings for the same;
RQ has no acknowledgement at all; arq is Redis-only.

The shape of a job (``enqueue_job``): the submitting process walks and diffs the folders (cheap: a stat per file),
removes the documents of files that are gone, records the job with its total, and sends one message per batch of
at most ``RAG_TASK_FILES`` files and ``RAG_TASK_MB`` MB (:func:`task_batches`). A worker checks each message before
any work and dead-letters at once one that no retry can fix (:class:`InvalidTask`).
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
import re
import signal
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import MAINTENANCE_SCALE, RedisBroker
from dramatiq.errors import DecodeError
from dramatiq.middleware import CurrentMessage

from ingest.pipeline import IngestPipeline
from ingest.summary_pass import summary_plan, write_summaries
from rag.models import llm_placement, load_llm
from rag.models.embedder import load_embedder
from rag.models.llm import LLM
from rag.settings import Settings
from rag.store.schema import utcnow
from rag.store.store import Store
from rag.types import JOB_LIVE, FileOutcome

if TYPE_CHECKING:
    from rag.engine import RAG

log = logging.getLogger(__name__)

ACTOR = "ingest_files"
SUMMARY_ACTOR = "summarize_documents"
SUMMARY_PRIORITY = 100
"""Dramatiq runs a worker's prefetched messages by priority, lower first: ingestion (0) before summaries."""
_WORKABLE = ("queued", "running")
"""A task does its work only while its job is in one of these (cancelling and cancelled skip)."""
MAX_TASK_FILES = int(next(m.le for m in Settings.model_fields["task_files"].metadata if hasattr(m, "le")))
"""The most paths a task may carry (RAG_TASK_FILES's upper bound): a worker refuses a larger message at once."""
MAX_PATH_CHARS = 16_384
"""The longest path a task may name: past Linux's PATH_MAX (4,096 bytes), so an overlong path still reaches the
file step and fails alone there, while a message cannot make a worker hold megabytes of one path."""
_JOB_ID = re.compile(r"[0-9a-f]{32}")


class InvalidTask(Exception):
    """A task message that no retry can make valid (malformed, oversized, for a job that does not exist): the
    actors declare it in ``throws``, so Dramatiq dead-letters the message at once instead of retrying it."""


class CheckedRedisBroker(RedisBroker):
    """Dramatiq's Redis broker, with what a dead worker and a malformed message need (issue 32).

    - A worker killed with its tasks unacknowledged: Dramatiq requeues them when a live worker's queue maintenance
      finds the dead one's heartbeat older than ``heartbeat_timeout``, but by default maintenance runs on 1 broker
      command in 1,000 and the timeout is 60 s (measured: 316 s, or never). Here maintenance runs on every command
      (consumers poll at least once a second, so it costs one ZRANGEBYSCORE per poll), so the bound is
      ``heartbeat_timeout`` plus about a second. A live worker's consumers keep polling while it works (the delay
      queue's consumer never fills), so its heartbeat stays fresh.
    - A fetched message that does not decode, or lacks the ``redis_message_id`` Dramatiq gives every message it
      sends, made the consumer raise and restart, dropping the other messages it had prefetched: they stayed in the
      live worker's unacknowledged set, never run. Here such a message is moved to the dead-letter queue instead.
    """

    def __init__(self, *, url: str, heartbeat_timeout_s: float) -> None:
        super().__init__(url=url, heartbeat_timeout=int(heartbeat_timeout_s * 1000), maintenance_chance=MAINTENANCE_SCALE)

    def do_fetch(self, queue_name: str, prefetch: int) -> list[bytes]:
        fetched = self._dispatch("fetch")(queue_name, prefetch)
        bad = [data for data in fetched if not _well_formed(data)]
        if bad:
            self._dead_letter(queue_name, bad)
        return [data for data in fetched if _well_formed(data)]

    def _dead_letter(self, queue_name: str, bad: list[bytes | None]) -> None:
        """Nack the malformed messages this worker just fetched: they are found by their data among the ids it holds
        unacknowledged (a fetch returns the data only)."""
        held = list(self.client.smembers(f"{self.namespace}:__acks__.{self.broker_id}.{queue_name}"))
        stored = self.client.hmget(f"{self.namespace}:{queue_name}.msgs", held) if held else []
        for message_id, data in zip(held, stored, strict=True):
            if data in bad:
                log.error("dead-lettering a malformed message on %r: %r", queue_name, (data or b"")[:200])
                self.do_nack(queue_name, message_id.decode())


def _well_formed(data: bytes | None) -> bool:
    if data is None:
        return False
    try:
        message = dramatiq.Message.decode(data)
    except DecodeError:
        return False
    return isinstance(message.options, dict) and isinstance(message.options.get("redis_message_id"), str)


def make_broker(settings: Settings) -> dramatiq.Broker:
    """The broker named by ``RAG_BROKER_URL``: ``amqp://…`` (RabbitMQ) or ``redis://…``."""
    url = settings.broker_url or ""
    if url.startswith(("amqp://", "amqps://")):
        broker: dramatiq.Broker = RabbitmqBroker(url=url, confirm_delivery=True)
    elif url.startswith(("redis://", "rediss://", "unix://")):
        broker = CheckedRedisBroker(url=url, heartbeat_timeout_s=settings.broker_heartbeat_timeout_s)
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
        self.broker = make_broker(settings)
        self.actor = dramatiq.actor(
            _run_task,
            broker=self.broker,
            actor_name=ACTOR,
            queue_name=settings.queue_name,
            max_retries=settings.task_max_retries,
            min_backoff=500,
            max_backoff=30_000,
            time_limit=int(settings.task_time_limit_s * 1000),
            throws=(InvalidTask,),
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
            throws=(InvalidTask,),
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
        tasks = task_batches(files, self.settings.task_files, self.settings.task_max_bytes)
        for batch in tasks:
            self.actor.send(job_id, collection, [str(p) for p in batch], summarize)
        log.info("job %s queued: %d file(s) in %d task(s) into '%s'", job_id, len(files), len(tasks), collection)
        return job_id

    def close(self) -> None:
        self.broker.close()


def task_batches(files: list[Path], most_files: int, most_bytes: int) -> list[list[Path]]:
    """The files in tasks of at most ``most_files`` files and ``most_bytes`` bytes (a file larger alone), in order:
    one task of many large files would hold its worker for as long as all of them take to embed."""
    tasks: list[list[Path]] = []
    size = 0
    for path in files:
        try:
            nbytes = path.stat().st_size
        except OSError:  # the file step reports why
            nbytes = 0
        if not tasks or len(tasks[-1]) >= most_files or (size + nbytes > most_bytes and tasks[-1]):
            tasks.append([])
            size = 0
        tasks[-1].append(path)
        size += nbytes
    return tasks


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


def _checked_paths(paths: Any) -> list[str]:
    if not (isinstance(paths, list) and 0 < len(paths) <= MAX_TASK_FILES
            and all(isinstance(p, str) and 0 < len(p) <= MAX_PATH_CHARS and "\x00" not in p for p in paths)):
        count = len(paths) if isinstance(paths, list) else type(paths).__name__
        raise InvalidTask(f"paths must be 1 to {MAX_TASK_FILES} paths of 1 to {MAX_PATH_CHARS} characters (got {count})")
    return paths


def _checked_task(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, str, list[str], bool]:
    """An ingestion task's arguments, checked before any work: a message is data from the broker, which anyone who
    can reach it can write (a 3 MB message of 100k paths for an unknown job held a worker for 421 s)."""
    if kwargs or len(args) != 4:
        raise InvalidTask(f"expected (job_id, collection, paths, summarize), got {len(args)} argument(s) and "
                          f"keywords {sorted(kwargs)[:5]}")
    job_id, collection, paths, summarize = args
    if not (isinstance(job_id, str) and _JOB_ID.fullmatch(job_id)):
        raise InvalidTask("job_id must be 32 hex digits")
    if not (isinstance(collection, str) and 0 < len(collection) <= 200):
        raise InvalidTask("collection must be a name of 1 to 200 characters")
    if not isinstance(summarize, bool):
        raise InvalidTask("summarize must be true or false")
    return job_id, collection, _checked_paths(paths), summarize


def _run_task(*args: Any, **kwargs: Any) -> None:
    job_id, collection, paths, summarize = _checked_task(args, kwargs)
    parts = _worker_parts()
    store = parts.store
    run = store.get_run(job_id)
    if run is None:
        raise InvalidTask(f"no job {job_id}")
    if run.state not in _WORKABLE:  # cancelled: acknowledge without work
        for path in paths:
            store.record_item(job_id, FileOutcome(path, "skipped", error=f"job {run.state}"))
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
    for path, outcome in zip(paths, outcomes, strict=True):  # outcome.path is the path as shown (rag/store/text.py)
        size = Path(path).stat().st_size if outcome.status in ("added", "updated") else 0
        store.record_item(job_id, outcome, size)
    _finish_if_complete(store, job_id)
    written = [o.path for o in outcomes if o.status in ("added", "updated")]
    if summarize and written:
        parts.queue.summary_actor.send(collection, written)
    log.info("%d file(s) in %.3fs (bookkeeping %.3fs)", len(paths), worked, time.monotonic() - started - worked)


def _run_summary_task(*args: Any, **kwargs: Any) -> None:
    """Summaries of the documents one ingestion task wrote (those changed or deleted since are left alone)."""
    if kwargs or len(args) != 2 or not (isinstance(args[0], str) and 0 < len(args[0]) <= 200):
        raise InvalidTask("expected (collection, paths)")
    collection, paths = args[0], _checked_paths(args[1])
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
        job_id, JOB_LIVE, state=state, counts=counts, errors=failures,
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
