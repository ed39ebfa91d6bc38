"""Ingestion on `rag worker` processes fed by a real broker (RabbitMQ), writing to a real PostgreSQL.

Every worker is a real subprocess of the real CLI; failures are real too: kill -9 of a worker mid-job, the
database unreachable behind a TCP proxy the test stops, a corrupt file."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from rag import RAG
from rag.store.schema import Chunk, Document

REPO = Path(__file__).resolve().parents[1]
AMQP = os.environ.get("RAG_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


def _reachable(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=2).close()
        return True
    except OSError:
        return False


@pytest.fixture
def queue_name() -> Iterator[str]:
    """A queue private to this test, deleted (with its delay and dead-letter queues) at the end."""
    if not _reachable("127.0.0.1", 5672):
        pytest.skip("RabbitMQ not reachable at 127.0.0.1:5672")
    name = f"test-{uuid.uuid4().hex[:10]}"
    yield name
    import pika

    conn = pika.BlockingConnection(pika.URLParameters(AMQP))
    channel = conn.channel()
    for q in (name, f"{name}.DQ", f"{name}.XQ"):
        channel.queue_delete(q)
    conn.close()


def _env(data: Path, db: str, queue: str, **extra: str) -> dict[str, str]:
    return {
        **os.environ, "RAG_DATA_DIR": str(data), "RAG_DATABASE_URL": db, "RAG_BROKER_URL": AMQP,
        "RAG_QUEUE_NAME": queue, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **extra,
    }


class Workers:
    """`rag worker` subprocesses, stopped (SIGTERM, then SIGKILL) at the end."""

    def __init__(self, tmp: Path, db: str, queue: str) -> None:
        self.tmp, self.db, self.queue = tmp, db, queue
        self.procs: list[subprocess.Popen] = []

    def start(self, n: int = 1, **extra: str) -> list[subprocess.Popen]:
        started = []
        for _ in range(n):
            i = len(self.procs)
            log = open(self.tmp / f"worker{i}.log", "w")  # noqa: SIM115 - closed with the process
            proc = subprocess.Popen(
                [sys.executable, "-m", "rag.cli", "-v", "worker"], cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                env=_env(self.tmp / f"worker{i}", self.db, self.queue, **extra),
            )
            self.procs.append(proc)
            started.append(proc)
        return started

    def logs(self) -> str:
        return "\n".join((self.tmp / f"worker{i}.log").read_text()[-3000:] for i in range(len(self.procs)))

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture
def workers(tmp_path: Path, pg_url: str, queue_name: str) -> Iterator[Workers]:
    pool = Workers(tmp_path, pg_url, queue_name)
    yield pool
    pool.stop()


def _corpus(folder: Path, n: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        words = " ".join(f"term{i}_{j}" for j in range(220))
        (folder / f"doc{i:03d}.txt").write_text(f"Document {i} is about subject {i % 7}. {words}")


def _wait_job(rag: RAG, job_id: str, workers: Workers, timeout: float = 240) -> object:
    deadline = time.monotonic() + timeout
    while (job := rag.job(job_id)).state not in ("done", "failed", "cancelled", "interrupted"):
        assert time.monotonic() < deadline, f"job stuck at {job}\n{workers.logs()}"
        time.sleep(0.3)
    return job


def _wait_processed(rag: RAG, job_id: str, files: int, workers: Workers, timeout: float) -> None:
    """Until the job has ``files`` files done: the moment a test strikes (a kill, an outage) mid-job."""
    deadline = time.monotonic() + timeout
    while rag.job(job_id).processed < files:
        assert time.monotonic() < deadline, workers.logs()
        time.sleep(0.1)


def _contents(rag: RAG) -> tuple[set[tuple[str, str, int]], int]:
    """(path, content hash, chunk count) of every document, and the number of chunks: what a second delivery
    of a task would double."""
    with rag.store.session() as s:
        docs = {(Path(d.path).name, d.content_hash, d.chunk_count) for d in s.scalars(select(Document))}
        chunks = len(s.scalars(select(Chunk.id)).all())
    return docs, chunks


def _single_process(tmp_path: Path, folder: Path) -> tuple[set[tuple[str, str, int]], int]:
    reference = RAG(tmp_path / "reference")
    try:
        reference.ingest(folder, summarize=False)
        return _contents(reference)
    finally:
        reference.close()


def test_two_workers_ingest_a_folder_as_one_process_would(
    workers: Workers, tmp_path: Path, pg_url: str, queue_name: str
) -> None:
    folder = tmp_path / "docs"
    _corpus(folder, 24)
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4 this is not really a pdf")
    workers.start(2)
    rag = RAG(tmp_path / "api", database_url=pg_url, broker_url=AMQP, queue_name=queue_name)
    try:
        job = _wait_job(rag, rag.submit(folder, summarize=False), workers)
        assert job.state == "done", job
        assert job.counts == {"added": 24, "failed": 1}, job.counts
        assert job.processed == job.total == 25
        assert [e["path"] for e in job.errors] == [str(folder / "broken.pdf")] and job.errors[0]["error"]
        assert rag.document(str(folder / "broken.pdf")).status == "failed"  # the file failed, not the job
        want_docs, want_chunks = _single_process(tmp_path, folder)
        got_docs, got_chunks = _contents(rag)
        assert got_docs == want_docs and got_chunks == want_chunks
        hit = rag.retrieve("term5_100", top_k=1, mode="lexical")[0]  # this process follows the workers' log
        assert hit.document.endswith("doc005.txt")

        (folder / "doc003.txt").unlink()  # a second job: the removal is settled while planning
        (folder / "doc004.txt").write_text("Document 4 now speaks of rhubarb only.")
        job = _wait_job(rag, rag.submit(folder, summarize=False), workers)
        assert job.counts == {"removed": 1, "updated": 1, "unchanged": 23 - 1, "failed": 1}, job.counts
    finally:
        rag.close()


def test_a_worker_killed_mid_job_loses_nothing_and_stores_nothing_twice(
    workers: Workers, tmp_path: Path, pg_url: str, queue_name: str
) -> None:
    folder = tmp_path / "docs"
    _corpus(folder, 40)
    victim, survivor = workers.start(2, RAG_EMBED_BATCH_SIZE="2")
    rag = RAG(tmp_path / "api", database_url=pg_url, broker_url=AMQP, queue_name=queue_name)
    try:
        job_id = rag.submit(folder, summarize=False)
        _wait_processed(rag, job_id, 4, workers, timeout=180)
        victim.send_signal(signal.SIGKILL)  # mid-document: its unacknowledged messages go back to the queue
        job = _wait_job(rag, job_id, workers)
        # Files the dead worker had committed before it died come back with their message and are found
        # stored: they count as unchanged. What the store holds is exact either way (checked below).
        assert job.state == "done" and set(job.counts) <= {"added", "unchanged"}, job
        assert sum(job.counts.values()) == job.total == 40 and job.counts["added"] > 0
        assert survivor.poll() is None
        assert _contents(rag) == _single_process(tmp_path, folder)
    finally:
        rag.close()


class _Proxy:
    """A TCP forwarder to PostgreSQL that the test can take down and bring back: the database "unreachable"."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.up = threading.Event()
        self.up.set()
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            if not self.up.is_set():
                client.close()
                continue
            upstream = socket.create_connection(self.target)
            self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.close()
                except OSError:
                    pass

    def outage(self, seconds: float) -> None:
        self.up.clear()
        for s in self.conns:  # established connections break as well
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.conns.clear()
        time.sleep(seconds)
        self.up.set()

    def close(self) -> None:
        self.server.close()


