"""Scale: per-change and per-query cost at 100k and 1M chunks (the change-log store, tantivy, flat/IVF FAISS).

    python bench/scale.py --chunks 100000
    python bench/scale.py --chunks 1000000

The collection is real SciFact chunks plus synthetic distractors:
- real: 1,000 SciFact abstracts (every document relevant to a test claim, then others in corpus order), ingested
  by the real pipeline with the real embedder; their chunks are the only relevant ones for the 300 test claims.
- distractors: vectors drawn from a Gaussian with the real chunk vectors' mean and covariance, then normalised, so
  they crowd the same region of the sphere as real ones (uniform random vectors would sit far from every query and
  flatter recall); text of 120 words drawn from the SciFact unigram distribution, so BM25 sees realistic document
  frequencies. Written straight into SQL in bulk (documents of 100 chunks), then the indexes are built from SQL
  exactly as a process that lost its index directory would build them.

Measured, each in the process that does it:
- build: indexes from SQL (FAISS flat or IVF, tantivy), seconds;
- retrieve: hybrid / dense / lexical p50 and p95 over the claims, model loaded;
- recall: dense recall@10 of the index in use against exact search over the same vectors (numpy, float32);
- nDCG@10 of hybrid retrieval on the claims with the distractors present, with the index in use and with exact
  dense search (the same store, IVF swapped for flat);
- change: one document added, replaced, deleted: committed and found by both retrievers, p50 / p95 of the wall time
  (its vectors precomputed: embedding is not part of the cost measured);
- second process: a query process (cold start from the saved index files: time to its first answer, RSS after
  queries) sees a write by this process: time until both its retrievers return the new document;
- memory and disk: RSS per chunk of the query process; bytes per chunk of SQL + index files.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import DATA, REPO, read_jsonl  # first: sets the offline env, puts the repo on sys.path

SCIFACT = DATA / "scifact"
CACHE = Path(os.environ.get("RAG_BENCH_CACHE", Path(tempfile.gettempdir()) / "rag-bench-cache"))
REAL_DOCS = 1000
WORDS_PER_CHUNK = 120
PER_DOC = 100


def claims_and_qrels() -> tuple[list[dict], dict[str, set[str]]]:
    qrels: dict[str, set[str]] = {}
    for line in (SCIFACT / "qrels_test.tsv").read_text().splitlines()[1:]:
        qid, did, _ = line.split("\t")
        qrels.setdefault(qid, set()).add(did)
    claims = [q for q in read_jsonl(SCIFACT / "queries.jsonl") if q["id"] in qrels]
    return claims, qrels


def real_corpus(qrels: dict[str, set[str]]) -> list[dict]:
    corpus = read_jsonl(SCIFACT / "corpus.jsonl")
    relevant = set().union(*qrels.values())
    chosen = [d for d in corpus if d["id"] in relevant]
    chosen += [d for d in corpus if d["id"] not in relevant][: REAL_DOCS - len(chosen)]
    return chosen


def ingest_real(rag, docs: list[dict], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for d in docs:
        (folder / f"{d['id']}.txt").write_text(f"{d['title']}\n\n{d['text']}")
    t = time.perf_counter()
    report = rag.ingest(folder, summarize=False)
    print(f"real chunks: {report.added} documents in {time.perf_counter() - t:.0f}s", flush=True)


def fill_distractors(rag, n: int, real_vecs: np.ndarray, vocab: list[str], freq: np.ndarray) -> float:
    """Bulk-insert ``n`` distractor chunks (SQL only, as a restore of a dump would); returns seconds."""
    from sqlalchemy import insert

    from rag.store.indexes import encode_vector
    from rag.store.schema import Chunk, Document

    rng = np.random.default_rng(0)
    mean = real_vecs.mean(axis=0)
    chol = np.linalg.cholesky(np.cov(real_vecs, rowvar=False) + 1e-6 * np.eye(real_vecs.shape[1]))
    coll = rag.store.collection("default")
    words = np.asarray(vocab)
    t = time.perf_counter()
    batch_docs = 100
    for first in range(0, n // PER_DOC, batch_docs):
        ndocs = min(batch_docs, n // PER_DOC - first)
        with rag.store.sessions.begin() as s:
            doc_ids = list(s.scalars(insert(Document).returning(Document.id, sort_by_parameter_order=True), [
                {"collection_id": coll.id, "path": f"/distractors/{first + i:06d}.txt", "content_hash": str(first + i),
                 "size": 0, "mtime": 0.0, "doc_type": "txt", "status": "indexed", "chunk_count": PER_DOC, "meta": {},
                 "summary_state": "none"}
                for i in range(ndocs)
            ]))
            vecs = mean + rng.standard_normal((ndocs * PER_DOC, len(mean))) @ chol.T
            vecs = (vecs / np.linalg.norm(vecs, axis=1, keepdims=True)).astype(np.float32)
            picks = rng.choice(len(words), size=(ndocs * PER_DOC, WORDS_PER_CHUNK), p=freq)
            rows = []
            for i, doc_id in enumerate(doc_ids):
                for j in range(PER_DOC):
                    k = i * PER_DOC + j
                    rows.append({
                        "document_id": doc_id, "collection_id": coll.id, "kind": "chunk", "position": j,
                        "text": " ".join(words[picks[k]]), "token_count": WORDS_PER_CHUNK, "meta": {},
                        "embedding": encode_vector(vecs[k]),
                    })
            s.execute(insert(Chunk), rows)
        if first % 1000 == 0:
            print(f"  distractors: {(first + ndocs) * PER_DOC:,} ({time.perf_counter() - t:.0f}s)", flush=True)
    return time.perf_counter() - t


def vocabulary(docs: list[dict]) -> tuple[list[str], np.ndarray]:
    counts: dict[str, int] = {}
    for d in docs:
        for w in d["text"].split():
            counts[w] = counts.get(w, 0) + 1
    vocab = sorted(counts)
    freq = np.asarray([counts[w] for w in vocab], dtype=np.float64)
    return vocab, freq / freq.sum()


def percentiles(values: list[float]) -> dict:
    values = sorted(values)
    return {"p50": round(statistics.median(values), 1), "p95": round(values[int(len(values) * 0.95)], 1)}


def timed(fn, items) -> list[float]:
    out = []
    for item in items:
        t = time.perf_counter()
        fn(item)
        out.append((time.perf_counter() - t) * 1000)
    return out


def ndcg(ranked: list[str], relevant: set[str], k: int = 10) -> float:
    dcg = sum(1 / math.log2(i + 2) for i, d in enumerate(ranked[:k]) if d in relevant)
    ideal = sum(1 / math.log2(i + 2) for i in range(min(k, len(relevant))))
    return dcg / ideal


def doc_ranking(hits) -> list[str]:
    seen: dict[str, None] = {}
    for h in hits:
        seen.setdefault(Path(h.document).stem, None)
    return list(seen)


def change_cost(rag, rng: np.random.Generator, n: int) -> dict:
    """Add / replace / delete one 10-chunk document; wall time until both retrievers agree with SQL."""
    from rag.store.store import ChunkRecord

    coll = rag.store.collection("default")
    out: dict[str, list[float]] = {"add": [], "replace": [], "delete": []}
    for i in range(n):
        marker = f"zqx{i}marker"
        vecs = rng.standard_normal((10, coll.embed_dim)).astype(np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        for op in ("add", "replace", "delete"):
            t = time.perf_counter()
            path = f"/changes/{i}.txt"
            if op == "delete":
                doc = rag.store.find_document(path)
                rag.pipeline.delete("default", [doc.id])
            else:
                word = marker if op == "add" else marker + "b"
                records = [ChunkRecord(j, f"{word} change {j}", 3, vecs[j]) for j in range(10)]

                def work(s, changes, records=records, path=path, op=op) -> None:
                    rag.store.replace_document(
                        s, changes, coll, path=path, content_hash=op, size=0, mtime=0.0, doc_type="txt", title=None, meta={},
                        chunks=records, summary_pending=False,
                    )

                rag.store.write(coll, work)
            cur = rag.store.collection("default")
            lexical = rag.store.lexical(cur, generation=cur.generation)
            _, dense_ids = rag.store.index(cur, generation=cur.generation).search(vecs[0], 1)
            lex_ids, _ = lexical.search(marker + ("b" if op == "replace" else ""), 1, None)
            out[op].append((time.perf_counter() - t) * 1000)
            rows = rag.store.chunk_rows(dense_ids.tolist())
            top_is_new = bool(rows) and next(iter(rows.values())).path == path
            assert (len(lex_ids) > 0) == (op != "delete") == top_is_new, (op, lex_ids, rows)
    return {op: percentiles(v) for op, v in out.items()}


QUERY_PROCESS = r"""
import json, os, resource, sys, time
sys.path.insert(0, {repo!r})
t0 = time.perf_counter()
from rag import RAG
rag = RAG({data!r}, **{settings!r})
hits = rag.retrieve("cold start: first answer", top_k=5)
first = time.perf_counter() - t0
claims = json.loads({claims!r})
for q in claims:
    rag.retrieve(q, top_k=10)
