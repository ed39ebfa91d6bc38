"""Watched folders at scale: how soon a saved file is searchable, what a folder rename costs, how a burst is batched.

    python bench/watch.py --chunks 100000
    python bench/watch.py --chunks 100000 --saves 0 --rename-files 0     # the burst alone (0 skips a part)

The collection (built once, then kept in ``--keep``, default ``$RAG_BENCH_CACHE/watch-<chunks>``) is SciFact abstracts
ingested by the real pipeline plus synthetic distractor chunks written straight into SQL, exactly as in
``bench/scale.py``; the watched folder sits beside it and starts empty on every run (the watcher's catch-up scan
removes what an earlier run left in the collection). Measured in this process, with the watcher of ``RAG.watch`` on
inotify and the default settings:

- save: a file written (created, or rewritten in place), from the end of its last write until both retrievers return
  it (dense for its own text, lexical for a word only it holds): p50 / p95 / max;
- rename: a folder of 1,000 files, indexed, renamed; seconds until every document has its new path, and the chunks
  the embedder was given meanwhile (0 expected);
- burst: 10,000 files written into the folder as fast as Python writes them; seconds from the first write until every
  document is in SQL and in both indexes, peak RSS of the process during the burst (VmHWM, reset before it), and the
  commits (change-log sequences taken) against the watcher's batches and the embedder's batches.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import time
from pathlib import Path

from _common import DATA, read_jsonl  # first: sets the offline env, puts the repo on sys.path
from scale import CACHE, fill_distractors, vocabulary

SCIFACT = DATA / "scifact"
REAL_DOCS = 300


def build(data: Path, chunks: int, corpus: list[dict]) -> None:
    """The collection of ``chunks`` chunks: real abstracts ingested, distractors in bulk, indexes built from SQL."""
    from rag import RAG

    seed = data.parent / "seed"
    seed.mkdir(parents=True, exist_ok=True)
    for d in corpus[:REAL_DOCS]:
        (seed / f"{d['id']}.txt").write_text(f"{d['title']}\n\n{d['text']}")
    rag = RAG(data)
    rag.ingest(seed, summarize=False)
    coll = rag.store.collection("default")
    real_ids = rag.store.index(coll).ids()
    _, real_vecs = rag.store.index(coll).vectors(real_ids.tolist())
    vocab, freq = vocabulary(corpus[:REAL_DOCS])
    fill_distractors(rag, chunks - len(real_ids), real_vecs, vocab, freq)
    rag.close()
    shutil.rmtree(data / "indexes")
    rag = RAG(data)
    coll = rag.store.collection("default")
    rag.store.index(coll)
    rag.store.lexical(coll, wait=True)
    rag.close()


def wait(check, timeout: float = 1800.0, poll: float = 0.02) -> float:
    """Seconds until ``check()`` is true (polled every ``poll`` seconds)."""
    t = time.perf_counter()
    while not check():
        if time.perf_counter() - t > timeout:
            raise TimeoutError("gave up waiting")
        time.sleep(poll)
    return time.perf_counter() - t


def top(rag, query: str, mode: str) -> str | None:
    hits = rag.retrieve(query, top_k=1, mode=mode)
    return hits[0].document if hits else None


def quiet(watcher) -> bool:
    status = watcher.status()[0]
    return status.state == "watching" and status.backlog == 0


def peak_reset() -> None:
    """Reset this process's peak resident set (VmHWM) to the current one."""
    Path("/proc/self/clear_refs").write_text("5")


def memory_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def saves(rag, watcher, folder: Path, texts: list[str], n: int) -> dict:
    """Files written and read back through both retrievers; half created, half rewritten in place."""
    seen = []
    for i in range(n):
        path = folder / f"save-{i // 2}.txt"  # even: a new file; odd: the same file rewritten
        marker = f"zqsave{i}marker"
        text = f"{texts[i]} {marker}"
        with open(path, "w") as fh:
            fh.write(text)
        written = time.perf_counter()
        wait(lambda path=path, text=text, marker=marker: top(rag, marker, "lexical") == str(path)
             and top(rag, text, "dense") == str(path), timeout=60)
        seen.append(time.perf_counter() - written)
        wait(lambda: quiet(watcher), timeout=60)
        time.sleep(0.3)
    seen.sort()
    return {"n": n, "p50_s": round(statistics.median(seen), 2), "p95_s": round(seen[int(0.95 * (n - 1))], 2),
            "max_s": round(seen[-1], 2)}


