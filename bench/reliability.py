"""Reliability figures: data loss under kill -9, the API's responsiveness while an ingestion job runs, and (issue 32)
the chunking rate on large prose, hostile docx files refused before parsing, and how soon a Redis worker killed with
-9 has its tasks redelivered.

    python bench/reliability.py [--kills 20] [--clients 20] [--parts api,disk,kill,chunking,docx,redis]
        [--redis redis://127.0.0.1:6379/0] [--db postgresql+psycopg://postgres@127.0.0.1:5432/test] [--redis-kills 3]

- kill -9: ``rag ingest`` of a 60-file folder into a fresh store (committing every 32 chunks) is killed at a random
  moment of a whole run's duration (measured first; it covers model loading, parsing, embedding and commits),
  ``--kills`` times. After each kill a fresh process opens the store and checks every stored chunk: it is in FAISS
  and in the lexical index, and a dense search with its own stored vector returns it first (cosine 1 against
  itself). A chunk that fails any of these is a data-loss incident.
- full disk: ``rag ingest`` of 200 files into tmpfs data directories of 0.6-4.8 MB, which fill at different
  stages; the same check once space is free again (the data directory copied out to the ordinary disk).
- API under ingestion (a real ``rag serve`` on 127.0.0.1): a job ingests 400 files; meanwhile documents are deleted
  (10 DELETE requests at once), ``/healthz`` is polled from a separate process, and ``--clients`` concurrent clients
  send ``/v1/retrieve`` (20 requests each). Reported: /healthz p50 / p95, delete latencies, retrieve p50 / p95 and
  errors.

Measured on this 2-core AMD EPYC (AVX2), quiet, Dec 3 2026 (issue 16's figures):
- kill -9: 20 of 20 kills mid-run (a whole run 17.0 s), 1,344 chunks checked, 0 data-loss incidents;
- full disk: 600 / 1,200 / 2,400 KB tmpfs filled mid-ingest ("No space left on device", exit 1), 4,800 KB did not
  fill; 128 + 352 + 640 + 800 chunks checked, 0 incidents;
- API, ``--parts api`` (p50 / p95 in ms; the job still running at the end, 0 errors, every DELETE 200):

  | run | /healthz | DELETE | retrieve |
  |---|---|---|---|
  | RAG_RETRIEVE_CONCURRENCY=2 (default here), 3 runs | 14.0 / 25.1, 7.2 / 19.1, 8.5 / 22.0 | 844 / 964, 1,442 / 1,727, 1,227 / 1,791 | 377 / 518, 315 / 1,015, 344 / 457 |
  | unbounded (40, the threadpool), 3 runs | 40.3 / 80.0 (first run of the session), 9.9 / 22.0, 11.6 / 25.6 | 1,027 / 1,210, 896 / 1,180, 891 / 1,387 | 374 / 695, 319 / 600, 452 / 652 |

  Medians: /healthz p95 22.0 vs 25.6 ms, retrieve p50 344 vs 374 ms: at 20 clients the bound makes no measurable
  difference; it keeps threads free for other requests when clients outnumber the threadpool's 40. The /healthz p95
  of 117-201 ms measured before came from polling it from a thread beside the 20 client threads of this process.

Issue 32 parts (``--parts chunking,docx,redis``):
- chunking: ``IngestPipeline.chunker`` (the bundled embedder's tokenizer, 254-token chunks) on the Paul Graham essay
  repeated to 1, 12 and 100 MB of prose; MB/s is the median of ``--runs`` runs (one for 100 MB).
- docx: the time to refuse a docx of 2.7M tiny paragraphs (95 MB of XML, the probe's 326 KB file) and one of 57 M
  characters of prose (under the 100 MB expansion limit), and the peak RSS of the process that reads them.
- redis: 2 `rag worker` processes on Redis and PostgreSQL, malformed messages on the queue first (garbage bytes, a
  message without ``redis_message_id``, a 3 MB task of 100k paths for no job); a job of 40 files in tasks of 4; one
  worker killed with -9 after 6 files; reported: seconds from the kill to the job done, and whether every malformed
  message reached the dead-letter queue.

Measured Dec 7 2026 on this 2-core AMD EPYC with two other benchmark / test jobs running (load average 4-5), by
``python bench/reliability.py --parts chunking,docx,redis --clients 0``:
- chunking: 1 MB 1.16 MB/s (0.84 / 0.97 / 0.86 s), 12 MB 1.07 MB/s (7.7 / 11.2 / 12.5 s), 100 MB 1.18 MB/s (84.6 s,
  106,252 chunks): proportional to the size. Alone on the machine earlier: 1.8-1.9 MB/s at 0.5-12 MB. Paired with
  llama-index's splitter (the chunker before issue 32) on 2 MB under the same load, two rounds of 3 runs: 0.29 / 0.27
  MB/s before, 1.07 / 1.16 after; before, a 12 MB text raised NLTK's TimeoutError and failed the whole job.
- docx: 2.7M tiny paragraphs (296 KB file) refused in 0.69 s at 281 MB peak RSS (before: 79 s of CPU, 1.8 GB);
  57 M characters of prose (340 KB file) refused in 0.75 s at 278 MB.
- redis: a killed worker's files done 17.2 / 16.9 / 18.0 s after the kill (median 17.2 s; before: 316 s on a clean
  queue, never after malformed messages), 3 of 3 malformed messages dead-lettered in every run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from _common import DATA, REPO  # first: sets the offline env, puts the repo on sys.path


def folder_of(path: Path, n: int, words: int = 180) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        body = " ".join(f"word{i}_{j}" for j in range(words))
        (path / f"doc{i:04d}.txt").write_text(f"Document {i} on subject {i % 11}. {body}")
    return path


def check_store(data: Path) -> tuple[int, int]:
    """(chunks checked, incidents) for the store in ``data``."""
    from sqlalchemy import select

    from rag import RAG
    from rag.store.schema import Chunk

    rag = RAG(data)
    try:
        coll = rag.store.collection("default")
    except Exception:  # noqa: BLE001 - killed before the collection existed: nothing stored, nothing lost
        rag.close()
        return 0, 0
    dense = rag.store.index(coll)
    lexical = set(rag.store.lexical(coll, wait=True).ids().tolist())
    held = set(dense.ids().tolist())
    incidents = checked = 0
    with rag.store.session() as s:
        ids = list(s.scalars(select(Chunk.id).where(Chunk.collection_id == coll.id)))
    for cid in ids:
        checked += 1
        found, vecs = dense.vectors([cid])
        top = dense.search(vecs[0], 1)[1].tolist() if found else []
        if cid not in held or cid not in lexical or top != [cid]:
            incidents += 1
    rag.close()
    return checked, incidents


def _ingest_cmd(docs: Path, data: Path) -> list[str]:
    return [sys.executable, "-m", "rag.cli", "ingest", str(docs), "--data-dir", str(data)]


KILL_ENV = {"RAG_EMBED_BATCH_SIZE": "4", "RAG_SUMMARIZE": "off"}
"""Small embedding batches commit every 32 chunks, so a kill can land between any two commits."""


def kill_runs(tmp: Path, kills: int) -> dict:
    """``kills`` ingests of a fresh store, each killed at a random moment of a whole run's duration (measured first,
    unkilled), so every kill lands mid-run; then the store is checked by a fresh process (which also repairs)."""
    docs = folder_of(tmp / "docs", 60)
    env = {**os.environ, **KILL_ENV}
    rng = random.Random(0)
    data = tmp / "kill-data"
    started = time.perf_counter()
    subprocess.run(_ingest_cmd(docs, data), cwd=REPO, env=env, capture_output=True, check=True)
    whole_s = time.perf_counter() - started
    results = []
    for _ in range(kills):
        shutil.rmtree(data, ignore_errors=True)
        proc = subprocess.Popen(_ingest_cmd(docs, data), cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        at = rng.uniform(1.0, whole_s)
        time.sleep(at)
        finished = proc.poll() is not None
        proc.kill()
        proc.wait()
        checked, incidents = check_store(data)
        results.append({"killed_at_s": round(at, 1), "finished_before_kill": finished, "chunks_checked": checked,
                        "incidents": incidents})
    return {
        "runs": kills,
        "whole_run_s": round(whole_s, 1),
        "killed_mid_run": sum(not r["finished_before_kill"] for r in results),
        "chunks_checked": sum(r["chunks_checked"] for r in results),
        "data_loss_incidents": sum(r["incidents"] for r in results),
    }


def full_disk_runs(tmp: Path, sizes_kb: tuple[int, ...] = (600, 1200, 2400, 4800)) -> dict:
    """Ingest into a tmpfs data directory too small for the folder (a private user + mount namespace, so no root
    is needed), then check every chunk that made it into SQL (:func:`check_store`) once space is free again: the
    full data directory is copied out of the namespace and opened on the ordinary disk, as an operator's restart
    after freeing space would (on the still-full disk, the repair itself could not write its index files)."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-rm", "true"], check=False).returncode:
        return {"skipped": "no private mount namespace here"}
    docs = folder_of(tmp / "disk-docs", 200)
    env = {**os.environ, **KILL_ENV}
    env.setdefault("RAG_MODELS_DIR", str(tmp / "models"))  # converted models outside the small disk
    results = []
    for size in sizes_kb:
        mount = tmp / f"disk-{size}"
        mount.mkdir()
        ingest = " ".join(f'"{a}"' for a in _ingest_cmd(docs, mount / "data"))
        copy = tmp / f"disk-{size}-copy"
        script = (f'mount -t tmpfs -o size={size}k tmpfs "{mount}" && {{ {ingest} >/dev/null 2>"{tmp}/err"; '
                  f'echo "ingest exit $?" >&2; tail -n 1 "{tmp}/err" >&2; cp -a "{mount}/data" "{copy}"; }}')
        out = subprocess.run(["unshare", "-rm", "sh", "-c", script], cwd=REPO, env=env, capture_output=True,
                             text=True, check=False)
        checked, incidents = check_store(copy)
        results.append({"tmpfs_kb": size, "ingest": " / ".join(out.stderr.strip().splitlines()[-2:]),
                        "chunks_checked": checked, "incidents": incidents})
    return {"runs": results, "data_loss_incidents": sum(r["incidents"] for r in results)}


