"""Database engines for the store: the URL alone chooses SQLite or PostgreSQL.

SQLite runs in WAL mode (readers never block the one writer) with a busy timeout; write transactions
start with ``BEGIN IMMEDIATE`` so two writers queue on the lock instead of failing on upgrade
(https://www.sqlite.org/lang_transaction.html). The pysqlite driver's own implicit transactions are
switched off, following SQLAlchemy's documented recipe for serializable SQLite transactions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.pool import StaticPool

from gateway.store.migrate import upgrade

SQLITE_BUSY_TIMEOUT_MS = 30_000


def make_engine(database_url: str, *, pool_size: int = 8, sqlite_synchronous: str = "FULL") -> Engine:
    """Create the engine for ``database_url`` and bring its schema to the newest migration."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        engine = _sqlite_engine(database_url, sqlite_synchronous=sqlite_synchronous)
    else:
        if url.drivername == "postgresql":
            url = url.set(drivername="postgresql+psycopg")
        engine = create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)
    upgrade(engine)
    return engine


def _sqlite_engine(database_url: str, *, sqlite_synchronous: str) -> Engine:
    url = make_url(database_url)
    memory = url.database in (None, "", ":memory:")
    if not memory and url.database:
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    kwargs: dict[str, Any] = {"connect_args": {"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}}
    if memory:
        kwargs["poolclass"] = StaticPool
    engine = create_engine(url, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves
        cursor = dbapi_connection.cursor()
        if not memory:
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={sqlite_synchronous}")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA cache_size=-65536")  # 64 MiB page cache per connection
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


def is_sqlite(engine: Engine) -> bool:
    """True when ``engine`` talks to SQLite."""
    return engine.dialect.name == "sqlite"
