"""Ingestion: discover → diff → parse → chunk → embed → commit, per document, for one collection.

Why it is shaped this way:
- Unchanged files cost a stat and a hash, never a parse.
- Documents are parsed and chunked one by one but embedded in batches across documents (corpora of many
  short files would otherwise run the model at batch size 1-2), then committed each in its own savepoint of
  one transaction: atomic per document, cheap per batch.
- A file that fails is recorded with its reason and the run goes on; an interrupt leaves SQL consistent
  (committed batches stay, the rest is redone next time). Every commit appends to the change log, which the
  indexes follow: FAISS right after each commit, the lexical index once at the end of the run.
- One ingestion run per collection at a time, across threads, processes and (on PostgreSQL) hosts, so two runs
  never walk and diff the same folder at once: see :func:`writer_lock`. Deletes and summaries do not take it:
  each is one short transaction, ordered by the log.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from filelock import FileLock
from sqlalchemy.orm import Session

from ingest.chunking import Chunker, TextChunk, line_meta, page_meta
from ingest.discover import content_hash, discover
from ingest.moves import apply_moves, find_moves
from ingest.readers import OcrOptions, ReadCancelled, ReadError, Work, doc_type_for, read_document
from rag.models.embedder import Embedder
from rag.settings import Settings
from rag.store.schema import Collection, Document
from rag.store.store import Changes, ChunkRecord, Store
from rag.store.text import path_text
from rag.types import Cancelled, FileOutcome, IngestReport, ProgressFn  # Cancelled, ProgressFn: also imported from here

log = logging.getLogger(__name__)

FLUSH_BATCHES = 8
"""Documents are committed once this many embedding batches of chunks are waiting: large enough to keep the
model busy at full batch size, small enough that an interrupt loses little work."""


@dataclass
class _Pending:
    path: Path
    content_hash: str
    size: int
    mtime: float
    doc_type: str
    title: str | None
    meta: dict
    chunks: list[TextChunk]


@dataclass
class _Run:
    coll: Collection
    report: IngestReport
    pending: list[_Pending] = field(default_factory=list)
    pending_chunks: int = 0
    last_save: float = field(default_factory=time.monotonic)


_thread_locks: dict[str, threading.Lock] = {}
_thread_locks_guard = threading.Lock()


@contextmanager
def writer_lock(store: Store, collection: str) -> Iterator[None]:
    """One writer per collection: a thread lock (this process), a lock file in the data directory (this host),
    and on PostgreSQL an advisory lock (every host on that database), always taken in that order."""
    settings = store.settings
    key = f"{settings.data_dir}:{collection}"
    with _thread_locks_guard:
        tlock = _thread_locks.setdefault(key, threading.Lock())
    lock_dir = settings.data_dir / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in collection)
    with tlock, FileLock(str(lock_dir / f"{safe}.lock")), store.advisory_lock(f"writer:{collection}"):
        yield


class IngestPipeline:
    def __init__(self, store: Store, embedder: Embedder, settings: Settings) -> None:
        self.store = store
        self.embedder = embedder
        self.settings = settings
        self.chunker = Chunker(
            embedder.token_offsets, min(settings.chunk_size, embedder.max_tokens - 2), settings.chunk_overlap
        )

    # --- public ------------------------------------------------------------------------------------
    def run(
        self,
        paths: list[str | Path],
        collection: str = "default",
        *,
        progress: ProgressFn | None = None,
        should_cancel: Callable[[], bool] | None = None,
        summarize_pending: bool = False,
    ) -> IngestReport:
        started = time.monotonic()
        with writer_lock(self.store, collection):
            coll = self.store.collection(collection, model=self.embedder.name, dim=self.embedder.dim)
            state = _Run(coll, IngestReport(collection=collection))
            try:
                self._run(state, paths, progress, should_cancel, summarize_pending)
                self._flush(state, summarize_pending)
            finally:
                # After an interrupt the unflushed documents are simply redone by the next run; what was
                # committed is in SQL and the log, and the indexes catch up with it here.
                self.store.follow(coll)
                self.store.prune_log(coll)
                state.report.elapsed_s = time.monotonic() - started
        return state.report

    def delete(self, collection: str, doc_ids: list[int]) -> list[int]:
        """Remove documents (and their chunks and vectors) in one short transaction; returns the removed chunk ids.

        No collection lock: a delete never waits behind a running ingestion (the log orders the two)."""
        coll = self.store.collection(collection)

        def work(s: Session, changes: Changes) -> list[int]:
            return self.store.remove_documents(s, changes, doc_ids)

        return self.store.write(coll, work)

    def plan(self, paths: list[str | Path], collection: str = "default") -> tuple[list[Path], IngestReport]:
        """The queued form of :meth:`run`: walk and diff, remove the documents of files that are gone, and return
        the files to visit (in batches, the tasks of :meth:`ingest_files`) with the report of what was settled here."""
        with writer_lock(self.store, collection):
            coll = self.store.collection(collection, model=self.embedder.name, dim=self.embedder.dim)
            state = _Run(coll, IngestReport(collection=collection))
            files, _ = self._walk(state, paths)
        return files, state.report

    def ingest_files(self, collection: str, paths: list[Path], *, summarize_pending: bool = False) -> list[FileOutcome]:
        """A few files start to end, embedded together and committed one transaction per document: the unit of
        work of a queue worker (a batch, because short documents embedded one by one run the model at batch size
        1-2: 0.43x the in-process throughput on SciFact abstracts, bench/workers.py).

        Idempotent, so a task redelivered after its worker died (before or after a commit) leaves the store as
        one delivery would: the second visit finds the content hash stored and reports the file unchanged."""
        coll = self.store.collection(collection, model=self.embedder.name, dim=self.embedder.dim)
        state = _Run(coll, IngestReport(collection=collection))
        for path in paths:
            known = self.store.find_document(str(path), collection)
            state.report.files.append(self._visit(state, path, known))
            self._flush_when_full(state, summarize_pending)
        self._flush(state, summarize_pending)
        return state.report.files

    # --- the walk ----------------------------------------------------------------------------------
    def _walk(self, state: _Run, paths: list[str | Path]) -> tuple[list[Path], dict[str, Document]]:
        """Discover and diff: reports missing and unsupported paths, moves documents whose content turned up at a
        new path, removes the others whose files are gone; returns the files to visit and the stored documents by path."""
        report = state.report
        found = discover(paths, self.settings.ignore_patterns, lambda p: doc_type_for(p) is not None)
        known = self.store.documents_by_path(state.coll.id)

        gone_explicit = {path_text(p) for p in found.missing}
        for path in found.missing:
            if path_text(path) not in known:
                report.files.append(FileOutcome(path_text(path), "failed", error="no such file or directory"))
        for path in found.unsupported:
            report.files.append(
                FileOutcome(path_text(path), "skipped", error=f"unsupported file type '{path.suffix or path.name}'")
            )

        present = {path_text(p) for p in found.files}
        roots = [path_text(r) + os.sep for r in found.roots]
        removed = [
            doc for path, doc in known.items()
            if path not in present and (path in gone_explicit or any(path.startswith(r) for r in roots))
        ]
        moves = find_moves(removed, found.files, known)  # renamed files keep their chunks (ingest/moves.py)
        report.files.extend(apply_moves(self.store, state.coll, moves))
        moved, arrived = {m.document.id for m in moves}, {m.path for m in moves}
        self._remove(state, [d for d in removed if d.id not in moved])
        return [f for f in found.files if f not in arrived], known

    def _run(self, state: _Run, paths, progress, should_cancel, summarize_pending) -> None:
        files, known = self._walk(state, paths)
        total = len(files)
        for done, path in enumerate(files, start=1):
            if should_cancel is not None and should_cancel():
                raise Cancelled(f"cancelled after {done - 1} of {total} files")
            state.report.files.append(self._visit(state, path, known.get(path_text(path)), should_cancel))
            self._flush_when_full(state, summarize_pending)
            if progress is not None:
                progress(done, total, path_text(path))

    def _remove(self, state: _Run, docs: list[Document]) -> None:
        if not docs:
            return
        def work(s: Session, changes: Changes) -> None:
            self.store.remove_documents(s, changes, [d.id for d in docs])

        self.store.write(state.coll, work, follow=False)
        state.report.files.extend(FileOutcome(d.path, "removed") for d in docs)

    def _visit(
        self, state: _Run, path: Path, known: Document | None, should_cancel: Callable[[], bool] | None = None,
    ) -> FileOutcome:
        doc_type = doc_type_for(path) or ""
        name = path_text(path)  # as stored and shown (rag/store/text.py)
        try:
            st = path.stat()
            if st.st_size > self.settings.max_file_bytes:
                raise ReadError(
                    f"file is {st.st_size / 2**20:.1f} MB, above the {self.settings.max_file_mb:g} MB limit (RAG_MAX_FILE_MB)"
                )
            digest = content_hash(path)
        except FileNotFoundError:
            if known is not None:
                self._remove(state, [known])
                return FileOutcome(name, "removed", error="file vanished during ingestion")
            return FileOutcome(name, "failed", error="file vanished during ingestion")
        except (OSError, ReadError) as exc:
            status = "skipped" if isinstance(exc, ReadError) else "failed"
            self._fail(state, path, "", 0, 0.0, doc_type, str(exc))
            return FileOutcome(name, status, error=str(exc))  # type: ignore[arg-type]

        if known is not None and known.content_hash == digest and known.status == "indexed":
            return FileOutcome(name, "unchanged", chunks=known.chunk_count)
        # One budget for parsing and chunking (RAG_PARSE_TIMEOUT_S): a file that takes longer fails alone.
        budget = Work(self.settings.max_file_bytes, self.settings.max_expanded_bytes, self.settings.parse_timeout_s,
                      should_cancel, what="parsing and chunking", max_paragraphs=self.settings.max_paragraphs,
                      ocr=OcrOptions.from_settings(self.settings))
        stage = "read the file"
        try:
            parsed = read_document(path, self.settings.max_file_bytes, work=budget)
            stage = "chunk the text"
            chunks = self.chunker.split(parsed.text, budget.check)
            if not chunks:
                raise ReadError("no text to index")
        except ReadCancelled as exc:  # the file is not at fault: nothing is recorded for it
            raise Cancelled(f"cancelled while reading {path}") from exc
        except FileNotFoundError:
            return FileOutcome(name, "failed", error="file vanished during ingestion")
        except Exception as exc:  # any failure of one file's parse or chunking fails that file alone
            error = str(exc) if isinstance(exc, ReadError) else f"could not {stage}: {_reason(exc)}"
            if not isinstance(exc, ReadError):
                log.warning("could not %s %s", stage, path, exc_info=True)
            self._fail(state, path, digest, st.st_size, st.st_mtime, doc_type, error)
            return FileOutcome(name, "failed", error=error)
        state.pending.append(
            _Pending(path, digest, st.st_size, st.st_mtime, parsed.doc_type, parsed.title, parsed.metadata, chunks)
        )
        state.pending_chunks += len(chunks)
        return FileOutcome(name, "updated" if known is not None else "added", chunks=len(chunks))

    def _flush_when_full(self, state: _Run, summarize_pending: bool) -> None:
        """Embed and commit once enough chunks wait; called after the visited file's outcome is in the report, so
        a document that fails at embedding or commit is marked failed there."""
        if state.pending_chunks >= FLUSH_BATCHES * self.settings.embed_batch_size:
            self._flush(state, summarize_pending)

    def _fail(self, state: _Run, path: Path, digest: str, size: int, mtime: float, doc_type: str, error: str) -> None:
        def work(s: Session, changes: Changes) -> None:
            self.store.record_failure(
                s, changes, state.coll, path=str(path), content_hash=digest, size=size, mtime=mtime, doc_type=doc_type, error=error
            )

        self.store.write(state.coll, work, follow=False)
        log.info("ingest failed for %s: %s", path, error)

    # --- embed + commit ----------------------------------------------------------------------------
    def _flush(self, state: _Run, summarize_pending: bool) -> None:
        if not state.pending:
            return
        batch, state.pending, state.pending_chunks = state.pending, [], 0
        embedded = self._embed(state, batch)

        def work(s: Session, changes: Changes) -> None:
            for item, vecs in embedded:
                page_starts, page_names = item.meta.get("page_starts"), item.meta.get("sheet_names")
                lines = item.meta.pop("ocr_lines", None)  # kept with the chunks they fall in, not the document
                records = [
                    ChunkRecord(c.position, c.text, c.token_count, v, c.start_char, c.end_char,
                                meta=page_meta(c, page_starts, page_names) | line_meta(c, lines))
                    for c, v in zip(item.chunks, vecs)
                ]
                try:
                    with s.begin_nested():
                        self.store.replace_document(
                            s, changes, state.coll, path=str(item.path), content_hash=item.content_hash, size=item.size,
                            mtime=item.mtime, doc_type=item.doc_type, title=item.title, meta=item.meta,
                            chunks=records, summary_pending=summarize_pending,
                        )
                except Exception as exc:  # one document's commit failure must not lose the batch
                    # One line per document (a full disk fails them all); the traceback at DEBUG.
                    log.error("commit failed for %s: %s", item.path, exc)
                    log.debug("commit failure of %s", item.path, exc_info=True)
                    self._mark_failed(state, item.path, f"could not store document: {exc}")

        self.store.write(state.coll, work, follow=False)
        if time.monotonic() - state.last_save > self.settings.index_save_interval_s:
            self.store.indexes.save(state.coll)
            state.last_save = time.monotonic()

    def _embed(self, state: _Run, batch: list[_Pending]) -> list[tuple[_Pending, np.ndarray]]:
        """Each document of the batch with its chunks' vectors: one embedding call for the batch, and when that
        fails, one call per document, so that only a document that fails alone is recorded as failed."""
        try:
            vectors = self.embedder.embed([c.text for p in batch for c in p.chunks])
        except Exception as exc:  # one file's failure must not fail the job
            if len(batch) > 1:
                log.warning("embedding %d documents together failed (%s); embedding them one by one", len(batch),
                            _reason(exc))
                return [pair for item in batch for pair in self._embed(state, [item])]
            (item,) = batch
            error = f"could not embed the text: {_reason(exc)}"
            log.warning("embedding %s failed", item.path, exc_info=True)
            self._fail(state, item.path, item.content_hash, item.size, item.mtime, item.doc_type, error)
            self._mark_failed(state, item.path, error)
            return []
        out, offset = [], 0
        for item in batch:
            out.append((item, vectors[offset : offset + len(item.chunks)]))
            offset += len(item.chunks)
        return out

    @staticmethod
    def _mark_failed(state: _Run, path: Path, error: str) -> None:
        for outcome in state.report.files:
            if outcome.path == path_text(path):
                outcome.status, outcome.error, outcome.chunks = "failed", error, 0


def _reason(exc: BaseException) -> str:
    """An exception as one line of a file's failure reason (its type, and its message when it has one)."""
    message = " ".join(str(exc).split())[:500]
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__
