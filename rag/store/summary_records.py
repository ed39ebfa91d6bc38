"""The SQL of document summaries: which documents need one, what one is written from, and storing it.

Kept in the store (``Store`` is a ``SummaryRecords``, as it is a ``RunRecords``) so that ``ingest/summaries.py`` holds
only what a summary says and how it is written. A summary is stored on its document (``Document.summary``,
``summary_model``, ``summary_state``) and as a ``Chunk(kind='summary', position=-1)`` with its embedding, written
through :meth:`Store.write`, so both indexes and the change log treat it like any chunk. Every write first checks
that the document still has the content hash that was summarised: a document changed meanwhile keeps waiting for a
summary of its new text.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.attributes import flag_modified

from rag.store.indexes import encode_vector
from rag.store.schema import Chunk, Collection, Document

if TYPE_CHECKING:
    from rag.store.store import Changes

T = TypeVar("T")


@dataclass
class SummarySource:
    """A document as a summary is written from it, captured with the content hash it belongs to: its chunks in
    order as (text, start_char, end_char), and their stored embeddings when asked for."""

    doc_id: int
    path: str
    title: str | None
    content_hash: str
    chunks: list[tuple[str, int | None, int | None]]
    embeddings: list[bytes]


@dataclass
class SummaryRecord:
    """One summary to store: its text and vector, who wrote it, the state it leaves, and why (``note``)."""

    text: str
    vector: np.ndarray
    token_count: int
    model: str
    state: str
    note: str | None = None


class SummaryRecords:
    sessions: sessionmaker[Session]
    write: Callable[..., Any]

    def summary_todo(
        self, collection_id: int, *, doc_ids: list[int] | None, skip_states: Sequence[str], todo_states: Sequence[str]
    ) -> list[int]:
        """Indexed documents of the collection to summarise, by id: ``doc_ids`` unless their state is one of
        ``skip_states``, or (without ``doc_ids``) those whose state is one of ``todo_states``; empty sequences filter
        nothing."""
        with self.sessions() as s:
            q = select(Document.id).where(Document.collection_id == collection_id, Document.status == "indexed")
            if doc_ids is not None:
                q = q.where(Document.id.in_(doc_ids))
                if skip_states:
                    q = q.where(Document.summary_state.not_in(tuple(skip_states)))
            elif todo_states:
                q = q.where(Document.summary_state.in_(tuple(todo_states)))
            return list(s.scalars(q.order_by(Document.id)))

    def summary_source(self, doc_id: int, *, with_embeddings: bool = False) -> SummarySource | None:
        """What a summary of the document is written from; None when it is gone or no longer indexed."""
        with self.sessions() as s:
            doc = s.get(Document, doc_id)
            if doc is None or doc.status != "indexed":
                return None
            columns = (Chunk.text, Chunk.start_char, Chunk.end_char) + ((Chunk.embedding,) if with_embeddings else ())
            rows = s.execute(
                select(*columns).where(Chunk.document_id == doc_id, Chunk.kind == "chunk").order_by(Chunk.position)
            ).all()
            return SummarySource(doc.id, doc.path, doc.title, doc.content_hash, [tuple(r[:3]) for r in rows],
                                 [r[3] for r in rows] if with_embeddings else [])

    def chunk_sample(self, coll: Collection, sample: int) -> list[tuple[bytes, int, str]]:
        """Up to ``sample`` of the collection's chunks as (embedding, document id, text), drawn by random ids
        (primary-key lookups, so the cost does not grow with the collection)."""
        with self.sessions() as s:
            low, high = s.execute(select(func.min(Chunk.id), func.max(Chunk.id))).one()
            if low is None:
                return []
            ids = np.random.default_rng(0).integers(low, high + 1, size=sample).tolist()
            q = select(Chunk.embedding, Chunk.document_id, Chunk.text).where(
                Chunk.collection_id == coll.id, Chunk.kind == "chunk"
            )
            rows = s.execute(q.where(Chunk.id.in_(set(ids)))).all()
            if len(rows) < sample // 10:  # a collection that is a small part of the table: its first chunks
                rows = s.execute(q.limit(sample)).all()
            return [(r.embedding, r.document_id, r.text) for r in rows]

    def write_summary(self, coll: Collection, source: SummarySource, record: SummaryRecord) -> bool:
        """Store the summary and replace the document's summary chunk, unless the document changed meanwhile."""

        def work(s: Session, changes: Changes) -> bool:
            doc = s.get(Document, source.doc_id)
            if doc is None or doc.status != "indexed" or doc.content_hash != source.content_hash:
                return False
            old = list(s.scalars(select(Chunk.id).where(Chunk.document_id == doc.id, Chunk.kind == "summary")))
            if old:
                s.execute(delete(Chunk).where(Chunk.id.in_(old)))
            row = Chunk(
                document_id=doc.id, collection_id=coll.id, kind="summary", position=-1, text=record.text,
                token_count=record.token_count, meta={"model": record.model}, embedding=encode_vector(record.vector),
            )
            s.add(row)
            doc.summary, doc.summary_model = record.text, record.model
            doc.summary_state, doc.summary_error = record.state, record.note
            flag_modified(doc, "updated_at")  # kept as it is: a summary is not a new version (jobs go by this time)
            s.flush()
            changes.removed.extend(old)
            changes.added_ids.append(row.id)
            return True

        return self.write(coll, work)

    def write_summary_failure(self, coll: Collection, source: SummarySource, error: str) -> bool:
        """Mark the document's summary failed (an earlier summary of the same content, if any, is kept)."""

        def work(s: Session, changes: Changes) -> bool:
            doc = s.get(Document, source.doc_id)
            if doc is None or doc.content_hash != source.content_hash:
                return False
            doc.summary_state, doc.summary_error = "failed", error
            return True

        return self.write(coll, work)
