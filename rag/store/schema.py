"""SQL schema: the source of truth for documents, chunks (with their vectors), the change log and ingestion runs.

Vectors are stored beside each chunk (float16: half the bytes of float32, and exactly what the FAISS copy holds)
so an index can always be rebuilt, re-typed or repaired from SQL without re-embedding. The search indexes (FAISS,
lexical) only follow this data, through ``index_log``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from rag.store.text import SafeJSON, SafeText
from rag.types import utcnow  # the one clock; the store's modules take it from here with the tables it stamps


class Base(DeclarativeBase):
    pass


class SchemaVersion(Base):
    __tablename__ = "schema_version"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(Integer)


class Collection(Base):
    __tablename__ = "collections"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    embed_model: Mapped[str] = mapped_column(String(500))
    embed_dim: Mapped[int] = mapped_column(Integer)
    # The last change-log sequence number handed out: bumped as the first statement of every write transaction,
    # which also takes the row's lock, so transactions commit in sequence order (see rag/store/changelog.py).
    # A reader whose indexes applied this sequence is current.
    generation: Mapped[int] = mapped_column(Integer, default=0)
    # Log entries up to this sequence have been pruned: an index that applied less must be rebuilt from SQL.
    log_floor: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


def _not_postgres(ddl: Any, target: Any, bind: Any, **kw: Any) -> bool:
    return kw["dialect"].name != "postgresql"


class Document(Base):
    __tablename__ = "documents"
    __table_args__ = (
        UniqueConstraint("collection_id", "path", name="uq_document_path").ddl_if(callable_=_not_postgres),  # see unique_path
        # The background summary pass asks for pending documents every few seconds: an index, not a scan.
        Index("ix_documents_summary_state", "collection_id", "summary_state"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    collection_id: Mapped[int] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"), index=True)
    path: Mapped[str] = mapped_column(SafeText)  # rag/store/text.py: a file name that is not UTF-8 is escaped
    content_hash: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer, default=0)
    mtime: Mapped[float] = mapped_column(default=0.0)
    doc_type: Mapped[str] = mapped_column(String(20), default="")
    title: Mapped[str | None] = mapped_column(SafeText, nullable=True)
    status: Mapped[str] = mapped_column(String(20), default="indexed")  # indexed | failed
    error: Mapped[str | None] = mapped_column(SafeText, nullable=True)
    chunk_count: Mapped[int] = mapped_column(Integer, default=0)
    meta: Mapped[dict[str, Any]] = mapped_column(SafeJSON, default=dict)
    summary: Mapped[str | None] = mapped_column(Text, nullable=True)
    summary_state: Mapped[str] = mapped_column(String(20), default="none")  # none | pending | extractive | done | rejected | failed
    summary_model: Mapped[str | None] = mapped_column(String(500), nullable=True)
    summary_error: Mapped[str | None] = mapped_column(SafeText, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)

    chunks: Mapped[list[Chunk]] = relationship(
        back_populates="document", cascade="all, delete-orphan", passive_deletes=True
    )


class Chunk(Base):
    """A passage of a document, or its summary (``kind == 'summary'``, ``position == -1``)."""

    __tablename__ = "chunks"
    __table_args__ = (Index("ix_chunks_collection_kind", "collection_id", "kind"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"), index=True)
    collection_id: Mapped[int] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(10), default="chunk")
    position: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    token_count: Mapped[int] = mapped_column(Integer)
    start_char: Mapped[int | None] = mapped_column(Integer, nullable=True)
    end_char: Mapped[int | None] = mapped_column(Integer, nullable=True)
    meta: Mapped[dict[str, Any]] = mapped_column(SafeJSON, default=dict)
    # Normalised, collection.embed_dim values: float16 (float32 in stores written before schema version 3).
    embedding: Mapped[bytes] = mapped_column(LargeBinary)

    document: Mapped[Document] = relationship(back_populates="chunks")


class IndexLogEntry(Base):
    """One write transaction's effect on a collection's indexes: the only way indexes learn about writes."""

    __tablename__ = "index_log"
    __table_args__ = (UniqueConstraint("collection_id", "seq", name="uq_index_log_seq"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    collection_id: Mapped[int] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    added: Mapped[bytes] = mapped_column(LargeBinary)  # int64 chunk ids, little-endian
    removed: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class IngestionRun(Base):
    """One ingestion job: persisted so a restart (or another API replica) can show what happened."""

    __tablename__ = "ingestion_runs"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    collection: Mapped[str] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(20), default="queued")  # queued|running|done|failed|cancelled|interrupted
    paths: Mapped[list[str]] = mapped_column(SafeJSON, default=list)
    total: Mapped[int] = mapped_column(Integer, default=0)
    processed: Mapped[int] = mapped_column(Integer, default=0)
    counts: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)
    errors: Mapped[list[dict[str, str]]] = mapped_column(SafeJSON, default=list)
    message: Mapped[str | None] = mapped_column(SafeText, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # Touched periodically by the process that owns the job; a live job whose heartbeat stops is interrupted.
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # "thread": run by the API process that accepted it; "queue": split into per-file tasks on the broker, owned
    # by no process (so never swept for a missing heartbeat; redelivery covers a dead worker).
    executor: Mapped[str | None] = mapped_column(String(10), nullable=True, default="thread")


class IngestionItem(Base):
    """One file of a queued job and what its task did: the job's progress is counted from these rows, and a task
    that is delivered twice (its worker died after the commit) updates its row instead of counting twice."""

    __tablename__ = "ingestion_items"
    __table_args__ = (UniqueConstraint("run_id", "path", name="uq_ingestion_item").ddl_if(callable_=_not_postgres),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("ingestion_runs.id", ondelete="CASCADE"), index=True)
    path: Mapped[str] = mapped_column(SafeText)
    status: Mapped[str] = mapped_column(String(20))  # a FileStatus
    chunks: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(SafeText, nullable=True)
    bytes: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ApiKey(Base):
    """An API key: only the SHA-256 of the secret is kept (rag/store/keys.py says why that hash). A revoked key keeps
    its row (``revoked_at``) so listings and the audit log can still name it; its name is free again."""

    __tablename__ = "api_keys"
    __table_args__ = (
        # One active key per name: `rag keys revoke NAME` must name exactly one.
        Index("uq_api_keys_active_name", "name", unique=True, sqlite_where=text("revoked_at IS NULL"),
              postgresql_where=text("revoked_at IS NULL")),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(10))  # reader | writer | admin
    collections: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)  # None: every collection
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class AuditEntry(Base):
    """One write through the API or a key change: who (the key's name), when, what, where, and how much."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_at", "at"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    key_name: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(20))  # ingest | upload | delete | cancel | key.create | key.revoke
    collection: Mapped[str | None] = mapped_column(String(200), nullable=True)
    target: Mapped[str | None] = mapped_column(SafeText, nullable=True)  # a job id, a document id, a key name
    counts: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)


