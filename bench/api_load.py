"""Bounded load on the HTTP API over 127.0.0.1: throughput and latency as a client sees them.

Starts its own ``rag serve`` (small model, SQLite, a temporary data directory), ingests the SQuAD-2 dev
paragraphs from ../shared/data (173 short documents; a synthetic corpus if absent) through a job, then measures:

- retrieve-only (``POST /v1/retrieve``, no LLM): requests/s and p50/p99 latency at concurrency 1, 8, 32, each for
  ``--duration`` seconds after a short warm-up;
- query with the small model (``POST /v1/query``, ``--max-new-tokens`` answer tokens) at concurrency 1 and 4, a
  few requests each: the local LLM is serialised by its lock, so concurrency shows queueing, not speed-up;
- the server process's RSS before the load, after it, and its peak (VmHWM).

    python bench/api_load.py                      # ~1 min on 2 cores; results also in bench/results/api_load.json
    python bench/api_load.py --duration 5 --queries 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import tempfile
import time
from pathlib import Path

import httpx
from _common import DATA, REPO  # first: sets the offline env, puts the repo on sys.path

from tests.api_server import ApiServer, server_env, wait_job

log = logging.getLogger("bench.api_load")
SQUAD = DATA / "squad2-dev-5"


def write_corpus(folder: Path) -> list[str]:
    """Documents to ingest and questions to ask about them."""
    folder.mkdir(parents=True, exist_ok=True)
    if (SQUAD / "corpus.jsonl").exists():
        for line in (SQUAD / "corpus.jsonl").read_text().splitlines():
            doc = json.loads(line)
            (folder / f"{doc['id']}.txt").write_text(f"{doc['title']}\n\n{doc['text']}")
        questions = [json.loads(line)["question"] for line in (SQUAD / "queries.jsonl").read_text().splitlines()]
        return questions[:200]
    topics = ["rivers", "castles", "comets", "bridges", "orchids", "glaciers", "violins", "deserts"]
    for i in range(160):
        t = topics[i % len(topics)]
        (folder / f"doc{i:03d}.txt").write_text(f"Note {i} about {t}: " + f"{t} fact number {i} is recorded here. " * 20)
    return [f"What is fact number {i} about {topics[i % len(topics)]}?" for i in range(200)]


def rss_mb(pid: int) -> dict[str, float]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


async def closed_loop(url: str, path: str, bodies: list[dict], concurrency: int, *, duration_s: float | None = None,
                      total: int | None = None, timeout: float = 600) -> dict:
    """``concurrency`` workers each sending one request after another until the time or the count runs out."""
    latencies: list[float] = []
    errors = 0
    sent = 0
    deadline = time.perf_counter() + duration_s if duration_s else None
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) as client:

        async def worker() -> None:
            nonlocal errors, sent
            while True:
                if deadline is not None and time.perf_counter() >= deadline:
                    return
                if total is not None and sent >= total:
                    return
                body = bodies[sent % len(bodies)]
                sent += 1
                t0 = time.perf_counter()
                try:
                    r = await client.post(path, json=body)
                    ok = r.status_code == 200
                except httpx.HTTPError:
                    ok = False
                if ok:
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {
        "concurrency": concurrency, "requests": len(latencies), "errors": errors, "elapsed_s": round(elapsed, 2),
        "rps": round(len(latencies) / elapsed, 2),
        "p50_ms": round(percentile(latencies, 50) * 1000, 1), "p99_ms": round(percentile(latencies, 99) * 1000, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per retrieve concurrency level")
    parser.add_argument("--queries", type=int, default=4, help="distinct questions: c=1 asks each once, c=4 each 4 times")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--models-dir", type=Path, default=REPO / ".rag-data" / "models",
                        help="where the bundled model is converted once and reused across runs")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "api_load.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)

    with tempfile.TemporaryDirectory(prefix="rag-api-load-") as tmp:
        base = Path(tmp)
        questions = write_corpus(base / "corpus")
        env = server_env(args.models_dir, allowed_roots=[str(base)], max_new_tokens=args.max_new_tokens)
        with ApiServer(base / "data", env, models_dir=args.models_dir) as server, httpx.Client(base_url=server.url, timeout=600) as client:
            t0 = time.perf_counter()
            job = wait_job(client, client.post("/v1/ingest", json={"paths": [str(base / "corpus")]}).json()["job_id"],
                           timeout_s=900)
            log.info("ingested %s documents in %.1fs (job %s)", job["counts"].get("added"), time.perf_counter() - t0,
                     job["state"])
            bodies = [{"question": q, "top_k": 5} for q in questions]
            asyncio.run(closed_loop(server.url, "/v1/retrieve", bodies, 4, total=40))  # warm-up: BM25 + caches
            rss_before = rss_mb(server.pid)
            log.info("server RSS before load: %.0f MB", rss_before["VmRSS"])

            retrieve = []
            for c in (1, 8, 32):
                result = asyncio.run(closed_loop(server.url, "/v1/retrieve", bodies, c, duration_s=args.duration))
                retrieve.append(result)
                log.info("retrieve  c=%-2d %7.1f req/s  p50 %7.1f ms  p99 %7.1f ms  (%d requests, %d errors)",
                         c, result["rps"], result["p50_ms"], result["p99_ms"], result["requests"], result["errors"])

            query = []
            # The same questions at both levels (c=4 asks each one 4 times), so per-request work is comparable.
            qbodies = [{"question": q, "top_k": 3} for q in questions[1 : 1 + args.queries]]
            warm = [{"question": questions[0], "top_k": 3}]
            asyncio.run(closed_loop(server.url, "/v1/query", warm, 1, total=1))  # warm-up: first generation
            for c in (1, 4):
                result = asyncio.run(closed_loop(server.url, "/v1/query", qbodies, c, total=args.queries * c))
                query.append(result)
                log.info("query     c=%-2d %7.2f req/s  p50 %7.0f ms  p99 %7.0f ms  (%d requests, %d errors)",
                         c, result["rps"], result["p50_ms"], result["p99_ms"], result["requests"], result["errors"])
            rss_after = rss_mb(server.pid)
            log.info("server RSS after load: %.0f MB (peak %.0f MB)", rss_after["VmRSS"], rss_after["VmHWM"])

    results = {
        "documents": job["counts"].get("added"), "retrieve": retrieve, "query": query,
        "query_max_new_tokens": args.max_new_tokens,
        "rss_mb": {"before": round(rss_before["VmRSS"]), "after": round(rss_after["VmRSS"]),
                   "peak": round(rss_after["VmHWM"])},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
