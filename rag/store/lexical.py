"""The lexical (BM25) index of one collection: a tantivy index that takes adds and deletes.

Why tantivy (measured in ``bench/lexical.py``, numbers in docs/querying.md): the bm25s index it replaces had to be
rebuilt from the whole collection after every change (25-36 s at 100k chunks), while tantivy writes a change as a
small new segment (milliseconds), merges segments in the background of that write, answers top-k with block-max
WAND instead of scoring every matching chunk, and keeps its postings in memory-mapped files, so a process's
resident memory does not grow with the collection. Analysis matches the old index: Unicode word tokens,
lower-cased, Lucene's English stop words, Snowball English stems.

Following the change log: the folder holds the tantivy index and ``applied.json``, the last log sequence its
committed segments reflect, written (atomically) after each tantivy commit. Several processes on one host share
the folder: one applies at a time under a file lock, the others reload. A crash between a commit and the sidecar
only makes the next catch-up re-apply entries, which is idempotent (every touched id is deleted before it is added).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import tantivy
from filelock import FileLock, Timeout

log = logging.getLogger(__name__)

_ANALYZER = "rag_en"
_APPLIED = "applied.json"
_WRITER_HEAP = 64_000_000  # bytes; tantivy needs at least 15 MB for one thread


def _analyzer() -> tantivy.TextAnalyzer:
    return (
        tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple())
        .filter(tantivy.Filter.remove_long(40))
        .filter(tantivy.Filter.lowercase())
        .filter(tantivy.Filter.stopword("english"))
        .filter(tantivy.Filter.stemmer("english"))
        .build()
    )


def _schema() -> tantivy.Schema:
    builder = tantivy.SchemaBuilder()
    builder.add_integer_field("chunk_id", indexed=True, fast=True)
    builder.add_text_field("body", tokenizer_name=_ANALYZER, index_option="freq")
    return builder.build()


def _write_json(path: Path, value: dict) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    with open(tmp, "w") as fh:
        json.dump(value, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class LexicalIndex:
    """BM25 over one collection's chunk texts (summaries included), keyed by chunk id."""

    def __init__(self, folder: Path, collection_id: int) -> None:
        self.folder = folder
        self.collection_id = collection_id
        self._analyzer = _analyzer()
        self._schema = _schema()
        self._write_lock = FileLock(str(folder.with_name(folder.name + ".lock")))
        self._thread_lock = threading.Lock()  # the file lock is re-entrant per object; threads need their own
        self.applied = -1  # the log sequence this process's searcher reflects; -1: nothing usable yet
        self._index: tantivy.Index | None = None
        self._searcher: tantivy.Searcher | None = None
        self._open()

    # --- opening ---------------------------------------------------------------------------------------
    def _open(self) -> None:
        """Open the folder if it holds this collection's index; otherwise leave it empty (``applied == -1``)."""
        try:
            meta = json.loads((self.folder / _APPLIED).read_text())
            if meta.get("collection_id") != self.collection_id:
                return
            index = tantivy.Index(self._schema, path=str(self.folder), reuse=True)
            index.register_tokenizer(_ANALYZER, self._analyzer)
            self._index, self._searcher = index, index.searcher()
            self.applied = int(meta["seq"])
        except (OSError, ValueError, KeyError) as exc:  # absent, torn or foreign: the caller rebuilds from SQL
            log.info("lexical index at %s not opened (%s)", self.folder, exc)
            self._index, self._searcher, self.applied = None, None, -1

    def refresh(self) -> None:
        """Pick up what another process applied: read its sequence first, then reload, so the searcher holds at
        least what ``applied`` claims."""
        try:
            seq = int(json.loads((self.folder / _APPLIED).read_text())["seq"])
        except (OSError, ValueError, KeyError):
            return
        if seq > self.applied and self._index is not None:
            self._index.reload()
            self._searcher = self._index.searcher()
            self.applied = seq

    def __len__(self) -> int:
        return 0 if self._searcher is None else int(self._searcher.num_docs)

    # --- writing ---------------------------------------------------------------------------------------
    def try_lock(self, blocking: bool) -> bool:
        """Take the right to write (this thread, then this host); False when another holds it and not ``blocking``."""
        if not self._thread_lock.acquire(blocking=blocking):
            return False
        try:
            self._write_lock.acquire(timeout=-1 if blocking else 0)
        except Timeout:
            self._thread_lock.release()
            return False
        return True

    def unlock(self) -> None:
        self._write_lock.release()
        self._thread_lock.release()

    def apply(self, remove: np.ndarray, add: Iterable[tuple[int, str]], seq: int) -> None:
        """Delete ``remove`` ids, add ``(id, text)`` pairs, commit and record ``seq``. Caller holds the lock."""
        if self._index is None:
            raise RuntimeError("apply on an index that was never built")
        writer = self._index.writer(heap_size=_WRITER_HEAP, num_threads=1)
        for cid in remove.tolist():
            writer.delete_documents_by_term("chunk_id", cid)
        for cid, text in add:
            writer.add_document(tantivy.Document(chunk_id=int(cid), body=text))
        writer.commit()
        writer.wait_merging_threads()  # merges finish before the writer (and its lock) is released
        self._record(seq)

    def rebuild(self, batches: Iterable[tuple[np.ndarray, list[str]]], seq: int) -> None:
        """Build from scratch (the folder was lost, corrupt, or older than the log). Caller holds the lock."""
        tmp = self.folder.with_name(f"{self.folder.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        index = tantivy.Index(self._schema, path=str(tmp))
        index.register_tokenizer(_ANALYZER, self._analyzer)
        writer = index.writer(heap_size=_WRITER_HEAP * 2, num_threads=1)
        for ids, texts in batches:
            for cid, text in zip(ids.tolist(), texts):
                writer.add_document(tantivy.Document(chunk_id=cid, body=text))
        writer.commit()
        writer.wait_merging_threads()
        _write_json(tmp / _APPLIED, {"collection_id": self.collection_id, "seq": seq})
        old = self.folder.with_name(f"{self.folder.name}.old-{os.getpid()}")
        if self.folder.exists():
            self.folder.rename(old)
        tmp.rename(self.folder)
        shutil.rmtree(old, ignore_errors=True)
        self._open()

    def _record(self, seq: int) -> None:
        _write_json(self.folder / _APPLIED, {"collection_id": self.collection_id, "seq": seq})
        self._index.reload()  # type: ignore[union-attr]
        self._searcher = self._index.searcher()  # type: ignore[union-attr]
        self.applied = seq

    # --- reading ---------------------------------------------------------------------------------------
    def ids(self) -> np.ndarray:
        """Every chunk id held (a full scan: for checks and tests, never on the query path)."""
        searcher = self._searcher
        if searcher is None or searcher.num_docs == 0:
            return np.zeros(0, np.int64)
        hits = searcher.search(tantivy.Query.all_query(), searcher.num_docs, count=False).hits
        return np.asarray(searcher.fast_field_values("chunk_id", [addr for _, addr in hits]), dtype=np.int64)

    def search(self, question: str, k: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (chunk ids, BM25 scores) for the question's terms, any of them (OR), best first."""
        empty = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32))
        searcher, index = self._searcher, self._index
        if searcher is None or index is None or k <= 0:
            return empty
        terms = dict.fromkeys(self._analyzer.analyze(question))  # unique, in order
        if not terms or (allowed is not None and len(allowed) == 0):
            return empty
        clauses = [(tantivy.Occur.Should, tantivy.Query.term_query(self._schema, "body", t)) for t in terms]
        if allowed is not None:
            only = tantivy.Query.term_set_query(self._schema, "chunk_id", [int(i) for i in allowed])
            clauses.append((tantivy.Occur.Must, tantivy.Query.const_score_query(only, 0.0)))
            query = tantivy.Query.boolean_query(clauses, 1)
        else:
            query = tantivy.Query.boolean_query(clauses)
        try:
            hits = searcher.search(query, k, count=False).hits
            ids = searcher.fast_field_values("chunk_id", [addr for _, addr in hits]) if hits else []
        except (OSError, ValueError) as exc:  # a segment damaged on disk: answer without it, rebuild at next use
            log.warning("lexical index at %s is unreadable (%s); it will be rebuilt from SQL", self.folder, exc)
            self._index, self._searcher, self.applied = None, None, -1
            return empty
        if not hits:
            return empty
        return np.asarray(ids, dtype=np.int64), np.asarray([score for score, _ in hits], dtype=np.float32)
