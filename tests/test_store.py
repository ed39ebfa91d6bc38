"""The SQL store without models: schema migrations of an older store, the job heartbeat sweep, the writer lock."""

from __future__ import annotations

import os
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import inspect, select, text

from rag import Settings
from rag.store.database import MIGRATIONS
from rag.store.schema import SchemaVersion, utcnow
from rag.store.store import Store
from rag.types import FileOutcome


def _downgrade_to_v1(store: Store) -> None:
    """Make the store look like one written by the first release: no heartbeat column, schema version 1."""
    with store.engine.begin() as conn:
        conn.execute(text("ALTER TABLE ingestion_runs DROP COLUMN heartbeat_at"))
        conn.execute(SchemaVersion.__table__.update().values(version=1))


def _check_upgrade(settings: Settings) -> None:
    old = Store(settings)
    old.create_run("old-job", "default", ["/docs"], state="done")
    _downgrade_to_v1(old)
    old.close()

    store = Store(settings)  # opening migrates in place
    try:
        with store.engine.connect() as conn:
            assert "heartbeat_at" in {c["name"] for c in inspect(conn).get_columns("ingestion_runs")}
            assert conn.execute(select(SchemaVersion.version)).scalar() == len(MIGRATIONS) >= 2
        run = store.get_run("old-job")
        assert run is not None and run.state == "done" and run.heartbeat_at is None  # the old row survived
    finally:
        store.close()


def test_sqlite_store_of_an_older_release_is_upgraded(tmp_path: Path) -> None:
    _check_upgrade(Settings(data_dir=tmp_path))


def test_postgres_store_of_an_older_release_is_upgraded(pg_url: str, tmp_path: Path) -> None:
    _check_upgrade(Settings(data_dir=tmp_path, database_url=pg_url))


def test_postgres_store_of_v5_takes_long_paths_after_the_upgrade(pg_url: str, tmp_path: Path) -> None:
    """Migration v6 on a PostgreSQL store of an earlier release: the unique (owner, path) constraints that refused a
    path over the btree's 2,704 bytes give way to unique indexes on md5(path), still unique, with the rows kept."""
    from sqlalchemy import insert
    from sqlalchemy.exc import IntegrityError

    from rag.store.schema import PATH_INDEXES, Collection, Document

    settings = Settings(data_dir=tmp_path, database_url=pg_url)
    old = Store(settings)
    with old.engine.begin() as conn:  # as release v5 left it
        for table, (constraint, indexes) in PATH_INDEXES.items():
            for index in indexes:
                conn.execute(text(f"DROP INDEX {index.name}"))
            owner = "collection_id" if table == "documents" else "run_id"
            conn.execute(text(f"ALTER TABLE {table} ADD CONSTRAINT {constraint} UNIQUE ({owner}, path)"))
        conn.execute(SchemaVersion.__table__.update().values(version=5))
        coll = conn.execute(insert(Collection).values(name="c", embed_model="m", embed_dim=4).returning(Collection.id)).scalar()
    long_path = "/" + "/".join(os.urandom(100).hex() for _ in range(15))  # 3,015 incompressible bytes
    row = {"collection_id": coll, "content_hash": "h", "status": "failed"}
    with pytest.raises(Exception, match="index row size"), old.engine.begin() as conn:
        conn.execute(insert(Document).values(path=long_path, **row))
    old.close()

    store = Store(settings)  # opening migrates in place
    try:
        with store.engine.begin() as conn:
            assert conn.execute(select(SchemaVersion.version)).scalar() == len(MIGRATIONS) >= 6
            assert not inspect(conn).get_unique_constraints("documents")
            conn.execute(insert(Document).values(path=long_path, **row))
        with pytest.raises(IntegrityError), store.engine.begin() as conn:
            conn.execute(insert(Document).values(path=long_path, **row))  # still one row per path
        store.create_run("job", "c", [long_path], executor="queue")
        store.record_item("job", FileOutcome(long_path, "failed", error="boom"))  # a queued job's file, twice:
        store.record_item("job", FileOutcome(long_path, "failed", error="boom"))  # one row, updated
        assert store.item_count("job") == 1
    finally:
        store.close()


def test_only_jobs_whose_heartbeat_stopped_are_interrupted(tmp_path: Path) -> None:
    store = Store(Settings(data_dir=tmp_path))
    try:
        for job in ("dead-running", "dead-queued", "alive", "finished"):
            store.create_run(job, "default", ["/docs"], state="queued")
        store.update_run("dead-running", state="running")
        store.update_run("finished", state="done")
        long_ago = utcnow() - timedelta(minutes=10)
        for job in ("dead-running", "dead-queued", "alive", "finished"):
            store.update_run(job, heartbeat_at=long_ago)
        store.heartbeat_runs(["alive", "finished"])  # the owner of "alive" is still beating

        assert store.interrupt_stale_runs(silent_for_s=60) == 2
        states = {job: store.get_run(job).state for job in ("dead-running", "dead-queued", "alive", "finished")}
        assert states == {"dead-running": "interrupted", "dead-queued": "interrupted", "alive": "queued",
                          "finished": "done"}
        finished = store.get_run("finished").heartbeat_at
        assert finished.replace(tzinfo=None) == long_ago.replace(tzinfo=None)  # a finished job is not touched
        assert store.interrupt_stale_runs(silent_for_s=60) == 0
    finally:
        store.close()


def test_postgres_writer_lock_spans_hosts(pg_url: str, tmp_path: Path) -> None:
    """Two stores with their own data directories (two hosts) on one database: the second writer waits."""
    from ingest.pipeline import writer_lock

    host_a = Store(Settings(data_dir=tmp_path / "host-a", database_url=pg_url))
    host_b = Store(Settings(data_dir=tmp_path / "host-b", database_url=pg_url))
    acquired = threading.Event()

    def second_writer() -> None:
        with writer_lock(host_b, "default"):
            acquired.set()

    try:
        with writer_lock(host_a, "default"):
            thread = threading.Thread(target=second_writer)
            thread.start()
            assert not acquired.wait(1.0)  # no shared lock file, yet it waits
            with writer_lock(host_b, "another-collection"):
                pass  # other collections are not held up
        assert acquired.wait(10)
        thread.join()
    finally:
        host_a.close()
        host_b.close()


_OPEN_STORE = (
    "import sys; sys.path.insert(0, {repo!r}); from rag import Settings; from rag.store.store import Store; "
    "Store(Settings(data_dir={data!r}, database_url={url!r})).close()"
)


def _open_at_once(data: Path, url: str | None, n: int = 4) -> None:
    """``n`` processes create the same new store at the same moment (replicas started together)."""
    import subprocess
    import sys

    repo = str(Path(__file__).resolve().parents[1])
    script = _OPEN_STORE.format(repo=repo, data=str(data), url=url)
    procs = [subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True) for _ in range(n)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * n, "\n".join(errors)
    store = Store(Settings(data_dir=data, database_url=url))
    try:
        with store.engine.connect() as conn:
            assert conn.execute(select(SchemaVersion.version)).scalars().all() == [len(MIGRATIONS)]
    finally:
        store.close()


def test_processes_creating_one_sqlite_store_at_once_all_start(tmp_path: Path) -> None:
    _open_at_once(tmp_path / "data", None)


def test_processes_creating_one_postgres_store_at_once_all_start(pg_url: str, tmp_path: Path) -> None:
    _open_at_once(tmp_path / "data", pg_url)
