"""Opening the SQL store: engine options per backend and forward-only schema migrations.

Migrations are a numbered list of functions applied in order and recorded in ``schema_version``; a store
written by an older release is upgraded in place, never dropped. (Alembic would be the tool once there are
many; one table of versions keeps the embedded default free of a migrations folder to ship.)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, inspect, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session, sessionmaker

from rag.store.schema import PATH_INDEXES, ApiKey, AuditEntry, Base, IndexLogEntry, IngestionItem, SchemaVersion

log = logging.getLogger(__name__)


def _v1_initial(conn: Connection) -> None:
    Base.metadata.create_all(conn)


def _add_column(conn: Connection, table: str, column: str) -> None:
    """Add a column the current schema declares, unless it is there already.

    Idempotent because ``_v1_initial`` creates a new store from the current models, columns of later versions
    included; only stores written by an older release lack them."""
    if column in {c["name"] for c in inspect(conn).get_columns(table)}:
        return
    col = Base.metadata.tables[table].c[column]
    conn.execute(text(f'ALTER TABLE {table} ADD COLUMN {column} {col.type.compile(dialect=conn.dialect)}'))


def _v2_run_heartbeat(conn: Connection) -> None:
    _add_column(conn, "ingestion_runs", "heartbeat_at")


def _v3_change_log(conn: Connection) -> None:
    """The change log and its retention floor. Index files of older releases carry no log sequence: they are
    rebuilt from SQL once, at their first use; float32 embeddings already stored stay readable beside float16 ones."""
    IndexLogEntry.__table__.create(conn, checkfirst=True)
    _add_column(conn, "collections", "log_floor")
    conn.execute(text("UPDATE collections SET log_floor = generation WHERE log_floor IS NULL"))


def _v4_queued_jobs(conn: Connection) -> None:
    """Jobs split into per-file tasks on a broker: the executor of each job and one row per file."""
    _add_column(conn, "ingestion_runs", "executor")
    IngestionItem.__table__.create(conn, checkfirst=True)


def _v5_summary_state_index(conn: Connection) -> None:
    """Summaries are written by a background pass that looks up pending documents by state."""
    for index in Base.metadata.tables["documents"].indexes:
        if index.name == "ix_documents_summary_state":
            index.create(conn, checkfirst=True)


def _v6_long_paths(conn: Connection) -> None:
    """PostgreSQL: the unique (owner, path) constraints of documents and job items become unique indexes on
    ``md5(path)`` plus a hash index for lookups, so a path over ~2.7 KB (the btree's limit) can be stored
    (:func:`rag.store.schema.unique_path`). Nothing to do elsewhere, nor on a store created with them."""
    if conn.dialect.name != "postgresql":
        return
    for table, (constraint, indexes) in PATH_INDEXES.items():
        for index in indexes:
            index.create(conn, checkfirst=True)
        conn.execute(text(f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {constraint}"))


def _v7_access(conn: Connection) -> None:
    """Scoped API keys (stored hashed) and the audit log of writes (issue 29)."""
    ApiKey.__table__.create(conn, checkfirst=True)
    AuditEntry.__table__.create(conn, checkfirst=True)


MIGRATIONS: list[Callable[[Connection], None]] = [
    _v1_initial, _v2_run_heartbeat, _v3_change_log, _v4_queued_jobs, _v5_summary_state_index, _v6_long_paths,
    _v7_access,
]


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    # WAL lets queries read while an ingestion writes; busy_timeout makes a second writer wait, not fail.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def open_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)
        if engine.dialect.name == "postgresql":
            event.listen(engine, "connect", _postgres_session)
    migrate(engine)
    return engine


def _postgres_session(dbapi_conn, _record) -> None:
    """No transaction of ours waits on its client for long; one whose client vanished mid-transaction (a network
    cut between a statement and its COMMIT) is ended by the server after a minute, instead of holding its row
    locks (the collection's sequence, a job's row) until someone kills it: writers behind it then go on."""
    with dbapi_conn.cursor() as cur:
        cur.execute("SET idle_in_transaction_session_timeout = '60s'")
    dbapi_conn.commit()


def _serialize_migrations(conn: Connection) -> None:
    """Make concurrent openers of one database (replicas started together) migrate one at a time: the second
    waits for the first's transaction and then finds the schema current, instead of failing on "table exists"."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(current_schema()), hashtext('rag:migrate'))"))
    elif conn.dialect.name == "sqlite":
        conn.exec_driver_sql("BEGIN IMMEDIATE")  # the write lock now; pysqlite would run the DDL in autocommit


def migrate(engine: Engine) -> None:
    with engine.begin() as conn:
        _serialize_migrations(conn)
        SchemaVersion.__table__.create(conn, checkfirst=True)
        row = conn.execute(select(SchemaVersion.version)).scalar()
        current = row or 0
        for version, step in enumerate(MIGRATIONS, start=1):
            if version > current:
                log.info("migrating store schema to version %d", version)
                step(conn)
        if row is None:
            conn.execute(SchemaVersion.__table__.insert().values(id=1, version=len(MIGRATIONS)))
        elif current < len(MIGRATIONS):
            conn.execute(SchemaVersion.__table__.update().values(version=len(MIGRATIONS)))


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)