def unique_path(table: Table, owner: str, constraint: str) -> tuple[Index, Index]:
    """One row per path and ``owner`` (a collection's documents, a job's files) on PostgreSQL, whatever the length.

    PostgreSQL's btree refuses an entry over ~2.7 KB and a path may be 4 KB (Linux's PATH_MAX): a long path failed
    every write of its row, a failed file's record too, and that failed the whole job. So there the unique index
    holds ``md5(path)`` rather than the path (a collision would take two different, valid file paths with one MD5,
    not a risk worth a wider key), and a hash index, which takes a value of any length, serves the ``path = ?``
    lookups the old index served. Refusing long paths instead would leave real files unindexable for a limit of
    one backend. Other databases keep the plain unique constraint ``constraint`` (SQLite has no such limit);
    PostgreSQL stores of earlier releases are moved over by migration v6 (rag/store/database.py).
    """
    return (
        Index(f"{constraint}_md5", table.c[owner], func.md5(table.c.path), unique=True).ddl_if(dialect="postgresql"),
        Index(f"ix_{table.name}_path_hash", table.c.path, postgresql_using="hash").ddl_if(dialect="postgresql"),
    )


PATH_INDEXES = {
    "documents": ("uq_document_path", unique_path(Document.__table__, "collection_id", "uq_document_path")),
    "ingestion_items": ("uq_ingestion_item", unique_path(IngestionItem.__table__, "run_id", "uq_ingestion_item")),
}
"""Per table: the plain unique constraint that PostgreSQL stores replace, and the indexes that replace it there."""
