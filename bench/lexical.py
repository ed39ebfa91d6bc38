"""Lexical engines compared for an index that takes adds and deletes: bm25s (rebuilt per change, the old index),
SQLite FTS5 (inside the truth store) and tantivy (segments; what the service uses).

    pip install -e ".[bench]"   # bm25s + PyStemmer, for the old index
    python bench/lexical.py [--chunks 100000]

Measured on the same machine in one process, each engine alone:
- quality: nDCG@10 on SciFact (5,183 abstracts as documents, 300 test claims), no dense retrieval;
- query p50 / p95 on the SciFact claims over a collection of ``--chunks`` texts (SciFact abstracts plus
  distractor texts of 120 words drawn from the SciFact unigram distribution);
- update: one 10-chunk document added and then deleted, until searchable / gone, p50;
- resident memory added by the index (RSS after build minus before).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import DATA, read_jsonl  # first: sets the offline env, puts the repo on sys.path

SCIFACT = DATA / "scifact"


def rss_mb() -> float:
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def ndcg(ranked: list[int], relevant: set[int], k: int = 10) -> float:
    dcg = sum(1 / math.log2(i + 2) for i, d in enumerate(ranked[:k]) if d in relevant)
    return dcg / sum(1 / math.log2(i + 2) for i in range(min(k, len(relevant))))


class Bm25s:
    name = "bm25s (rebuild per change)"
    rounds = 2  # each change is a full rebuild: tens of seconds at 100k chunks

    def __init__(self, folder: Path) -> None:
        self.texts: dict[int, str] = {}

    def build(self, ids: list[int], texts: list[str]) -> None:
        import bm25s
        import Stemmer

        self.texts.update(zip(ids, texts))
        self.ids = np.fromiter(self.texts, dtype=np.int64)
        self.tok = bm25s.tokenization.Tokenizer(stemmer=Stemmer.Stemmer("english"), stopwords="en")
        tokens = self.tok.tokenize(list(self.texts.values()), update_vocab=True, return_as="ids", show_progress=False)
        self.model = bm25s.BM25()
        self.model.index(bm25s.tokenization.Tokenized(ids=tokens, vocab=self.tok.get_vocab_dict()), show_progress=False)

    def add(self, ids: list[int], texts: list[str]) -> None:
        self.build(ids, texts)

    def delete(self, ids: list[int]) -> None:
        for i in ids:
            self.texts.pop(i, None)
        self.build([], [])

    def search(self, q: str, k: int) -> list[int]:
        query = self.tok.tokenize([q], update_vocab=False, return_as="ids", show_progress=False)
        docs, scores = self.model.retrieve(query, k=k, show_progress=False, n_threads=1)
        return [int(self.ids[d]) for d, s in zip(docs[0], scores[0]) if s > 0]


class Fts5:
    name = "SQLite FTS5 (porter, unicode61)"
    rounds = 5

    def __init__(self, folder: Path) -> None:
        self.db = sqlite3.connect(folder / "fts.db")
        self.db.execute("CREATE VIRTUAL TABLE t USING fts5(body, tokenize='porter unicode61')")

    def build(self, ids: list[int], texts: list[str]) -> None:
        self.add(ids, texts)

    def add(self, ids: list[int], texts: list[str]) -> None:
        with self.db:
            self.db.executemany("INSERT INTO t(rowid, body) VALUES (?, ?)", zip(ids, texts))

    def delete(self, ids: list[int]) -> None:
        with self.db:
            self.db.executemany("DELETE FROM t WHERE rowid = ?", [(i,) for i in ids])

    def search(self, q: str, k: int) -> list[int]:
        terms = {w for w in "".join(c if c.isalnum() else " " for c in q.lower()).split() if len(w) > 1}
        if not terms:
            return []
        match = " OR ".join(f'"{t}"' for t in terms)
        rows = self.db.execute("SELECT rowid FROM t WHERE t MATCH ? ORDER BY bm25(t) LIMIT ?", (match, k))
        return [r[0] for r in rows]


class Tantivy:
    name = "tantivy (segments)"
    rounds = 5

    def __init__(self, folder: Path) -> None:
        from rag.store.lexical import LexicalIndex

        self.index = LexicalIndex(folder / "tantivy", collection_id=1)
        self.seq = 0

    def build(self, ids: list[int], texts: list[str]) -> None:
        self.index.rebuild([(np.asarray(ids, dtype=np.int64), texts)], 0)

    def add(self, ids: list[int], texts: list[str]) -> None:
        self.seq += 1
        self.index.apply(np.asarray(ids, dtype=np.int64), list(zip(ids, texts)), self.seq)

    def delete(self, ids: list[int]) -> None:
        self.seq += 1
        self.index.apply(np.asarray(ids, dtype=np.int64), [], self.seq)

    def search(self, q: str, k: int) -> list[int]:
        return self.index.search(q, k, None)[0].tolist()


def distractors(docs: list[dict], n: int) -> list[str]:
    counts: dict[str, int] = {}
    for d in docs:
        for w in d["text"].split():
            counts[w] = counts.get(w, 0) + 1
    words = np.asarray(sorted(counts))
    freq = np.asarray([counts[w] for w in words], dtype=np.float64)
    picks = np.random.default_rng(0).choice(len(words), size=(n, 120), p=freq / freq.sum())
    return [" ".join(words[row]) for row in picks]


def run(engine_cls, docs: list[dict], claims: list[dict], qrels: dict[str, set[int]], extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        gc.collect()
        before = rss_mb()
        engine = engine_cls(Path(tmp))
        ids = [int(d["id"]) for d in docs]
        texts = [f"{d['title']} {d['text']}" for d in docs]
        t = time.perf_counter()
        engine.build(ids, texts)
        quality = statistics.mean(ndcg(engine.search(q["question"], 10), qrels[q["id"]]) for q in claims)
        base = 10**9
        engine.add(list(range(base, base + len(extra))), extra)
        build_s = time.perf_counter() - t
        lat = []
        for q in claims:
            t = time.perf_counter()
            engine.search(q["question"], 50)
            lat.append((time.perf_counter() - t) * 1000)
        lat.sort()
        add_ms, del_ms = [], []
        for i in range(engine.rounds):
            new = list(range(2 * base + i * 10, 2 * base + i * 10 + 10))
            t = time.perf_counter()
            engine.add(new, [f"zqx{i}marker update text {j}" for j in range(10)])
            assert engine.search(f"zqx{i}marker", 1), "the added document is not searchable"
            add_ms.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            engine.delete(new)
            assert not engine.search(f"zqx{i}marker", 1), "the deleted document is still found"
            del_ms.append((time.perf_counter() - t) * 1000)
        return {
            "engine": engine.name,
            "scifact_ndcg@10": round(quality, 4),
            "build_s": round(build_s, 1),
            "query_p50_ms": round(statistics.median(lat), 1),
            "query_p95_ms": round(lat[int(len(lat) * 0.95)], 1),
            "add_doc_p50_ms": round(statistics.median(add_ms), 1),
            "delete_doc_p50_ms": round(statistics.median(del_ms), 1),
            "rss_added_mb": round(rss_mb() - before),
        }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--engines", default="tantivy,fts5,bm25s")
    args = parser.parse_args()
    docs = read_jsonl(SCIFACT / "corpus.jsonl")
    qrels: dict[str, set[int]] = {}
    for line in (SCIFACT / "qrels_test.tsv").read_text().splitlines()[1:]:
        qid, did, _ = line.split("\t")
        qrels.setdefault(qid, set()).add(int(did))
    claims = [q for q in read_jsonl(SCIFACT / "queries.jsonl") if q["id"] in qrels]
    extra = distractors(docs, max(0, args.chunks - len(docs)))
    engines = {"tantivy": Tantivy, "fts5": Fts5, "bm25s": Bm25s}
    for name in args.engines.split(","):
        print(json.dumps(run(engines[name], docs, claims, qrels, extra)), flush=True)


if __name__ == "__main__":
    main()