def test_tasks_retry_while_the_database_is_unreachable(
    workers: Workers, tmp_path: Path, pg_url: str, queue_name: str
) -> None:
    proxy = _Proxy(("127.0.0.1", 5432))
    via_proxy = pg_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    folder = tmp_path / "docs"
    _corpus(folder, 16)
    workers.db = via_proxy
    workers.start(1, RAG_EMBED_BATCH_SIZE="2")
    # tasks of two files, so that the outage finds tasks still to run (one task of 16 could finish before it)
    rag = RAG(tmp_path / "api", database_url=pg_url, broker_url=AMQP, queue_name=queue_name, task_files=2)
    try:
        job_id = rag.submit(folder, summarize=False)
        _wait_processed(rag, job_id, 2, workers, timeout=180)
        proxy.outage(4.0)
        job = _wait_job(rag, job_id, workers, timeout=400)
        # A task cut off after some of its commits is retried and finds those files stored (unchanged).
        assert job.state == "done" and set(job.counts) <= {"added", "unchanged"}, (job, workers.logs())
        assert sum(job.counts.values()) == job.total == 16
        full_log = (tmp_path / "worker0.log").read_text()
        assert "Retrying message" in full_log or "retry" in full_log.lower(), workers.logs()
        assert _contents(rag) == _single_process(tmp_path, folder)
    finally:
        rag.close()
        proxy.close()


def test_a_cancelled_job_stops_its_pending_tasks(workers: Workers, tmp_path: Path, pg_url: str, queue_name: str) -> None:
    folder = tmp_path / "docs"
    _corpus(folder, 30)
    rag = RAG(tmp_path / "api", database_url=pg_url, broker_url=AMQP, queue_name=queue_name)
    try:
        job_id = rag.submit(folder, summarize=False)  # no worker yet: every task is pending
        assert rag.store.transition_run(job_id, ["queued"], state="cancelled", message="cancelled by the test")
        workers.start(1)
        _wait_processed(rag, job_id, 30, workers, timeout=120)
        job = rag.job(job_id)
        assert job.state == "cancelled" and rag.documents() == []
    finally:
        rag.close()


