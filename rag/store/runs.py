"""Ingestion jobs in SQL: the run rows every replica reads, and the per-file items of queued jobs.

Kept apart from documents and chunks because jobs are bookkeeping about work, not the searchable truth; the
store composes them (``Store`` is a ``RunRecords``) so callers keep one object.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from rag.store.schema import IngestionItem, IngestionRun, utcnow
from rag.types import JOB_LIVE, FileOutcome

_FINAL_ITEM = ("added", "updated")
"""An item that reached one of these keeps it when a second delivery of its task finds the file unchanged."""


class RunRecords:
    sessions: sessionmaker[Session]

    def create_run(
        self, run_id: str, collection: str, paths: list[str], state: str = "queued", *, executor: str = "thread",
        total: int = 0,
    ) -> None:
        with self.sessions.begin() as s:
            s.add(IngestionRun(
                id=run_id, collection=collection, paths=paths, state=state, counts={}, errors=[], heartbeat_at=utcnow(),
                executor=executor, total=total,
            ))

    def update_run(self, run_id: str, **values: Any) -> None:
        with self.sessions.begin() as s:
            s.execute(update(IngestionRun).where(IngestionRun.id == run_id).values(**values))

    def transition_run(self, run_id: str, from_states: Iterable[str], **values: Any) -> bool:
        """Update a run only if it is still in one of ``from_states`` (compare-and-set); True if it was.

        Job state changes race (a worker starting a queued job while a client, possibly on another replica,
        cancels it); this makes each change atomic in SQL instead of a read followed by a write."""
        with self.sessions.begin() as s:
            res = s.execute(
                update(IngestionRun)
                .where(IngestionRun.id == run_id, IngestionRun.state.in_(list(from_states)))
                .values(**values)
            )
            return bool(res.rowcount)  # type: ignore[attr-defined]  # a CursorResult for UPDATE

    def get_run(self, run_id: str) -> IngestionRun | None:
        with self.session() as s:
            return s.get(IngestionRun, run_id)

    def list_runs(self, limit: int = 50, *, collections: Sequence[str] | None = None) -> list[IngestionRun]:
        """The newest runs, of every collection or of ``collections`` (an API key's scope)."""
        with self.session() as s:
            q = select(IngestionRun).order_by(IngestionRun.created_at.desc()).limit(limit)
            if collections is not None:
                q = q.where(IngestionRun.collection.in_(list(collections)))
            return list(s.scalars(q))

    def heartbeat_runs(self, run_ids: list[str]) -> None:
        """Mark the owner's unfinished runs alive (see :meth:`interrupt_stale_runs`)."""
        if not run_ids:
            return
        with self.sessions.begin() as s:
            s.execute(
                update(IngestionRun)
                .where(IngestionRun.id.in_(run_ids), IngestionRun.state.in_(JOB_LIVE))
                .values(heartbeat_at=utcnow())
            )

    def interrupt_stale_runs(self, silent_for_s: float) -> int:
        """Mark interrupted the unfinished runs whose owner has not sent a heartbeat for ``silent_for_s``.

        Only the owning process can run a job (its queue and threads are in memory), so a job whose heartbeat
        stopped belongs to a process that died. Any replica may sweep; a live replica's jobs keep beating."""
        cutoff = utcnow() - timedelta(seconds=silent_for_s)
        with self.sessions.begin() as s:
            res = s.execute(
                update(IngestionRun)
                .where(
                    IngestionRun.state.in_(JOB_LIVE),
                    func.coalesce(IngestionRun.executor, "thread") == "thread",
                    func.coalesce(IngestionRun.heartbeat_at, IngestionRun.created_at) < cutoff,
                )
                .values(state="interrupted", message="the process running this job stopped", finished_at=utcnow())
            )
            return res.rowcount or 0  # type: ignore[attr-defined]  # a CursorResult for UPDATE

    # --- per-file items of queued jobs -------------------------------------------------------------
    def record_item(self, run_id: str, outcome: FileOutcome, size: int = 0) -> None:
        """What one task did to its file; a redelivered task updates the row rather than adding one."""
        values = {"status": outcome.status, "chunks": outcome.chunks, "error": outcome.error, "bytes": size}
        for _ in range(2):  # a second delivery racing the first into the insert takes the update path
            try:
                with self.sessions.begin() as s:
                    row = s.scalar(
                        select(IngestionItem).where(IngestionItem.run_id == run_id, IngestionItem.path == outcome.path)
                    )
                    if row is None:
                        s.add(IngestionItem(run_id=run_id, path=outcome.path, updated_at=utcnow(), **values))
                    elif not (row.status in _FINAL_ITEM and outcome.status == "unchanged"):
                        for key, value in values.items():
                            setattr(row, key, value)
                        row.updated_at = utcnow()
                return
            except IntegrityError:
                continue

    def item_count(self, run_id: str) -> int:
        with self.sessions() as s:
            return int(s.scalar(select(func.count()).where(IngestionItem.run_id == run_id)) or 0)

    def item_summary(self, run_id: str) -> tuple[dict[str, int], list[dict[str, str]], int, str | None]:
        """(counts by status, failures, bytes done, the last file finished) of a queued job."""
        with self.sessions() as s:
            counts: dict[str, int] = {
                status: n
                for status, n in s.execute(
                    select(IngestionItem.status, func.count()).where(IngestionItem.run_id == run_id)
                    .group_by(IngestionItem.status)
                )
            }
            failures = [
                {"path": p, "status": st, "error": e or ""}
                for p, st, e in s.execute(
                    select(IngestionItem.path, IngestionItem.status, IngestionItem.error)
                    .where(IngestionItem.run_id == run_id, IngestionItem.status.in_(("failed", "skipped")))
                    .order_by(IngestionItem.id)
                )
            ]
            done_bytes = s.scalar(select(func.coalesce(func.sum(IngestionItem.bytes), 0))
                                  .where(IngestionItem.run_id == run_id)) or 0
            last = s.scalar(
                select(IngestionItem.path).where(IngestionItem.run_id == run_id)
                .order_by(IngestionItem.updated_at.desc(), IngestionItem.id.desc()).limit(1)
            )
        return counts, failures, int(done_bytes), last