print(json.dumps({{"cold_first_answer_s": round(first, 2)}}), flush=True)
for line in sys.stdin:
    marker = line.strip()
    t = time.perf_counter()
    while True:
        coll = rag.store.collection("default")
        lex = rag.store.lexical(coll, generation=coll.generation).search(marker, 1, None)[0]
        dense = rag.store.index(coll, generation=coll.generation)
        if len(lex) and dense.applied >= coll.generation:
            break
        time.sleep(0.01)
    seen = time.perf_counter() - t
    rss = int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({{"seen_s": round(seen, 3), "rss": rss, "peak": peak}}), flush=True)
"""


def second_process(rag, data: Path, settings: dict, claims: list[str], rounds: int = 5) -> dict:
    from rag.store.store import ChunkRecord

    rag.store.indexes.save_all()
    script = QUERY_PROCESS.format(repo=str(REPO), data=str(data), settings=settings, claims=json.dumps(claims[:50]))
    proc = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    first = json.loads(proc.stdout.readline())
    coll = rag.store.collection("default")
    seen, rss, peak = [], 0, 0
    rng = np.random.default_rng(7)
    for i in range(rounds):
        marker = f"qqv{i}visible"
        vec = rng.standard_normal(coll.embed_dim).astype(np.float32)
        vec /= np.linalg.norm(vec)

        def work(s, changes, marker=marker, vec=vec, i=i) -> None:
            rag.store.replace_document(
                s, changes, coll, path=f"/visible/{i}.txt", content_hash="v", size=0, mtime=0.0, doc_type="txt", title=None,
                meta={}, chunks=[ChunkRecord(0, f"{marker} text", 2, vec)], summary_pending=False,
            )

        t = time.perf_counter()
        rag.store.write(coll, work, follow=False)  # this process commits; the other finds out from the log
        commit_s = time.perf_counter() - t
        proc.stdin.write(marker + "\n")
        proc.stdin.flush()
        reply = json.loads(proc.stdout.readline())
        seen.append((commit_s + reply["seen_s"]) * 1000)
        rss, peak = reply["rss"], reply["peak"]
    proc.stdin.close()
    proc.wait(timeout=60)
    return {
        **first, "visible_ms": percentiles(seen), "query_process_rss_mb": round(rss / 2**20),
        "query_process_peak_rss_mb": round(peak / 2**20),
    }


def main() -> None:
    from rag import RAG

    parser = argparse.ArgumentParser()
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--changes", type=int, default=10)
    parser.add_argument("--keep", type=Path, help="data directory to keep (default: a temporary one); if it holds a "
                        "collection already, only the measurements run")
    args = parser.parse_args()

    claims, qrels = claims_and_qrels()
    claims = claims[: args.queries]
    docs = real_corpus(qrels)
    vocab, freq = vocabulary(docs)
    settings: dict = {}
    tmp = tempfile.TemporaryDirectory()
    data = args.keep or Path(tmp.name) / "data"
    reuse = (data / "rag.db").exists()
    rag = RAG(data, **settings)
    out: dict = {"chunks_target": args.chunks}

    if reuse:  # measure again on a kept collection
        coll = rag.store.collection("default")
        t = time.perf_counter()
        index = rag.store.index(coll)
        rag.store.lexical(coll, wait=True)
        out.update(chunks=len(index), index_kind=index.kind, open_s=round(time.perf_counter() - t, 1))
    else:
        ingest_real(rag, docs, Path(tmp.name) / "scifact")
        coll = rag.store.collection("default")
        real_ids = rag.store.index(coll).ids()
        _, real_vecs = rag.store.index(coll).vectors(real_ids.tolist())
        out["fill_s"] = round(fill_distractors(rag, args.chunks - len(real_ids), real_vecs, vocab, freq), 1)

        # Build from SQL, as a process that lost its index directory would (this is also the initial build).
        rag.close()
        shutil.rmtree(data / "indexes")
        rag = RAG(data, **settings)
        coll = rag.store.collection("default")
        t = time.perf_counter()
        index = rag.store.index(coll)
        out["build_dense_s"] = round(time.perf_counter() - t, 1)
        t = time.perf_counter()
        rag.store.lexical(coll, wait=True)
        out["build_lexical_s"] = round(time.perf_counter() - t, 1)
        out["chunks"] = len(index)
        out["index_kind"] = index.kind
        print(json.dumps(out), flush=True)

    texts = [q["question"] for q in claims]
    rag.retrieve("warm up", top_k=10)
    for mode in ("hybrid", "dense", "lexical"):
        out[f"{mode}_ms"] = percentiles(timed(lambda q, mode=mode: rag.retrieve(q, top_k=10, mode=mode), texts))
    out["embed_query_ms"] = percentiles(timed(rag.embedder.embed_query, texts))

    # dense recall@10 against exact search over the same vectors, and nDCG with the distractors present
    all_ids = index.ids()
    ids_sorted = np.sort(all_ids)
    _, exact_vecs = rag.store.indexes._fetch_vectors(ids_sorted, coll.embed_dim)
    recalls, ndcg_used, ndcg_exact = [], [], []
    for q in claims:
        qv = rag.embedder.embed_query(q["question"])
        exact = ids_sorted[np.argsort(-(exact_vecs @ qv))[:10]]
        _, got = index.search(qv, 10)
        recalls.append(len(set(got.tolist()) & set(exact.tolist())) / 10)
        ndcg_used.append(ndcg(doc_ranking(rag.retrieve(q["question"], top_k=10)), qrels[q["id"]]))
    out["dense_recall@10_vs_exact"] = round(statistics.mean(recalls), 4)
    out["ndcg@10_hybrid"] = round(statistics.mean(ndcg_used), 4)
    if index.kind == "ivf":
        from rag.store.vectors import AnnConfig, VectorIndex

        exact_config = AnnConfig(threshold=10**12, nprobe=1, storage="fp16")  # never approximate
        flat = VectorIndex.build(index.path, coll.embed_model, coll.embed_dim, exact_config, ids_sorted, exact_vecs,
                                 index.applied)
        with index.lock:  # swapped in for the comparison only; its config keeps it from being "retrained"
            saved = (index._index, index.applied, index.trained_for, index.config)
            index.replace_with(flat)
            index.config = exact_config
        for q in claims:
            ndcg_exact.append(ndcg(doc_ranking(rag.retrieve(q["question"], top_k=10)), qrels[q["id"]]))
        with index.lock:
            index._index, index.applied, index.trained_for, index.config = saved
        out["ndcg@10_hybrid_exact_dense"] = round(statistics.mean(ndcg_exact), 4)
    del exact_vecs
    print(json.dumps(out), flush=True)

    out["change_ms"] = change_cost(rag, np.random.default_rng(3), args.changes)
    print(json.dumps(out), flush=True)
    out["second_process"] = second_process(rag, data, settings, texts)
    rag.close()
    disk = sum(p.stat().st_size for p in data.rglob("*") if p.is_file() and "models" not in p.parts)
    out["disk_bytes_per_chunk"] = round(disk / out["chunks"])
    out["rss_bytes_per_chunk"] = round(out["second_process"]["query_process_rss_mb"] * 2**20 / out["chunks"])
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
