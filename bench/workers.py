"""Ingestion on `rag worker` processes vs in-process: the same folder of SciFact abstracts, docs/s for each.

    python bench/workers.py [--docs 2000] [--broker amqp://guest:guest@127.0.0.1:5672/] [--db postgresql+psycopg://…]

Runs, each on a fresh database (PostgreSQL schema, or SQLite when --db is not given):
- in-process: ``RAG.ingest`` (documents embedded in batches across files, committed per document);
- task loop: ``IngestPipeline.ingest_files`` over batches of ``RAG_TASK_FILES`` files in one process, no broker:
  the units of work the tasks do, so (1 worker - task loop) is the queue's own cost;
- 1 worker and 2 workers: ``RAG.submit`` to real `rag worker` subprocesses, from submission to the job done
  (workers started and their models loaded before the clock starts).

Coordination overhead = 1 - (task loop time / 1-worker job time): the share of the job not spent parsing,
embedding or committing. On a 2-core machine two workers share the cores, so their docs/s cannot double; the number
that matters is per-worker throughput against the in-process pipeline.

Measured Dec 2026, ``python bench/workers.py --db postgresql+psycopg://postgres@127.0.0.1:5432/test`` (2,000
abstracts, RabbitMQ, another model job running on one of the two cores throughout):
- before the padding-aware batches of ``rag/models/onnx_encoder.py`` (a task's 16 files embedded as one batch padded
  to its longest chunk): in-process 10.77 docs/s, task loop 7.60, 1 worker 6.86 (0.64x in-process), 2 workers 7.39;
  with ``RAG_TASK_FILES=64``: 10.15 / 7.90 / 7.30 (0.72x) / 8.84. Larger tasks hardly helped: padding did.
- after: in-process 9.75 docs/s, task loop 8.48, 1 worker 10.17 (1.04x in-process), 2 workers 18.59 (1.83x one
  worker). The coordination overhead came out negative (-0.20: the worker run was faster than the task loop run
  before it), i.e. below what this machine's noise can resolve.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from _common import DATA, REPO, read_jsonl  # first: sets the offline env, puts the repo on sys.path


def corpus(folder: Path, n: int) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    docs = read_jsonl(DATA / "scifact" / "corpus.jsonl")[:n]
    for d in docs:
        (folder / f"{d['id']}.txt").write_text(f"{d['title']}\n\n{d['text']}")
    return len(docs)


def fresh_db(base: str | None, tmp: Path) -> str:
    if base is None:
        return f"sqlite:///{tmp / f'{uuid.uuid4().hex[:8]}.db'}"
    import sqlalchemy

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    with sqlalchemy.create_engine(base).begin() as conn:
        conn.execute(sqlalchemy.text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options=-csearch_path%3D{schema}"


def in_process(folder: Path, db: str, tmp: Path) -> float:
    from rag import RAG

    rag = RAG(tmp / "inproc", database_url=db)
    rag.embedder  # noqa: B018 - loaded before the clock, as the workers' are
    t = time.perf_counter()
    rag.ingest(folder, summarize=False)
    elapsed = time.perf_counter() - t
    rag.close()
    return elapsed


def task_loop(folder: Path, db: str, tmp: Path) -> float:
    from rag import RAG

    rag = RAG(tmp / "loop", database_url=db)
    rag.store.follow_indexes = False  # as in a worker
    pipeline = rag.pipeline
    files = sorted(folder.iterdir())
    size = rag.settings.task_files
    t = time.perf_counter()
    for start in range(0, len(files), size):
        pipeline.ingest_files("default", files[start : start + size])
    elapsed = time.perf_counter() - t
    rag.close()
    return elapsed


def with_workers(folder: Path, db: str, tmp: Path, broker: str, n: int) -> float:
    from rag import RAG

    queue = f"bench-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "RAG_DATABASE_URL": db, "RAG_BROKER_URL": broker, "RAG_QUEUE_NAME": queue}
    logs = [tmp / f"w{n}-{i}.log" for i in range(n)]
    procs = [
        subprocess.Popen([sys.executable, "-m", "rag.cli", "-v", "worker"], cwd=REPO,
                         env={**env, "RAG_DATA_DIR": str(tmp / f"w{n}-{i}")}, stdout=open(log, "w"),  # noqa: SIM115
                         stderr=subprocess.STDOUT)
        for i, log in enumerate(logs)
    ]
    try:
        while not all("consuming" in log.read_text() for log in logs):  # models loaded, consumers attached
            time.sleep(0.2)
        rag = RAG(tmp / f"submit{n}", database_url=db, broker_url=broker, queue_name=queue)
        t = time.perf_counter()
        job_id = rag.submit(folder, summarize=False)
        while (job := rag.job(job_id)).state not in ("done", "failed", "cancelled", "interrupted"):
            time.sleep(0.2)
        elapsed = time.perf_counter() - t
        assert job.state == "done" and job.counts.get("added") == job.total, job
        rag.close()
        return elapsed
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--broker", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--db", default=None, help="PostgreSQL URL; each run gets its own schema (default SQLite)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        folder = tmp / "docs"
        n = corpus(folder, args.docs)
        out: dict = {"docs": n, "db": "postgresql" if args.db else "sqlite"}
        for label, run in [
            ("in_process", lambda: in_process(folder, fresh_db(args.db, tmp), tmp)),
            ("task_loop", lambda: task_loop(folder, fresh_db(args.db, tmp), tmp)),
            ("workers_1", lambda: with_workers(folder, fresh_db(args.db, tmp), tmp, args.broker, 1)),
            ("workers_2", lambda: with_workers(folder, fresh_db(args.db, tmp), tmp, args.broker, 2)),
        ]:
            elapsed = run()
            out[label] = {"s": round(elapsed, 1), "docs_per_s": round(n / elapsed, 2)}
            print(json.dumps({label: out[label]}), flush=True)
        out["coordination_overhead"] = round(1 - out["task_loop"]["s"] / out["workers_1"]["s"], 3)
        out["one_worker_vs_in_process"] = round(out["workers_1"]["docs_per_s"] / out["in_process"]["docs_per_s"], 3)
        print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
