"""The audit log: one row per write through the API (ingest, upload, delete, cancel) and per key change.

Rows are only ever added. Each names the key that acted (its name, never its secret), the collection, the object
(a job id, a document id, a key name) and counts (files submitted, chunks removed ...), so "who deleted this, and
when" has an answer after the fact.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from rag.store.schema import AuditEntry, utcnow


@dataclass(frozen=True)
class AuditEvent:
    id: int
    at: datetime
    key: str
    action: str
    collection: str | None
    target: str | None
    counts: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        at = self.at if self.at.tzinfo is not None else self.at.replace(tzinfo=UTC)
        return {"id": self.id, "at": at.isoformat(), "key": self.key, "action": self.action,
                "collection": self.collection, "target": self.target, "counts": dict(self.counts)}


def audit_entry(key: str, action: str, *, collection: str | None = None, target: str | None = None,
                counts: dict[str, int] | None = None) -> AuditEntry:
    """A row to add in the caller's transaction (a key change commits with its entry)."""
    return AuditEntry(key_name=key, action=action, collection=collection, target=target, counts=counts or {},
                      at=utcnow())


class AuditRecords:
    sessions: sessionmaker[Session]

    def record(self, key: str, action: str, *, collection: str | None = None, target: str | None = None,
               counts: dict[str, int] | None = None) -> None:
        with self.sessions.begin() as s:
            s.add(audit_entry(key, action, collection=collection, target=target, counts=counts))

    def audit_log(self, limit: int = 100, *, collection: str | None = None, key: str | None = None,
                  action: str | None = None) -> list[AuditEvent]:
        """Newest first."""
        with self.sessions() as s:
            q = select(AuditEntry).order_by(AuditEntry.at.desc(), AuditEntry.id.desc()).limit(limit)
            if collection is not None:
                q = q.where(AuditEntry.collection == collection)
            if key is not None:
                q = q.where(AuditEntry.key_name == key)
            if action is not None:
                q = q.where(AuditEntry.action == action)
            return [AuditEvent(r.id, r.at, r.key_name, r.action, r.collection, r.target, dict(r.counts or {}))
                    for r in s.scalars(q)]