def rename_folder(rag, watcher, folder: Path, texts: list[str], n: int, embedded: list[int]) -> dict:
    project = folder / "project"
    project.mkdir()
    t = time.perf_counter()
    for i in range(n):
        (project / f"note-{i:04d}.txt").write_text(f"{texts[i % len(texts)]} zqnote{i}x")
    wait(lambda: len(rag.store.documents_under("default", str(project))) == n and quiet(watcher))
    indexed_s = time.perf_counter() - t
    before = embedded[0]
    renamed = folder / "project-2024"
    t = time.perf_counter()
    project.rename(renamed)
    done = wait(lambda: len(rag.store.documents_under("default", str(renamed))) == n
                and not rag.store.documents_under("default", str(project)))
    wait(lambda: quiet(watcher))
    assert top(rag, "zqnote7x", "lexical") == str(renamed / "note-0007.txt")
    return {"files": n, "first_indexed_s": round(indexed_s, 1), "rename_done_s": round(done, 2),
            "chunks_embedded": embedded[0] - before}


def burst(rag, watcher, folder: Path, texts: list[str], n: int, calls: list[int]) -> dict:
    target = folder / "burst"
    target.mkdir()
    wait(lambda: quiet(watcher))
    coll = rag.store.collection("default")
    generation, batches, embed_calls = coll.generation, watcher.status()[0].batches, calls[0]
    peak_reset()
    rss_before = memory_mb("VmRSS")
    t = time.perf_counter()
    for i in range(n):
        (target / f"doc-{i:05d}.txt").write_text(f"{texts[i % len(texts)]} zqburst{i}x")
    written_s = time.perf_counter() - t

    # Every document in SQL and the watcher idle: its last ingestion run has brought both indexes up to date.
    wait(lambda: len(rag.store.documents_under("default", str(target))) == n and quiet(watcher), poll=0.5)
    done_s = time.perf_counter() - t
    for i in (0, n // 3, n - 1):
        assert top(rag, f"zqburst{i}x", "lexical") == str(target / f"doc-{i:05d}.txt")
    status = watcher.status()[0]
    return {
        "files": n, "written_s": round(written_s, 1), "all_searchable_s": round(done_s, 1),
        "rss_before_mb": rss_before, "peak_rss_mb": memory_mb("VmHWM"),
        "commits": rag.store.collection("default").generation - generation,
        "watcher_batches": status.batches - batches, "embedder_batches": calls[0] - embed_calls,
        "rescans": status.rescans,
    }


def main() -> None:
    from rag import RAG
    from rag.settings import WatchedFolder

    parser = argparse.ArgumentParser()
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--saves", type=int, default=20)
    parser.add_argument("--rename-files", type=int, default=1000)
    parser.add_argument("--burst", type=int, default=10_000)
    parser.add_argument("--keep", type=Path, help="where the collection is kept (default: the bench cache)")
    args = parser.parse_args()

    corpus = read_jsonl(SCIFACT / "corpus.jsonl")
    texts = [f"{d['title']}. {d['text']}"[:600] for d in corpus[REAL_DOCS:]]  # never in the collection
    base = args.keep or CACHE / f"watch-{args.chunks}"
    data = base / "data"
    if not (data / "rag.db").exists():
        t = time.perf_counter()
        build(data, args.chunks, corpus)
        print(json.dumps({"built_s": round(time.perf_counter() - t)}), flush=True)
    folder = base / "watched"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()

    rag = RAG(data)
    embedder = rag.embedder
    texts_embedded, embed_calls = [0], [0]
    real_embed = embedder.embed

    def counting(batch, *, query=False):
        if not query:
            texts_embedded[0] += len(batch)
            embed_calls[0] += 1
        return real_embed(batch, query=query)

    embedder.embed = counting
    coll = rag.store.collection("default")
    t = time.perf_counter()
    rag.store.index(coll)
    rag.store.lexical(coll, wait=True)
    out: dict = {"chunks": len(rag.store.index(coll)), "index_kind": rag.store.index(coll).kind,
                 "open_s": round(time.perf_counter() - t, 1), "cpus": os.cpu_count()}
    watcher = rag.watch([WatchedFolder(path=folder, collection="default")], summarize=False)
    out["catch_up_s"] = round(wait(lambda: quiet(watcher) and watcher.status()[0].rescans > 0), 1)
    print(json.dumps(out), flush=True)
    if args.saves:
        out["save"] = saves(rag, watcher, folder, texts, args.saves)
        print(json.dumps(out), flush=True)
    if args.rename_files:
        out["rename"] = rename_folder(rag, watcher, folder, texts, args.rename_files, texts_embedded)
        print(json.dumps(out), flush=True)
    if args.burst:
        out["burst"] = burst(rag, watcher, folder, texts, args.burst, embed_calls)
    rag.close()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
