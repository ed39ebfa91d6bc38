"""Embedding throughput per backend, in one process on the same texts: where ingestion time goes.

    python bench/embed_backends.py            # 400 SciFact abstracts, 3 runs each, median reported
    python bench/embed_backends.py --docs 800 --runs 5

Reports tokens/s (word pieces actually fed to the model, truncated at its 256 window), the ratio to PyTorch fp32,
and the cosine of each backend's vectors to PyTorch's (documents, and queries for the ONNX backends, which embed
queries in fp32).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from _common import DATA, read_jsonl  # first: sets the offline env, puts the repo on sys.path

from rag.models.embedder import Embedder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=400)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--models-dir", type=Path, default=None, help="reuse an existing ONNX export")
    args = parser.parse_args()
    rows = read_jsonl(DATA / "scifact" / "corpus.jsonl")[: args.docs]
    texts = [f"{r['title']}\n\n{r['text']}" for r in rows]
    queries = [q["question"] for q in read_jsonl(DATA / "scifact" / "queries.jsonl")[:100]]
    models = args.models_dir or Path(tempfile.mkdtemp(prefix="rag-embed-bench-"))

    results = {}
    reference = reference_q = None
    for backend in ("torch", "onnx", "onnx-int8"):
        embedder = Embedder("bundled:all-MiniLM-L6-v2", device="cpu", backend=backend, models_root=models)
        tokens = sum(min(embedder.count_tokens(t) + 2, embedder.max_tokens) for t in texts)
        embedder.embed(texts[:64])  # warm-up
        times = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            vectors = embedder.embed(texts)
            times.append(time.perf_counter() - t0)
        query_vectors = embedder.embed(queries, query=True)
        if reference is None:
            reference, reference_q = vectors, query_vectors
        median = statistics.median(times)
        results[backend] = {
            "median_s": round(median, 2),
            "runs_s": [round(t, 2) for t in times],
            "tokens_per_s": round(tokens / median),
            "cos_docs_mean": round(float((vectors * reference).sum(1).mean()), 4),
            "cos_docs_min": round(float((vectors * reference).sum(1).min()), 4),
            "cos_queries_min": round(float((query_vectors * reference_q).sum(1).min()), 4),
        }
    base = results["torch"]["tokens_per_s"]
    for row in results.values():
        row["x_torch"] = round(row["tokens_per_s"] / base, 2)
    print(json.dumps({"docs": args.docs, "tokens": tokens, "threads": os.cpu_count(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