def test_two_api_replicas_and_two_workers_share_jobs_and_documents(
    workers: Workers, tmp_path: Path, pg_url: str, queue_name: str, models_dir: Path
) -> None:
    import httpx

    from tests.api_server import ApiServer, server_env, wait_job

    folder = tmp_path / "docs"
    _corpus(folder, 20)
    workers.start(2)
    env = server_env(models_dir, database_url=pg_url, broker_url=AMQP, queue_name=queue_name,
                     allowed_roots=[str(tmp_path)])
    with ApiServer(tmp_path / "replica-a", env) as a, ApiServer(tmp_path / "replica-b", env) as b, \
            httpx.Client(base_url=a.url, timeout=60) as ca, httpx.Client(base_url=b.url, timeout=60) as cb:
        job_id = ca.post("/v1/ingest", json={"paths": [str(folder)]}).raise_for_status().json()["job_id"]
        seen_progress = set()
        deadline = time.monotonic() + 240
        while (job := cb.get(f"/v1/jobs/{job_id}").raise_for_status().json())["state"] != "done":
            assert job["state"] in ("queued", "running"), job
            assert time.monotonic() < deadline, workers.logs()
            seen_progress.add(job["processed"])
            time.sleep(0.1)
        finished = time.monotonic()
        assert job["executor"] == "queue" and job["counts"] == {"added": 20} and job["total"] == 20
        assert len(seen_progress) > 1, "replica B never showed the job in progress"
        assert wait_job(ca, job_id)["counts"] == job["counts"]
        for client in (ca, cb):  # both replicas follow the workers' commits through the change log
            while True:
                # lexical: the index that follows the log in the background (dense is current at every query)
                query = {"question": "term11_150", "top_k": 1, "mode": "lexical"}
                hits = client.post("/v1/retrieve", json=query).json()["hits"]
                if hits and hits[0]["document"].endswith("doc011.txt"):
                    break
                assert time.monotonic() - finished < 1.0 + 5.0, hits  # 1 s target, slack for a loaded CI machine
                time.sleep(0.05)


def _redis_server(port: int, folder: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder), "--appendonly", "yes",
         "--save", ""],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while not _reachable("127.0.0.1", port):
        assert time.monotonic() < deadline and proc.poll() is None, "redis-server did not start"
        time.sleep(0.1)
    return proc


def test_the_broker_restarting_mid_job_does_not_lose_the_job(tmp_path: Path, pg_url: str) -> None:
    """A private redis-server (the Redis broker) is stopped and started again while a worker is mid-job: the
    worker reconnects and the job completes with every file stored once."""
    import shutil

    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    from tests.api_server import free_port

    port, folder = free_port(), tmp_path / "redis"
    folder.mkdir()
    redis = _redis_server(port, folder)
    broker = f"redis://127.0.0.1:{port}/0"
    docs = tmp_path / "docs"
    _corpus(docs, 24)
    pool = Workers(tmp_path, pg_url, "restart-test")
    pool.start(1, RAG_BROKER_URL=broker, RAG_EMBED_BATCH_SIZE="2")
    rag = RAG(tmp_path / "api", database_url=pg_url, broker_url=broker, queue_name="restart-test")
    try:
        job_id = rag.submit(docs, summarize=False)
        _wait_processed(rag, job_id, 3, pool, timeout=180)
        redis.terminate()  # a graceful restart: the append-only file keeps the queued messages
        redis.wait(timeout=30)
        time.sleep(2)
        redis = _redis_server(port, folder)
        job = _wait_job(rag, job_id, pool, timeout=300)
        assert job.state == "done" and job.counts == {"added": 24}, (job, pool.logs())
        assert _contents(rag) == _single_process(tmp_path, docs)
    finally:
        rag.close()
        pool.stop()
        redis.terminate()
        redis.wait(timeout=30)


def test_workers_write_the_summaries_of_the_documents_a_job_wrote(
    workers: Workers, tmp_path: Path, pg_url: str, queue_name: str
) -> None:
    folder = tmp_path / "docs"
    _corpus(folder, 6)
    workers.start(1, RAG_SUMMARY_METHOD="extractive")
    rag = RAG(tmp_path / "api", database_url=pg_url, broker_url=AMQP, queue_name=queue_name)
    try:
        job = _wait_job(rag, rag.submit(folder, summarize=True), workers)
        assert job.state == "done" and job.counts == {"added": 6}, job
        assert rag.wait_for_summaries(timeout=120) == {"extractive": 6}, workers.logs()
        assert rag.job(job.job_id).summaries == {"extractive": 6}
        assert "summaries" not in rag._parts  # with a broker, the workers wrote them, not this process
        assert all(d.summary and d.summary_model.startswith("extractive:") for d in rag.documents())
    finally:
        rag.close()


