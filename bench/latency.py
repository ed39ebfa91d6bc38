"""Retrieval latency at scale: 100k synthetic chunks, hybrid / dense / lexical, model loaded.

    python bench/latency.py [--chunks 100000] [--queries 200]

``behind_writer``: one more document is committed (what a running ingestion does), then the next queries are
timed.

Chunks are written straight into the store (synthetic text drawn from SciFact's vocabulary when present, else
a fixed word list; random unit vectors), because embedding 100k real chunks on 2 cores would take far longer
than the retrieval it measures. Queries are real sentences embedded by the real model, so the timing covers
query embedding + FAISS + BM25 + fusion + SQL fetch, exactly the path of ``RAG.retrieve``.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import DATA  # first: sets the offline env, puts the repo on sys.path

SCIFACT = DATA / "scifact"


def vocabulary() -> list[str]:
    if (SCIFACT / "corpus.jsonl").exists():
        words: set[str] = set()
        for line in (SCIFACT / "corpus.jsonl").read_text().splitlines()[:2000]:
            words.update(json.loads(line)["text"].split())
        return sorted(words)
    return [f"term{i}" for i in range(20000)]


def queries(n: int) -> list[str]:
    if (SCIFACT / "queries.jsonl").exists():
        return [json.loads(line)["question"] for line in (SCIFACT / "queries.jsonl").read_text().splitlines()][:n]
    return [f"what is term{i} and term{i + 1}" for i in range(n)]


def fill(rag, n_chunks: int, per_doc: int = 100, first_doc: int = 0) -> None:
    from rag.store.store import ChunkRecord

    rng = np.random.default_rng(0)
    vocab = vocabulary()
    pick = random.Random(0)
    coll = rag.store.collection("default", model=rag.embedder.name, dim=rag.embedder.dim)
    for d in range(first_doc, first_doc + n_chunks // per_doc):
        vecs = rng.standard_normal((per_doc, rag.embedder.dim)).astype(np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        records = [
            ChunkRecord(i, " ".join(pick.choices(vocab, k=120)), 120, vecs[i]) for i in range(per_doc)
        ]

        def work(s, changes, d=d, records=records):
            rag.store.replace_document(
                s, changes, coll, path=f"/synthetic/doc{d:05d}.txt", content_hash=str(d), size=0, mtime=0.0, doc_type="txt",
                title=None, meta={}, chunks=records, summary_pending=False,
            )

        rag.store.write(coll, work, follow=False)
    rag.store.follow(coll)


def measure(rag, qs: list[str], mode: str) -> dict:
    lat = []
    for q in qs:
        t = time.perf_counter()
        rag.retrieve(q, top_k=5, mode=mode)
        lat.append((time.perf_counter() - t) * 1000)
    lat.sort()
    return {"p50_ms": round(statistics.median(lat), 2), "p95_ms": round(lat[int(len(lat) * 0.95)], 2)}


def main() -> None:
    from rag import RAG

    parser = argparse.ArgumentParser()
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rag = RAG(Path(tmp) / "data")
        t = time.perf_counter()
        fill(rag, args.chunks)
        fill_s = time.perf_counter() - t
        qs = queries(args.queries)
        t = time.perf_counter()
        rag.retrieve("warm up", mode="hybrid")
        warm_s = time.perf_counter() - t
        out = {"chunks": args.chunks, "fill_s": round(fill_s, 1), "first_query_s": round(warm_s, 1)}
        for mode in ("dense", "lexical", "hybrid"):
            out[mode] = measure(rag, qs, mode)
        t = time.perf_counter()
        for q in qs:
            rag.embedder.embed_query(q)
        out["query_embedding_ms"] = round((time.perf_counter() - t) * 1000 / len(qs), 2)
        fill(rag, 100, first_doc=args.chunks // 100)
        t = time.perf_counter()
        rag.retrieve(qs[0], top_k=5)
        first_ms = (time.perf_counter() - t) * 1000
        out["behind_writer"] = {"first_query_ms": round(first_ms, 1), "next": measure(rag, qs[1:21], "hybrid")}
        print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
