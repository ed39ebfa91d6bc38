"""This process's search indexes (FAISS and lexical, per collection), kept in step with SQL through the change log.

Every index remembers the last log sequence it applied; whoever needs it current (a query, the writer after its
commit, the background follower of ``rag serve``) reads only the log entries after that sequence and applies their
net effect. Nothing here reads the whole collection except a rebuild, which happens only when an index is missing,
unreadable, older than the log's retention, or holds a different number of chunks than SQL when it is first
opened in this process (a file from before a crash, or an old file beside a new header, is never trusted blindly).

Dense search is always current: catching up costs the size of the change. The lexical index commits a tantivy
segment per catch-up, so a query never waits for it: a query that finds it behind starts a catch-up in the
background and answers from the previous state, whose chunks that SQL no longer has are dropped when hits are read.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session, aliased, sessionmaker

from rag.settings import Settings
from rag.store import changelog
from rag.store.lexical import LexicalIndex
from rag.store.schema import Chunk, Collection
from rag.store.summary_vectors import SummaryVectors
from rag.store.vectors import AnnConfig, VectorIndex

log = logging.getLogger(__name__)

_FETCH = 5000  # ids per IN (...) query


def decode_vector(blob: bytes, dim: int) -> np.ndarray:
    """A stored embedding as float32: float16 since schema version 3, float32 before."""
    dtype = np.float16 if len(blob) == 2 * dim else np.float32
    return np.frombuffer(blob, dtype=dtype).astype(np.float32)


def encode_vector(vec: np.ndarray) -> bytes:
    return np.ascontiguousarray(vec, dtype=np.float16).tobytes()


class Indexes:
    """The FAISS and lexical indexes of every collection this process has touched."""

    def __init__(self, settings: Settings, sessions: sessionmaker[Session], path_of: Callable[[Collection, str], Path]):
        self.settings = settings
        self.sessions = sessions
        self.path_of = path_of
        self.ann = AnnConfig(settings.ann_threshold, settings.ann_nprobe, settings.ann_storage)
        self._vectors: dict[int, VectorIndex] = {}
        self._lexical: dict[int, LexicalIndex] = {}
        self._summaries: dict[int, SummaryVectors] = {}
        self._verified: set[int] = set()
        self._busy: set[str] = set()  # background jobs running: "lexical:<id>", "retrain:<id>"
        self._guard = threading.Lock()

    # --- dense ------------------------------------------------------------------------------------------
    def vectors(self, coll: Collection, generation: int) -> VectorIndex:
        """The collection's FAISS index, caught up to ``generation`` before this returns."""
        with self._guard:
            index = self._vectors.get(coll.id)
            if index is None:
                index = self._vectors[coll.id] = VectorIndex(
                    self.path_of(coll, ".faiss"), coll.embed_model, coll.embed_dim, self.ann
                )
        if index.applied < generation or coll.id not in self._verified:
            self._catch_up_vectors(coll, index, generation)
        if index.wants_retraining():
            self._in_background(f"retrain:{coll.id}", lambda: self._retrain(coll, index))
        return index

    def _catch_up_vectors(self, coll: Collection, index: VectorIndex, generation: int) -> None:
        with index.lock:
            if index.applied < generation:
                with self.sessions() as s:
                    todo = changelog.pending(s, coll.id, index.applied, generation)
                if todo.rebuild or index.applied < 0:
                    self._rebuild_vectors(coll, index, generation)
                else:
                    remove, add = changelog.net_effect(todo.entries)
                    ids, vecs = self._fetch_vectors(add, coll.embed_dim)
                    index.apply(remove, ids, vecs, generation)
            if coll.id not in self._verified:
                self._verified.add(coll.id)
                held, truth = len(index), self.count(coll.id, upto=index.applied)
                if index.applied > generation or (truth is not None and held != truth):
                    # A file of another life of this collection, or one that lost vectors its header promised.
                    log.warning("index of '%s' holds %d vectors at sequence %d, SQL %s chunks at %d: rebuilding",
                                coll.name, held, index.applied, truth, generation)
                    self._rebuild_vectors(coll, index, generation)

    def _rebuild_vectors(self, coll: Collection, index: VectorIndex, generation: int) -> None:
        ids, vecs = self._all_vectors(coll.id, coll.embed_dim)
        fresh = VectorIndex.build(index.path, coll.embed_model, coll.embed_dim, self.ann, ids, vecs, generation)
        index.replace_with(fresh)
        # Rows read after ``generation`` may already include later writes; catching up again from ``generation``
        # is idempotent and fixes any such row.
        log.info("index of '%s' rebuilt from SQL: %d vectors (%s)", coll.name, len(index), index.kind)
        index.save()

    def _retrain(self, coll: Collection, index: VectorIndex) -> None:
        """Rebuild with the index type and quantizer that fit the size now, off the query path, then swap."""
        with self.sessions() as s:
            start = s.scalar(select(Collection.generation).where(Collection.id == coll.id)) or 0
        ids, vecs = self._all_vectors(coll.id, coll.embed_dim)
        fresh = VectorIndex.build(index.path, coll.embed_model, coll.embed_dim, self.ann, ids, vecs, start)
        with self.sessions() as s:
            latest = s.scalar(select(Collection.generation).where(Collection.id == coll.id)) or 0
        with index.lock:
            with self.sessions() as s:
                todo = changelog.pending(s, coll.id, start, max(latest, index.applied))
            remove, add = changelog.net_effect(todo.entries)
            add_ids, add_vecs = self._fetch_vectors(add, coll.embed_dim)
            fresh.apply(remove, add_ids, add_vecs, max(latest, index.applied))
            index.replace_with(fresh)
        log.info("index of '%s' retrained: %d vectors, %s", coll.name, len(index), index.kind)
        index.save()

    # --- summaries --------------------------------------------------------------------------------------
    def summaries(self, coll: Collection, generation: int) -> SummaryVectors:
        """The collection's summary vectors, caught up to ``generation`` before this returns (the rows the log
        entries added that are summaries; on first use, the collection's summary rows)."""
        with self._guard:
            summaries = self._summaries.get(coll.id)
            if summaries is None:
                summaries = self._summaries[coll.id] = SummaryVectors(coll.embed_dim)
        if summaries.applied < generation:
            with summaries.lock:
                if summaries.applied < generation:
                    with self.sessions() as s:
                        todo = changelog.pending(s, coll.id, summaries.applied, generation)
                    if todo.rebuild or summaries.applied < 0:
                        summaries.replace(*self._fetch_summaries(coll.id, coll.embed_dim), generation)
                    else:
                        remove, add = changelog.net_effect(todo.entries)
                        summaries.apply(remove, *self._fetch_summaries(coll.id, coll.embed_dim, add), generation)
        return summaries

    def _fetch_summaries(
        self, collection_id: int, dim: int, ids: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of the collection's summaries (among ``ids`` when given) whose document has more chunks
        than a summary hit brings along (``summary_route_chunks``): of a smaller document, the chunks are the
        summary's route already, and ranking its near-copy beside them only adds noise (SQuAD paragraphs: document
        hit@5 0.976 -> 0.942)."""
        chunk = aliased(Chunk)
        size = select(func.count()).where(chunk.document_id == Chunk.document_id, chunk.kind == "chunk")
        q = select(Chunk.id, Chunk.embedding).where(
            Chunk.collection_id == collection_id, Chunk.kind == "summary",
            size.scalar_subquery() > self.settings.summary_route_chunks,
        )
        if ids is None:
            parts = [q]
        else:
            parts = [q.where(Chunk.id.in_(ids[i : i + _FETCH].tolist())) for i in range(0, len(ids), _FETCH)]
        with self.sessions() as s:
            rows = [row for part in parts for row in s.execute(part)]
        found = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        return found, (np.vstack([decode_vector(r[1], dim) for r in rows]) if rows else np.zeros((0, dim), np.float32))

    # --- lexical ----------------------------------------------------------------------------------------
    def lexical(self, coll: Collection, generation: int, *, wait: bool = False) -> LexicalIndex:
        """The collection's lexical index: current when ``wait`` (or when there is none yet), otherwise as it is,
        with a catch-up started in the background."""
        with self._guard:
            index = self._lexical.get(coll.id)
            if index is None:
                index = self._lexical[coll.id] = LexicalIndex(self.path_of(coll, ".lexical"), coll.id)
        index.refresh()
        if index.applied >= generation:
            return index
        if wait or index.applied < 0:
            self._catch_up_lexical(coll, index, generation, blocking=True)
        else:
            self._in_background(f"lexical:{coll.id}", lambda: self._catch_up_lexical(coll, index, generation, True))
        return index

    def _catch_up_lexical(self, coll: Collection, index: LexicalIndex, generation: int, blocking: bool) -> None:
        if not index.try_lock(blocking):
            return  # another thread or process is applying; its result is picked up by refresh()
        try:
            index.refresh()
            if index.applied >= generation:
                return
            with self.sessions() as s:
                todo = changelog.pending(s, coll.id, index.applied, generation)
            if todo.rebuild or index.applied < 0:
                index.rebuild(self._iter_texts(coll.id), generation)
                log.info("lexical index of '%s' rebuilt from SQL: %d chunks", coll.name, len(index))
            else:
                remove, add = changelog.net_effect(todo.entries)
                index.apply(remove, self._fetch_texts(add), generation)
        finally:
            index.unlock()

    # --- housekeeping -----------------------------------------------------------------------------------
    def _in_background(self, key: str, job: Callable[[], None]) -> None:
        """Run ``job`` in a daemon thread unless one with the same key is running (writes are atomic, so an
        exit mid-job loses only the work)."""
        with self._guard:
            if key in self._busy:
                return
            self._busy.add(key)

        def run() -> None:
            try:
                job()
            except Exception:  # the next caller starts another; meanwhile the current state keeps answering
                log.exception("background index job %s failed", key)
            finally:
                with self._guard:
                    self._busy.discard(key)

        threading.Thread(target=run, name=f"index-{key}", daemon=True).start()

    def idle(self) -> bool:
        with self._guard:
            return not self._busy

    def save(self, coll: Collection, *, force: bool = False) -> None:
        """Persist the collection's FAISS index if it changed since its last save here and, unless ``force``, the
        last save is older than ``index_save_interval_s``: a save writes the whole index, so it must not follow
        every small change at a million chunks; the log covers whatever a crash leaves unsaved."""
        index = self._vectors.get(coll.id)
        if index is not None and index.dirty and (force or index.since_save() >= self.settings.index_save_interval_s):
            index.save()

    def save_all(self) -> None:
        for coll_id, index in list(self._vectors.items()):
            if index.dirty:
                index.save()

    def forget(self, coll: Collection) -> None:
        """Drop a deleted collection's indexes, in memory and on disk (a collection created again under the same
        name starts its log at 0, which a file left behind could claim to match)."""
        with self._guard:
            self._vectors.pop(coll.id, None)
            self._lexical.pop(coll.id, None)
            self._verified.discard(coll.id)
        self.path_of(coll, ".faiss").unlink(missing_ok=True)
        shutil.rmtree(self.path_of(coll, ".lexical"), ignore_errors=True)

    # --- SQL reads ----------------------------------------------------------------------------------------
    def count(self, collection_id: int, upto: int) -> int | None:
        """Chunks in SQL, or None when the collection has moved past ``upto`` (the counts would not compare)."""
        with self.sessions() as s:
            generation = s.scalar(select(Collection.generation).where(Collection.id == collection_id))
            if generation != upto:
                return None
            return int(s.scalar(select(func.count(Chunk.id)).where(Chunk.collection_id == collection_id)) or 0)

    def _fetch_vectors(self, ids: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
        found: list[int] = []
        vecs: list[np.ndarray] = []
        with self.sessions() as s:
            for start in range(0, len(ids), _FETCH):
                part = ids[start : start + _FETCH].tolist()
                for cid, blob in s.execute(select(Chunk.id, Chunk.embedding).where(Chunk.id.in_(part))):
                    found.append(cid)
                    vecs.append(decode_vector(blob, dim))
        return np.asarray(found, dtype=np.int64), (np.vstack(vecs) if vecs else np.zeros((0, dim), np.float32))

    def _fetch_texts(self, ids: np.ndarray) -> list[tuple[int, str]]:
        out: list[tuple[int, str]] = []
        with self.sessions() as s:
            for start in range(0, len(ids), _FETCH):
                part = ids[start : start + _FETCH].tolist()
                out.extend(s.execute(select(Chunk.id, Chunk.text).where(Chunk.id.in_(part))).tuples())
        return out

    def _all_vectors(self, collection_id: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
        ids: list[np.ndarray] = []
        vecs: list[np.ndarray] = []
        for batch in self._scan(collection_id, Chunk.embedding):
            ids.append(np.fromiter((r[0] for r in batch), dtype=np.int64, count=len(batch)))
            vecs.append(np.vstack([decode_vector(r[1], dim) for r in batch]))
        if not ids:
            return np.zeros(0, np.int64), np.zeros((0, dim), np.float32)
        return np.concatenate(ids), np.vstack(vecs)

    def _iter_texts(self, collection_id: int) -> Iterator[tuple[np.ndarray, list[str]]]:
        for batch in self._scan(collection_id, Chunk.text):
            yield np.fromiter((r[0] for r in batch), dtype=np.int64, count=len(batch)), [r[1] for r in batch]

    def _scan(self, collection_id: int, column, batch: int = 20000) -> Iterator[list]:
        """All (id, column) of a collection in id order, in keyset-paginated batches (no long transaction)."""
        last = -1
        while True:
            with self.sessions() as s:
                rows = s.execute(
                    select(Chunk.id, column)
                    .where(Chunk.collection_id == collection_id, Chunk.id > last)
                    .order_by(Chunk.id)
                    .limit(batch)
                ).all()
            if not rows:
                return
            last = rows[-1][0]
            yield rows