REDIS = os.environ.get("RAG_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def redis_queue() -> Iterator[str]:
    """A queue of its own on the machine's Redis, its keys (queue, delay queue, dead letters, acks) deleted after."""
    redis = pytest.importorskip("redis")
    if not _reachable("127.0.0.1", 6379):
        pytest.skip("Redis not reachable at 127.0.0.1:6379")
    name = f"test-{uuid.uuid4().hex[:10]}"
    yield name
    client = redis.Redis.from_url(REDIS)
    for key in client.scan_iter(f"dramatiq:*{name}*"):
        client.delete(key)


def _malformed_messages(queue: str, rag: RAG) -> int:
    """What a broker anyone can write to may hold: bytes that are not a message, messages without the id Dramatiq
    gives every message it sends (the probe's KeyError 'redis_message_id' consumer restarts), an unknown actor,
    wrong arguments, and a 3 MB task of 100k paths for a job that does not exist. Returns how many."""
    import redis
    from dramatiq import Message

    client = redis.Redis.from_url(REDIS)
    raw = [b"not a message", b'{"queue_name": 1}', b"\xff\xfe",
           Message(queue, "ingest_files", ("a" * 32, "default", ["/x"], False), {}, {}).encode()]
    for data in raw:
        message_id = uuid.uuid4().hex
        client.hset(f"dramatiq:{queue}.msgs", message_id, data)
        client.rpush(f"dramatiq:{queue}", message_id)
    actor = rag.queue.actor
    actor.send_with_options(args=("b" * 32, "default", ["/x"]))  # three arguments
    actor.send(uuid.uuid4().hex, "default", [f"/srv/docs/file{i:06d}.txt" for i in range(100_000)], False)  # 3 MB
    actor.send(uuid.uuid4().hex, "default", ["/srv/docs/one.txt"], False)  # a job that does not exist
    rag.queue.broker.enqueue(Message(queue, "no_such_actor", (), {}, {}))
    rag.queue.summary_actor.send("default", "not a list")
    return len(raw) + 5


def test_redis_redelivers_a_killed_workers_tasks_within_the_bound_after_malformed_messages(
    tmp_path: Path, pg_url: str, redis_queue: str
) -> None:
    """The probe: after 9 malformed messages (consumer restarts; 6 of them vanished), a worker killed with -9 left
    its task undelivered for 30 minutes; on a clean queue the kill took 316 s to heal. Now every malformed message
    is dead-lettered at once, and the killed worker's tasks come back within RAG_BROKER_HEARTBEAT_TIMEOUT_S (15 s)
    plus about a second: the job is done well within 60 s of the kill."""
    import redis

    folder = tmp_path / "docs"
    _corpus(folder, 40)
    rag = RAG(tmp_path / "api", database_url=pg_url, broker_url=REDIS, queue_name=redis_queue, task_files=4)
    pool = Workers(tmp_path, pg_url, redis_queue)
    try:
        malformed = _malformed_messages(redis_queue, rag)
        started = time.monotonic()
        victim, survivor = pool.start(2, RAG_BROKER_URL=REDIS, RAG_EMBED_BATCH_SIZE="2")
        client = redis.Redis.from_url(REDIS)
        while client.zcard(f"dramatiq:{redis_queue}.XQ") < malformed:
            assert time.monotonic() - started < 120, (client.zcard(f"dramatiq:{redis_queue}.XQ"), pool.logs())
            time.sleep(0.2)
        dead_lettered_after = time.monotonic() - started  # the 3 MB message was never worked on
        job_id = rag.submit(folder, summarize=False)
        _wait_processed(rag, job_id, 6, pool, timeout=180)
        victim.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        job = _wait_job(rag, job_id, pool, timeout=180)
        healed = time.monotonic() - killed
        assert job.state == "done" and set(job.counts) <= {"added", "unchanged"}, (job, pool.logs())
        assert sum(job.counts.values()) == job.total == 40
        assert healed < 60, f"the killed worker's files took {healed:.0f}s to be done"
        assert survivor.poll() is None
        assert _contents(rag) == _single_process(tmp_path, folder)
        assert client.llen(f"dramatiq:{redis_queue}") == 0
        print(f"malformed dead-lettered {dead_lettered_after:.1f}s after the workers started; job done {healed:.1f}s "
              "after the kill")
    finally:
        rag.close()
        pool.stop()
