"""The change log: an ordered record, in SQL, of which chunk ids each write transaction added and removed.

Why a log: an index (FAISS, lexical) in any process on any machine learns what changed by reading only the
entries after the last sequence it applied, so keeping up costs the size of the change, never the size of the
collection. Nothing else tells an index about writes.

How order is kept with concurrent writers: a write transaction's first statement increments its collection's
``generation`` and takes that number as its sequence. On PostgreSQL that UPDATE holds the collection row's lock
until commit, and on SQLite it takes the database's write lock, so transactions of one collection commit in
sequence order: once a reader sees ``generation == n``, no entry ``<= n`` can still appear. Sequences without an
entry (a transaction that changed no chunks) are simply gaps.

Retention: entries older than ``Settings.log_retention_hours`` are pruned and the collection's ``log_floor``
records the last pruned sequence; an index that applied less than that cannot catch up and is rebuilt from SQL.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from rag.store.schema import Collection, IndexLogEntry, utcnow

_ID_DTYPE = np.dtype("<i8")


@dataclass(frozen=True)
class LogEntry:
    seq: int
    added: np.ndarray
    removed: np.ndarray


@dataclass(frozen=True)
class Pending:
    """What an index at sequence ``since`` must do to reach ``upto``: apply ``entries``, or rebuild when the log
    no longer reaches back that far."""

    since: int
    upto: int
    entries: list[LogEntry]
    rebuild: bool


def _pack(ids: Iterable[int]) -> bytes:
    return np.fromiter(ids, dtype=_ID_DTYPE).tobytes()


def _unpack(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype=_ID_DTYPE).astype(np.int64)


def begin_write(s: Session, collection_id: int) -> int:
    """Take the next sequence of the collection: call first in a write transaction (it orders the commits)."""
    return int(
        s.execute(
            update(Collection)
            .where(Collection.id == collection_id)
            .values(generation=Collection.generation + 1)
            .returning(Collection.generation)
        ).scalar_one()
    )


def append(s: Session, collection_id: int, seq: int, added: list[int], removed: list[int]) -> None:
    """Record the transaction's chunk changes, in the transaction that makes them."""
    if added or removed:
        s.add(IndexLogEntry(collection_id=collection_id, seq=seq, added=_pack(added), removed=_pack(removed)))


def pending(s: Session, collection_id: int, since: int, upto: int) -> Pending:
    """The entries an index that applied ``since`` needs to reach ``upto``."""
    floor = s.scalar(select(Collection.log_floor).where(Collection.id == collection_id)) or 0
    if since < floor or since > upto:  # pruned past it, or an index from another (dropped) collection's life
        return Pending(since, upto, [], rebuild=True)
    rows = s.execute(
        select(IndexLogEntry.seq, IndexLogEntry.added, IndexLogEntry.removed)
        .where(IndexLogEntry.collection_id == collection_id, IndexLogEntry.seq > since, IndexLogEntry.seq <= upto)
        .order_by(IndexLogEntry.seq)
    ).all()
    return Pending(since, upto, [LogEntry(r.seq, _unpack(r.added), _unpack(r.removed)) for r in rows], rebuild=False)


def prune(s: Session, collection_id: int, older_than_hours: float) -> int:
    """Drop entries older than the retention; returns how many. Indexes behind the new floor will rebuild."""
    cutoff = utcnow() - timedelta(hours=older_than_hours)
    last = s.scalar(
        select(func.max(IndexLogEntry.seq)).where(
            IndexLogEntry.collection_id == collection_id, IndexLogEntry.created_at < cutoff
        )
    )
    if last is None:
        return 0
    res = s.execute(
        delete(IndexLogEntry).where(IndexLogEntry.collection_id == collection_id, IndexLogEntry.seq <= last)
    )
    s.execute(
        update(Collection)
        .where(Collection.id == collection_id, Collection.log_floor < last)
        .values(log_floor=last)
    )
    return int(res.rowcount or 0)  # type: ignore[attr-defined]  # a CursorResult for DELETE


def net_effect(entries: list[LogEntry]) -> tuple[np.ndarray, np.ndarray]:
    """(ids to remove, ids to add) that bring an index through ``entries`` in one step.

    Removing every id any entry touched and then adding the ids whose last word was "added" equals applying the
    entries one by one (within an entry removals come first: a replaced document's old chunks go before its new
    ones arrive, and SQLite may hand a new chunk an id just freed). It is also idempotent, so an index that had
    already applied some of the entries (a crash after its update, before it recorded the sequence) ends the same.
    """
    last: dict[int, bool] = {}
    for entry in entries:
        last.update(dict.fromkeys(entry.removed.tolist(), False))
        last.update(dict.fromkeys(entry.added.tolist(), True))
    touched = np.fromiter(last, dtype=np.int64, count=len(last))
    alive = np.fromiter((i for i, on in last.items() if on), dtype=np.int64)
    return touched, alive