HEALTH_POLLER = """
import json, pathlib, sys, time
import httpx
url, stop, ms = sys.argv[1], pathlib.Path(sys.argv[2]), []
with httpx.Client(base_url=url, timeout=30) as h:
    while not stop.exists():
        t = time.perf_counter()
        h.get("/healthz").raise_for_status()
        ms.append((time.perf_counter() - t) * 1000)
        time.sleep(0.05)
print(json.dumps(ms))
"""
"""The /healthz prober runs in a process of its own, as an orchestrator's probe does: polled from a thread beside
the 20 client threads, its latency would also count the wait for this process's own GIL."""


def api_under_ingestion(tmp: Path, clients: int) -> dict:
    import httpx

    from tests.api_server import ApiServer, server_env

    docs = folder_of(tmp / "api-docs", 400)
    first = folder_of(tmp / "api-first", 40)
    env = server_env(None, allowed_roots=[str(tmp)])
    with ApiServer(tmp / "api-data", env) as srv, httpx.Client(base_url=srv.url, timeout=120) as c:
        job = c.post("/v1/ingest", json={"paths": [str(first)]}).json()["job_id"]
        while c.get(f"/v1/jobs/{job}").json()["state"] not in ("done", "failed"):
            time.sleep(0.2)
        doc_ids = [d["id"] for d in c.get("/v1/documents").json()["documents"]][:10]
        c.post("/v1/ingest", json={"paths": [str(docs)]}).raise_for_status()
        time.sleep(2.0)  # the job is running

        deletes, retrieves, errors = [], [], []

        def delete(doc_id: int) -> None:
            with httpx.Client(base_url=srv.url, timeout=120) as d:
                t = time.perf_counter()
                r = d.delete(f"/v1/documents/{doc_id}")
                deletes.append(((time.perf_counter() - t) * 1000, r.status_code))

        def client(n: int) -> None:
            with httpx.Client(base_url=srv.url, timeout=60) as q:
                for i in range(20):
                    t = time.perf_counter()
                    try:
                        r = q.post("/v1/retrieve", json={"question": f"word{(n * 20 + i) % 40}_5 subject", "top_k": 5})
                        if r.status_code != 200:
                            errors.append(r.status_code)
                    except httpx.HTTPError as exc:
                        errors.append(type(exc).__name__)
                    retrieves.append((time.perf_counter() - t) * 1000)

        stop_file = tmp / "stop-polling"
        poller = subprocess.Popen([sys.executable, "-c", HEALTH_POLLER, srv.url, str(stop_file)],
                                  stdout=subprocess.PIPE, text=True)
        threads = [threading.Thread(target=delete, args=(d,)) for d in doc_ids]
        threads += [threading.Thread(target=client, args=(n,)) for n in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stop_file.touch()
        health = json.loads(poller.communicate()[0])
        running = c.get("/v1/jobs").json()["jobs"][0]["state"]

    def pct(values: list[float]) -> dict:
        values = sorted(values)
        return {"p50": round(statistics.median(values), 1), "p95": round(values[int(len(values) * 0.95)], 1)}

    return {
        "job_state_at_end": running,
        "healthz_ms": pct(health),
        "delete_ms": pct([d for d, _ in deletes]),
        "delete_status": sorted({s for _, s in deletes}),
        "retrieve_ms": pct(retrieves),
        "retrieve_requests": len(retrieves),
        "errors": errors,
    }


def prose(size: int) -> str:
    from ingest.readers import normalise_text

    essay = normalise_text((DATA / "paul-graham" / "paul_graham_essay.txt").read_text()) + "\n\n"
    return (essay * (size // len(essay) + 1))[:size]


def chunking_rates(runs: int) -> dict:
    """MB/s of prose through the ingestion chunker, per size (median of ``runs``; one run at 100 MB)."""
    from rag import RAG

    with tempfile.TemporaryDirectory() as name:
        rag = RAG(Path(name) / "data")
        chunker = rag.pipeline.chunker
        out = {}
        for mb in (1, 12, 100):
            text = prose(mb * 2**20)
            times = []
            for _ in range(1 if mb == 100 else runs):
                started = time.perf_counter()
                chunks = chunker.split(text)
                times.append(time.perf_counter() - started)
            out[f"{mb}_mb"] = {"s": [round(t, 2) for t in times], "mb_per_s": round(mb / statistics.median(times), 2),
                               "chunks": len(chunks)}
            print(json.dumps({f"chunking_{mb}_mb": out[f"{mb}_mb"]}), flush=True)
        rag.close()
    return out


DOCX_READER = """
import json, sys, time
from pathlib import Path
from ingest.readers import ReadError, read_document
started = time.perf_counter()
try:
    read_document(Path(sys.argv[1]), 25 * 2**20)
    outcome = "read"
except ReadError as exc:
    outcome = str(exc)
peak_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"s": round(time.perf_counter() - started, 2), "outcome": outcome, "peak_rss_mb": peak_kb // 1024}))
"""
"""VmHWM, not getrusage: ru_maxrss survives fork + exec, so it would report this benchmark's own peak."""


def docx_caps(tmp: Path) -> dict:
    """Each hostile docx read in a fresh process: time to the refusal and that process's peak RSS."""
    from tests.test_robust_ingest import prose as squad_prose
    from tests.test_robust_ingest import streamed_docx

    cases = {"tiny_paragraphs": (b"<w:p><w:r><w:t>x</w:t></w:r></w:p>", 2_700_000),
             "prose_57m_chars": (b"<w:p><w:r><w:t>" + squad_prose(6_000).replace("\n\n", " ").encode()
                                 + b"</w:t></w:r></w:p>", 10_000)}
    out = {}
    for label, (paragraph, count) in cases.items():
        path = tmp / f"{label}.docx"
        streamed_docx(path, paragraph, count)
        run = subprocess.run([sys.executable, "-c", DOCX_READER, str(path)], cwd=REPO, capture_output=True, text=True,
                             check=True)
        out[label] = {"file_kb": round(path.stat().st_size / 1024), **json.loads(run.stdout)}
    return out


def _malformed(client, queue: str, rag) -> int:
    from dramatiq import Message

    raw = [b"not a message", Message(queue, "ingest_files", ("a" * 32, "default", ["/x"], False), {}, {}).encode()]
    for data in raw:
        message_id = uuid.uuid4().hex
        client.hset(f"dramatiq:{queue}.msgs", message_id, data)
        client.rpush(f"dramatiq:{queue}", message_id)
    rag.queue.actor.send(uuid.uuid4().hex, "default", [f"/srv/docs/file{i:06d}.txt" for i in range(100_000)], False)
    return len(raw) + 1


def redis_kill_runs(tmp: Path, redis_url: str, db: str, runs: int) -> dict:
    """Seconds from a worker's kill -9 to its job done, on Redis, after malformed messages (see the docstring)."""
    import redis

    from rag import RAG
    from tests.test_workers import _corpus

    client = redis.Redis.from_url(redis_url)
    results = []
    for run in range(runs):
        queue = f"bench-{uuid.uuid4().hex[:8]}"
        url = fresh_schema(db)
        folder = tmp / f"redis-docs-{run}"
        _corpus(folder, 40)
        env = {**os.environ, "RAG_DATABASE_URL": url, "RAG_BROKER_URL": redis_url, "RAG_QUEUE_NAME": queue,
               "RAG_EMBED_BATCH_SIZE": "2", "RAG_SUMMARIZE": "off"}
        rag = RAG(tmp / f"redis-api-{run}", database_url=url, broker_url=redis_url, queue_name=queue, task_files=4)
        malformed = _malformed(client, queue, rag)
        logs = [tmp / f"redis-{run}-{i}.log" for i in range(2)]
        procs = [subprocess.Popen([sys.executable, "-m", "rag.cli", "-v", "worker"], cwd=REPO,
                                  env={**env, "RAG_DATA_DIR": str(tmp / f"redis-w{run}-{i}")},
                                  stdout=open(log, "w"), stderr=subprocess.STDOUT)  # noqa: SIM115
                 for i, log in enumerate(logs)]
        try:
            while not all("consuming" in log.read_text() for log in logs):
                time.sleep(0.2)
            job_id = rag.submit(folder, summarize=False)
            while rag.job(job_id).processed < 6:
                time.sleep(0.1)
            procs[0].kill()
            killed = time.perf_counter()
            while (job := rag.job(job_id)).state not in ("done", "failed", "cancelled", "interrupted"):
                time.sleep(0.2)
            results.append({"kill_to_done_s": round(time.perf_counter() - killed, 1), "state": job.state,
                            "files": sum(job.counts.values()),
                            "malformed_dead_lettered": f"{client.zcard(f'dramatiq:{queue}.XQ')}/{malformed}"})
            print(json.dumps({"redis_kill": results[-1]}), flush=True)
        finally:
            rag.close()
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(timeout=60)
            for key in client.scan_iter(f"dramatiq:*{queue}*"):
                client.delete(key)
    times = [r["kill_to_done_s"] for r in results]
    return {"runs": results, "median_kill_to_done_s": statistics.median(times), "max_kill_to_done_s": max(times)}


def fresh_schema(base: str) -> str:
    import sqlalchemy

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    with sqlalchemy.create_engine(base).begin() as conn:
        conn.execute(sqlalchemy.text(f'CREATE SCHEMA "{schema}"'))
    return f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{schema}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--clients", type=int, default=20, help="0: skip the API part")
    parser.add_argument("--parts", default="api,disk,kill",
                        help="comma-separated, of: api, disk, kill, chunking, docx, redis")
    parser.add_argument("--runs", type=int, default=3, help="chunking: runs per size (1 at 100 MB)")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--db", default="postgresql+psycopg://postgres@127.0.0.1:5432/test",
                        help="redis part: PostgreSQL URL (each run gets its own schema)")
    parser.add_argument("--redis-kills", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        parts, out = args.parts.split(","), {}
        if "api" in parts and args.clients:
            out["api_under_ingestion"] = api_under_ingestion(tmp, args.clients)
            print(json.dumps(out), flush=True)
        if "disk" in parts:
            out["full_disk"] = full_disk_runs(tmp)
            print(json.dumps(out), flush=True)
        if "kill" in parts:
            out["kill_9"] = kill_runs(tmp, args.kills)
        if "chunking" in parts:
            out["chunking"] = chunking_rates(args.runs)
        if "docx" in parts:
            out["docx"] = docx_caps(tmp)
        if "redis" in parts:
            out["redis_kill_9"] = redis_kill_runs(tmp, args.redis, args.db, args.redis_kills)
        print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
