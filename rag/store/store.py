"""The store: SQL (the truth) plus the search indexes of each collection (FAISS and lexical), kept consistent.

Every write runs in one SQL transaction that takes the collection's next change-log sequence first and appends
what it did to the chunks (ids added, ids removed) to the log before it commits (``rag/store/changelog.py``).
Indexes learn about writes only from that log — in this process right after the commit, in any other process
(another API replica, the CLI) at its next query or follower tick — see ``rag/store/indexes.py``. Search
results are always re-read from SQL, so an answer never cites a chunk that does not exist.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from sqlalchemy import delete, func, insert, select, text, update
from sqlalchemy.orm import Session

from rag.settings import Settings
from rag.store import changelog
from rag.store.audit import AuditRecords
from rag.store.database import open_engine, session_factory
from rag.store.indexes import Indexes, encode_vector
from rag.store.keys import KeyRecords
from rag.store.lexical import LexicalIndex
from rag.store.runs import RunRecords
from rag.store.schema import Chunk, Collection, Document, utcnow
from rag.store.summary_records import SummaryRecords
from rag.store.summary_vectors import SummaryVectors
from rag.store.vectors import VectorIndex
from rag.types import DocumentInfo

log = logging.getLogger(__name__)
T = TypeVar("T")


class StoreError(Exception):
    """A request the store cannot honour (unknown collection, model mismatch ...); the message says why."""


@dataclass
class ChunkRecord:
    """A chunk ready to be committed: text, offsets and its normalised embedding."""

    position: int
    text: str
    token_count: int
    embedding: np.ndarray
    start_char: int | None = None
    end_char: int | None = None
    kind: str = "chunk"
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Changes:
    """What one write transaction did to the chunks: appended to the change log in that transaction."""

    removed: list[int] = field(default_factory=list)
    added_ids: list[int] = field(default_factory=list)


@dataclass
class ChunkRow:
    id: int
    document_id: int
    path: str
    title: str | None
    kind: str
    position: int
    text: str
    start_char: int | None
    end_char: int | None
    meta: dict[str, Any] | None = None  # e.g. the page where a PDF passage starts (ingest.chunking.page_meta)


def _slug(name: str) -> str:
    tail = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[-40:]
    return f"{tail}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"


class Store(RunRecords, SummaryRecords, KeyRecords, AuditRecords):
    """SQL + FAISS for all collections of one data directory (or one shared database); also the records of jobs,
    summaries, API keys and the audit log (``runs``, ``summary_records``, ``keys``, ``audit``), so callers keep one
    object."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine = open_engine(settings.sql_url)
        self.sessions = session_factory(self.engine)
        self.indexes = Indexes(settings, self.sessions, self.index_path)
        # A queue worker only writes: its commits go to SQL and the log, and the processes that answer queries
        # follow the log (it would otherwise load, and keep current, indexes it never searches).
        self.follow_indexes = True

    def close(self) -> None:
        self.indexes.save_all()
        self.engine.dispose()

    def ping(self) -> None:
        """One round trip to the database (``SELECT 1``); raises whatever the driver raises when it cannot answer.

        Readiness asks this, not a query of its own, so every SQL statement stays in the store."""
        with self.session() as s:
            s.execute(text("SELECT 1"))

    # --- collections -----------------------------------------------------------------------------
    def session(self) -> Session:
        return self.sessions()

    def collection(self, name: str, *, model: str | None = None, dim: int | None = None) -> Collection:
        """The collection ``name``; created when ``model`` and ``dim`` are given, else StoreError if absent."""
        with self.sessions.begin() as s:
            row = s.scalar(select(Collection).where(Collection.name == name))
            if row is None:
                if model is None or dim is None:
                    raise StoreError(f"collection '{name}' does not exist")
                row = Collection(name=name, embed_model=model, embed_dim=dim, generation=0)
                s.add(row)
                s.flush()
            elif model is not None and row.embed_model != model:
                raise StoreError(
                    f"collection '{name}' was embedded with '{row.embed_model}', not '{model}'; "
                    "use another collection or delete this one to switch models"
                )
            s.expunge(row)
            return row

    def collection_name(self, collection_id: int) -> str:
        with self.session() as s:
            return s.scalar(select(Collection.name).where(Collection.id == collection_id)) or ""

    def collections(self, names: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """Every collection, or those of ``names`` (an API key's scope) that exist."""
        with self.session() as s:
            q = (
                select(Collection, func.count(Document.id))
                .outerjoin(Document, Document.collection_id == Collection.id)
                .group_by(Collection.id)
                .order_by(Collection.name)
            )
            if names is not None:
                q = q.where(Collection.name.in_(list(names)))
            rows = s.execute(q).all()
            return [
                {"name": c.name, "embed_model": c.embed_model, "embed_dim": c.embed_dim, "documents": n, "generation": c.generation}
                for c, n in rows
            ]

    def drop_collection(self, name: str) -> None:
        coll = self.collection(name)
        with self.sessions.begin() as s:
            s.execute(delete(Chunk).where(Chunk.collection_id == coll.id))
            s.execute(delete(Document).where(Document.collection_id == coll.id))
            s.execute(delete(Collection).where(Collection.id == coll.id))  # its log goes with it (cascade)
        self.indexes.forget(coll)

    def index_path(self, coll: Collection, suffix: str) -> Path:
        """Where a search structure of ``coll`` is kept: ``.faiss`` (vectors) or ``.lexical`` (a folder)."""
        return self.settings.data_dir / "indexes" / f"{_slug(coll.name)}__{_slug(coll.embed_model)}{suffix}"

    def generation(self, collection_id: int) -> int:
        with self.session() as s:
            return int(s.scalar(select(Collection.generation).where(Collection.id == collection_id)) or 0)

    # --- writes and the indexes that follow them -----------------------------------------------------
    def index(self, coll: Collection, *, generation: int | None = None) -> VectorIndex:
        """The collection's FAISS index, caught up with the change log to ``generation`` (read here if not given;
        a query passes the one it read with the collection row)."""
        return self.indexes.vectors(coll, self.generation(coll.id) if generation is None else generation)

    def lexical(self, coll: Collection, *, generation: int | None = None, wait: bool = False) -> LexicalIndex:
        """The collection's lexical index: current with ``wait``, otherwise possibly one catch-up behind."""
        generation = self.generation(coll.id) if generation is None else generation
        return self.indexes.lexical(coll, generation, wait=wait)

    def summaries(self, coll: Collection, *, generation: int | None = None) -> SummaryVectors:
        """The collection's document summaries as vectors in memory, caught up like :meth:`index`."""
        return self.indexes.summaries(coll, self.generation(coll.id) if generation is None else generation)

    def write(self, coll: Collection, work: Callable[[Session, Changes], T], *, follow: bool = True) -> T:
        """Run ``work`` in one SQL transaction that also appends its chunk changes to the change log.

        The sequence is taken first (see :mod:`rag.store.changelog`), which begins the transaction with a write:
        on SQLite that takes the write lock up front, so the savepoints of the work nest inside one transaction
        instead of committing on their own. After the commit this process's FAISS index catches up (the cost of
        the change) and, with ``follow``, the lexical index too (a bulk writer defers that to :meth:`follow`).
        """
        changes = Changes()
        with self.sessions.begin() as s:
            seq = changelog.begin_write(s, coll.id)
            result = work(s, changes)
            changelog.append(s, coll.id, seq, changes.added_ids, changes.removed)
        if self.follow_indexes:
            self.indexes.vectors(coll, seq)
            if follow:
                self.indexes.lexical(coll, seq, wait=True)
        return result

    def follow(self, coll: Collection) -> None:
        """Bring both indexes of ``coll`` up to the latest write and persist FAISS (the end of an ingestion)."""
        if not self.follow_indexes:
            return
        generation = self.generation(coll.id)
        self.indexes.vectors(coll, generation)
        self.indexes.lexical(coll, generation, wait=True)
        self.indexes.save(coll)

    def prune_log(self, coll: Collection) -> int:
        """Drop change-log entries past retention (``Settings.log_retention_hours``)."""
        with self.sessions.begin() as s:
            return changelog.prune(s, coll.id, self.settings.log_retention_hours)

    # --- documents ---------------------------------------------------------------------------------
    def documents_by_path(self, collection_id: int) -> dict[str, Document]:
        with self.session() as s:
            rows = s.scalars(select(Document).where(Document.collection_id == collection_id)).all()
            return {d.path: d for d in rows}

    @staticmethod
    def _cleared_document(s: Session, coll: Collection, path: str) -> tuple[Document, list[int]]:
        """The path's document row (created if new) with its chunks deleted; returns it and the old chunk ids."""
        doc = s.scalar(select(Document).where(Document.collection_id == coll.id, Document.path == path))
        if doc is None:
            doc = Document(collection_id=coll.id, path=path)
            s.add(doc)
            return doc, []
        old_ids = list(s.scalars(select(Chunk.id).where(Chunk.document_id == doc.id)))
        s.execute(delete(Chunk).where(Chunk.document_id == doc.id))
        return doc, old_ids

    def replace_document(
        self,
        s: Session,
        changes: Changes,
        coll: Collection,
        *,
        path: str,
        content_hash: str,
        size: int,
        mtime: float,
        doc_type: str,
        title: str | None,
        meta: dict[str, Any],
        chunks: list[ChunkRecord],
        summary_pending: bool,
    ) -> int:
        """Write a document and its chunks in the caller's transaction and record both sets of chunk ids in
        ``changes`` (so the change log cannot miss one); returns the document id.

        An existing row for the path keeps its id (and so its place in jobs and links); its chunks and any
        summary of the old content are replaced.
        """
        doc, old_ids = self._cleared_document(s, coll, path)
        doc.content_hash, doc.size, doc.mtime, doc.doc_type = content_hash, size, mtime, doc_type
        doc.title, doc.meta, doc.status, doc.error = title, meta, "indexed", None
        doc.chunk_count = len(chunks)
        doc.summary, doc.summary_model, doc.summary_error = None, None, None
        doc.summary_state = "pending" if summary_pending else "none"
        doc.updated_at = utcnow()
        s.flush()
        rows = [
            {
                "document_id": doc.id,
                "collection_id": coll.id,
                "kind": c.kind,
                "position": c.position,
                "text": c.text,
                "token_count": c.token_count,
                "start_char": c.start_char,
                "end_char": c.end_char,
                "meta": c.meta,
                "embedding": encode_vector(c.embedding),
            }
            for c in chunks
        ]
        # A bulk INSERT … RETURNING (batched by SQLAlchemy's insertmanyvalues), not one ORM object per chunk:
        # the unit of work was a third of the commit time on corpora of short documents.
        new_ids = list(s.scalars(insert(Chunk).returning(Chunk.id, sort_by_parameter_order=True), rows)) if rows else []
        changes.removed.extend(old_ids)
        changes.added_ids.extend(new_ids)
        return doc.id

    def record_failure(
        self, s: Session, changes: Changes, coll: Collection, *, path: str, content_hash: str, size: int, mtime: float,
        doc_type: str, error: str,
    ) -> None:
        """Mark a file as failed; its previously indexed chunks (if any) leave the indexes."""
        doc, old_ids = self._cleared_document(s, coll, path)
        doc.content_hash, doc.size, doc.mtime, doc.doc_type = content_hash, size, mtime, doc_type
        doc.status, doc.error, doc.chunk_count, doc.summary_state = "failed", error, 0, "none"
        doc.summary = None
        doc.updated_at = utcnow()
        changes.removed.extend(old_ids)

    def remove_documents(self, s: Session, changes: Changes, doc_ids: Iterable[int]) -> list[int]:
        """Delete documents and their chunks in the caller's transaction; records and returns the chunk ids."""
        ids = list(doc_ids)
        if not ids:
            return []
        chunk_ids = list(s.scalars(select(Chunk.id).where(Chunk.document_id.in_(ids))))
        s.execute(delete(Chunk).where(Chunk.document_id.in_(ids)))
        s.execute(delete(Document).where(Document.id.in_(ids)))
        changes.removed.extend(chunk_ids)
        return chunk_ids

    def move_documents(self, s: Session, moves: list[tuple[int, str, float]]) -> None:
        """Give documents new paths (``(id, path, mtime)``) in the caller's transaction. A moved file keeps its
        chunks, vectors and summary: no chunk id is added or removed, so the change log records nothing and no index
        has work to do; hits, filters and listings read the path from SQL, so they show the new one at once."""
        if moves:
            s.execute(update(Document), [{"id": doc_id, "path": path, "mtime": mtime} for doc_id, path, mtime in moves])

    def documents_under(self, collection: str, folder: str) -> list[Document]:
        """The collection's documents at ``folder`` or anywhere below it (what a deleted or moved-away folder held)."""
        below = folder.rstrip(os.sep) + os.sep
        with self.session() as s:
            q = (
                select(Document).join(Collection).where(Collection.name == collection)
                .where((Document.path == folder) | Document.path.startswith(below, autoescape=True))
            )
            return list(s.scalars(q))

    def find_document(self, ref: str | int, collection: str | None = None) -> Document | None:
        """A document by id, or by path (absolute, or as given at ingestion)."""
        with self.session() as s:
            q = select(Document)
            if collection is not None:
                q = q.join(Collection).where(Collection.name == collection)
            if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
                return s.scalar(q.where(Document.id == int(ref)))
            candidates = {str(ref), str(Path(ref).expanduser().resolve())}
            return s.scalars(q.where(Document.path.in_(candidates))).first()

    def document_infos(self, collection: str | None = None, doc_ids: list[int] | None = None, *,
                       collections: Sequence[str] | None = None) -> list[DocumentInfo]:
        """Documents of one collection, or of ``collections`` (an API key's scope), or of all."""
        with self.session() as s:
            q = select(Document, Collection.name).join(Collection).order_by(Collection.name, Document.path)
            if collection is not None:
                q = q.where(Collection.name == collection)
            if collections is not None:
                q = q.where(Collection.name.in_(list(collections)))
            if doc_ids is not None:
                q = q.where(Document.id.in_(doc_ids))
            return [
                DocumentInfo(
                    id=d.id,
                    path=d.path,
                    collection=name,
                    title=d.title,
                    doc_type=d.doc_type,
                    size=d.size,
                    content_hash=d.content_hash,
                    chunks=d.chunk_count,
                    status=d.status,
                    error=d.error,
                    summary=d.summary,
                    summary_state=d.summary_state,  # type: ignore[arg-type]
                    summary_model=d.summary_model,
                    summary_error=d.summary_error,
                    updated_at=d.updated_at.isoformat() if d.updated_at else "",
                    pages=(d.meta or {}).get("pages"),
                    ocr_pages=(d.meta or {}).get("ocr_pages", 0),
                    ocr_engine=(d.meta or {}).get("ocr_engine"),
                )
                for d, name in s.execute(q).all()
            ]

    def document_collection(self, document_id: int) -> str | None:
        """The collection a document belongs to (None when there is no such document): what access is decided on."""
        with self.session() as s:
            return s.scalar(select(Collection.name).join(Document, Document.collection_id == Collection.id)
                            .where(Document.id == document_id))

    def chunk_collection(self, chunk_id: int) -> str | None:
        """The collection a passage belongs to (None when there is no such passage)."""
        with self.session() as s:
            return s.scalar(select(Collection.name).join(Chunk, Chunk.collection_id == Collection.id)
                            .where(Chunk.id == chunk_id))

    def summary_states(
        self, collection: str | None = None, *, updated_since: Any = None, updated_until: Any = None
    ) -> dict[str, dict[str, int]]:
        """Indexed documents per collection and summary state (optionally those written in a time window): what
        the background pass has left, and what a job's documents have got."""
        with self.session() as s:
            q = (
                select(Collection.name, Document.summary_state, func.count())
                .join(Collection, Collection.id == Document.collection_id)
                .where(Document.status == "indexed")
                .group_by(Collection.name, Document.summary_state)
            )
            if collection is not None:
                q = q.where(Collection.name == collection)
            if updated_since is not None:
                q = q.where(Document.updated_at >= updated_since)
            if updated_until is not None:
                q = q.where(Document.updated_at <= updated_until)
            out: dict[str, dict[str, int]] = {}
            for name, state, n in s.execute(q):
                out.setdefault(name, {})[state] = int(n)
            return out

    # --- chunks ------------------------------------------------------------------------------------
    def chunk_rows(self, ids: list[int]) -> dict[int, ChunkRow]:
        """Rows for ``ids`` that exist in SQL (ids FAISS still holds after a crash are simply absent)."""
        if not ids:
            return {}
        with self.session() as s:
            rows = s.execute(
                select(
                    Chunk.id, Chunk.document_id, Document.path, Document.title, Chunk.kind, Chunk.position,
                    Chunk.text, Chunk.start_char, Chunk.end_char, Chunk.meta,
                )
                .join(Document, Document.id == Chunk.document_id)
                .where(Chunk.id.in_(ids))
            ).all()
        return {r.id: ChunkRow(*r) for r in rows}

    def chunk_ids_where(self, collection_id: int, *, path_prefix: str | None, document_ids: list[int] | None) -> np.ndarray:
        """Chunk ids passing metadata filters: used as an exact FAISS/BM25 selector."""
        with self.session() as s:
            q = select(Chunk.id).join(Document, Document.id == Chunk.document_id).where(Chunk.collection_id == collection_id)
            if path_prefix:
                q = q.where(Document.path.startswith(path_prefix, autoescape=True))
            if document_ids is not None:
                q = q.where(Chunk.document_id.in_(document_ids))
            return np.fromiter(s.scalars(q), dtype=np.int64)

    def chunk_ids_of_documents(self, doc_ids: list[int]) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        if not doc_ids:
            return out
        with self.session() as s:
            for cid, did in s.execute(
                select(Chunk.id, Chunk.document_id).where(Chunk.document_id.in_(doc_ids), Chunk.kind == "chunk")
            ):
                out.setdefault(did, []).append(cid)
        return out

    @contextmanager
    def advisory_lock(self, name: str) -> Iterator[None]:
        """Hold a lock named ``name`` for every client of this database: a session-level advisory lock on
        PostgreSQL (released by the server if this process dies), nothing on SQLite, a file on one host that the
        caller's lock file already covers."""
        if self.engine.dialect.name != "postgresql":
            yield
            return
        # Keyed by (schema, name): advisory locks are database-wide, and two deployments may share a database.
        key = "hashtext(current_schema()), hashtext(:name)"
        # AUTOCOMMIT: waiting and holding must not keep a transaction (and its snapshot) open for a whole ingestion.
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f"SELECT pg_advisory_lock({key})"), {"name": name})
            try:
                yield
            finally:
                conn.execute(text(f"SELECT pg_advisory_unlock({key})"), {"name": name})
