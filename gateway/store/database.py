"""Database engines for the store: the URL alone chooses SQLite or PostgreSQL.

SQLite runs in WAL mode (readers never block the one writer) with a busy timeout; write transactions
start with ``BEGIN IMMEDIATE`` so two writers queue on the lock instead of failing on upgrade
(https://www.sqlite.org/lang_transaction.html). The pysqlite driver's own implicit transactions are
switched off, following SQLAlchemy's documented recipe for serializable SQLite transactions.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.pool import StaticPool

from gateway.store import driver
from gateway.store.migrate import upgrade


@dataclass(frozen=True, slots=True)
class EngineOptions:
    """Pool and timeout settings of the store (from ``Settings``; defaults suit tests and tools).

    Every wait is bounded, so a busy database answers 503 + Retry-After instead of hanging a request:
    ``pool_timeout_s`` for a free connection, ``lock_timeout_ms`` for a row/table lock (SQLite: the busy
    timeout of the database lock), ``statement_timeout_ms`` for any one statement (PostgreSQL).
    """

    pool_size: int = 8
    max_overflow: int = 8
    pool_timeout_s: float = 10.0
    lock_timeout_ms: int = 10_000
    statement_timeout_ms: int = 30_000
    sqlite_synchronous: str = "FULL"
    sqlite_wal_autocheckpoint: int = 10_000


def make_engine(database_url: str, options: EngineOptions | None = None) -> Engine:
    """Create the engine for ``database_url`` and bring its schema to the newest migration."""
    options = options or EngineOptions()
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        engine = _sqlite_engine(database_url, options)
    else:
        if url.drivername == "postgresql":
            url = url.set(drivername="postgresql+psycopg")
        engine = create_engine(
            url,
            pool_size=options.pool_size,
            max_overflow=options.max_overflow,
            pool_timeout=options.pool_timeout_s,
            pool_pre_ping=True,
            connect_args={
                "options": f"-c statement_timeout={options.statement_timeout_ms} "
                f"-c lock_timeout={options.lock_timeout_ms}",
                # Server-side prepared statements get generic plans after 5 runs, which are much worse
                # for search queries whose selectivity depends on the values (measured: 2.6 ms -> 62 ms).
                "prepare_threshold": None,
            },
        )
    upgrade(engine)
    return engine


def bind_without_adaptation() -> None:
    """Let ``sqlite3`` bind ``bytes`` and ``None`` parameters without its adaptation look-up.

    CPython's ``sqlite3`` binds ``int``, ``float`` and ``str`` directly, but passes every other value
    through the adaptation protocol first
    (https://docs.python.org/3/library/sqlite3.html#how-to-adapt-custom-python-types-to-sqlite-values):
    a miss in its adapter registry, then ``__adapt__``/``__conform__`` look-ups whose AttributeErrors are
    formatted and thrown away. Resource bodies are ``bytes`` and most index rows carry ``None`` columns,
    so that was ~200 ns per such parameter (an insert of 6 columns, 4 of them ``bytes``/``None``: 2.2 ->
    1.3 µs). Identity adapters make the look-up a hit that returns the value unchanged: what is stored is
    the same (a BLOB, a NULL). Process-wide and idempotent; registering these types does not turn off
    the direct path of the basic types (only adapting ``int``, ``float``, ``str`` or ``bytearray`` does).
    """
    sqlite3.register_adapter(bytes, bytes)
    sqlite3.register_adapter(type(None), _same)


def _same(value: None) -> None:
    return value


def _sqlite_engine(database_url: str, options: EngineOptions) -> Engine:
    bind_without_adaptation()
    url = make_url(database_url)
    memory = url.database in (None, "", ":memory:")
    if not memory and url.database:
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    busy_seconds = options.lock_timeout_ms / 1000
    kwargs: dict[str, Any] = {"connect_args": {"check_same_thread": False, "timeout": busy_seconds}}
    if memory:
        kwargs["poolclass"] = StaticPool
    else:
        kwargs.update(
            pool_size=options.pool_size, max_overflow=options.max_overflow, pool_timeout=options.pool_timeout_s
        )
    sqlite_synchronous = options.sqlite_synchronous
    checkpoint_pages = options.sqlite_wal_autocheckpoint
    busy_ms = options.lock_timeout_ms
    engine = create_engine(url, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves
        cursor = dbapi_connection.cursor()
        if not memory:
            _set_wal(cursor, busy_ms / 1000)
            # https://www.sqlite.org/pragma.html#pragma_wal_autocheckpoint: the commit that takes the log
            # past this many pages checkpoints it (each page once, however often it changed since the last).
            cursor.execute(f"PRAGMA wal_autocheckpoint={int(checkpoint_pages)}")
            # https://www.sqlite.org/pragma.html#pragma_journal_size_limit: a log that grew beyond this
            # (readers held a checkpoint back) is truncated to it when it is next reset.
            cursor.execute(f"PRAGMA journal_size_limit={JOURNAL_SIZE_LIMIT}")
        cursor.execute(f"PRAGMA synchronous={sqlite_synchronous}")
        cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA cache_size=-65536")  # 64 MiB page cache per connection
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # On the DBAPI connection: SQLAlchemy's execution of the statement would cost more than it.
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        driver.execute(conn, _BEGIN[mode])

    return engine


def _set_wal(cursor: Any, within_s: float) -> None:
    """``PRAGMA journal_mode=WAL`` (https://www.sqlite.org/wal.html), retried while another process holds
    the lock it needs: this pragma can answer "database is locked" at once, without the busy handler (seen
    when several processes open the file together while others write and checkpoint it)."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.005)


_BEGIN = {mode: f"BEGIN {mode}" for mode in ("DEFERRED", "IMMEDIATE", "EXCLUSIVE")}
JOURNAL_SIZE_LIMIT = 128 * 1024 * 1024
"""Bytes of write-ahead log kept on disk after a checkpoint resets it (SQLite default: no limit)."""


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A write transaction on a pooled connection: ``BEGIN IMMEDIATE`` on SQLite (writers queue on the
    database lock instead of failing on a read-to-write upgrade), a plain ``BEGIN`` on PostgreSQL."""
    with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            conn = conn.execution_options(sqlite_begin="IMMEDIATE")
        with conn.begin():
            yield conn


def is_sqlite(engine: Engine) -> bool:
    """True when ``engine`` talks to SQLite."""
    return engine.dialect.name == "sqlite"
