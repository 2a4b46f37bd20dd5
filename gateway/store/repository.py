"""The repository: every write of a resource, its version and its index rows in one transaction.

The FHIR core talks to the database only through this module (and the search engine, which reads
index tables). A ``WriteTransaction`` is one database transaction: on SQLite it starts with
``BEGIN IMMEDIATE`` (one writer at a time), on PostgreSQL the current row of a resource is locked
``FOR UPDATE`` before a version check, so If-Match holds across processes.

Stamping ``id``, ``meta.versionId`` and ``meta.lastUpdated`` happens here, because the version and
the time are decided by the store (https://hl7.org/fhir/R4/resource.html#Meta); the stamped resource
is serialized once and those bytes are what every later read serves.
"""

from __future__ import annotations

import logging
import operator
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, Select, bindparam, delete, func, insert, literal_column, select, text, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

from gateway import jsonutil
from gateway.errors import ServiceUnavailable
from gateway.search.dates import instant_now
from gateway.search.extract import COLUMNS
from gateway.search.membership import ROUTES as MEMBER_ROUTES
from gateway.search.membership import member_pairs
from gateway.search.sources import stored_values
from gateway.store import driver, pg_bulk
from gateway.store.checkpoint import WalCheckpointer
from gateway.store.database import is_sqlite, write_transaction
from gateway.store.group_commit import GroupCommitFailed, SqliteGroupWriter
from gateway.store.ids import new_id
from gateway.store.schema import INDEX_TABLES, REWRITTEN_TABLES, conditional_key, idx_member, resource, resource_version
from gateway.types import JSONObject

log = logging.getLogger(__name__)

IndexRows = Mapping[str, Sequence[Sequence[Any]]]
"""Index rows by kind (``token``, ``string``, ...), each row ``(param, *COLUMNS[kind])`` without
``rid``/``res_type`` (``gateway.search.extract.extract_values``; lists when they travelled as JSON)."""

Indexer = Callable[[JSONObject], IndexRows]


@dataclass(frozen=True, slots=True)
class StoredResource:
    """One stored version: what read, vread and history serve."""

    rid: int
    res_type: str
    res_id: str
    version_id: int
    last_updated: int  # microseconds since epoch, UTC
    deleted: bool
    body: bytes | None
    method: str = ""

    @property
    def etag(self) -> str:
        """The weak ETag of this version (https://hl7.org/fhir/R4/http.html#versioning)."""
        return f'W/"{self.version_id}"'


class WriteConflict(Exception):
    """A uniqueness race lost to a concurrent writer (same new id, same conditional key): the unit of
    work is safe to run again, and the second run will see the winner's commit."""


RETRY_AFTER_SECONDS = "2"


@contextmanager
def translate_db_errors() -> Iterator[None]:
    """The one place where driver errors become gateway errors.

    Lock timeouts, statement timeouts and an exhausted pool are 503 with Retry-After
    (the request may succeed later); unique violations become ``WriteConflict``.
    """
    try:
        yield
    except IntegrityError as exc:
        raise WriteConflict(str(exc.orig)[:200]) from None
    except OperationalError as exc:
        if not transient(exc.orig):
            raise
        raise _busy() from None
    except PoolTimeoutError:
        raise _busy() from None


_SQLITE_TRANSIENT = ("locked", "busy", "unable to open", "disk i/o")
"""sqlite3 raises OperationalError for lock timeouts and for SQL errors alike (``no such column``): only
these are worth a retry."""


@contextmanager
def _group_commit_errors() -> Iterator[None]:
    """A failed shared commit (``GroupCommitFailed``) as the error its cause would have been alone."""
    try:
        yield
    except GroupCommitFailed as exc:
        cause = exc.__cause__
        if isinstance(cause, IntegrityError):  # another writer's deferred violation: this work may rerun
            raise WriteConflict("the shared commit failed on another write's constraint") from None
        if (isinstance(cause, OperationalError) and transient(cause.orig)) or isinstance(cause, ServiceUnavailable):
            raise _busy() from None
        raise


def transient(error: BaseException | None) -> bool:
    """True when a driver's OperationalError may pass if retried (a lock or statement timeout, a lost or
    refused connection); False for a SQLite SQL error, which is a bug (500), not a busy database."""
    if isinstance(error, sqlite3.Error):
        text = str(error).lower()
        return any(marker in text for marker in _SQLITE_TRANSIENT)
    return True


def _busy() -> ServiceUnavailable:
    return ServiceUnavailable("The database is busy; retry later", headers={"Retry-After": RETRY_AFTER_SECONDS})


CURRENT_COLUMNS = (
    resource.c.rid,
    resource.c.res_type,
    resource.c.res_id,
    resource.c.version_id,
    resource.c.last_updated,
    resource.c.deleted,
    resource.c.body,
)
"""The columns of a point read, in the order ``StoredResource`` takes them (also ``Access.read_sql``)."""


# Statements built once: SQLAlchemy then only binds parameters (building per call costs ~4x the insert).
_SELECT_CURRENT = select(*CURRENT_COLUMNS).where(
    resource.c.res_type == bindparam("t"), resource.c.res_id == bindparam("i")
)
_SELECT_CURRENT_LOCKED = _SELECT_CURRENT.with_for_update()
_SELECT_VERSION = select(resource_version).where(
    resource_version.c.res_type == bindparam("t"),
    resource_version.c.res_id == bindparam("i"),
    resource_version.c.version_id == bindparam("v"),
)
_NEXT_RIDS = text("SELECT nextval(pg_get_serial_sequence('resource', 'rid')) FROM generate_series(1, :n)")
RID_BLOCKS = (8, 1024)
"""PostgreSQL: row ids taken from the sequence per round trip, first and at most (doubling in between)."""
_RESOURCE_COLUMNS = ("rid", "res_type", "res_id", "version_id", "last_updated", "deleted", "body")
_VERSION_COLUMNS = ("rid", "res_type", "res_id", "version_id", "last_updated", "method", "deleted", "body")
_INDEX_COLUMNS = {kind: ("rid", "res_type", "param", *columns) for kind, columns in COLUMNS.items()}
_MEMBER_COLUMNS = ("rid", "res_type", "organization", "patient")


@dataclass(frozen=True, slots=True)
class _WriteSql:
    """The driver SQL of the write path for one dialect (``gateway.store.driver``), compiled once."""

    inserts: dict[str, str]
    max_rid: str
    rewrite: tuple[tuple[str, tuple[str, ...]], ...]
    """SQLite: the statements replacing a current row, with their bind names (``pg_bulk.Rewrite`` fields):
    drop its index rows and conditional keys, update the row (in-process calls, one by one). PostgreSQL
    does it in one statement for any number of rows (``gateway.store.pg_bulk``); empty there."""


_WRITE_SQL: dict[str, _WriteSql] = {}
_TABLES: dict[str, tuple[str, tuple[str, ...]]] = {
    "resource": (resource.name, _RESOURCE_COLUMNS),
    "version": (resource_version.name, _VERSION_COLUMNS),
    **{kind: (table.name, _INDEX_COLUMNS[kind]) for kind, table in INDEX_TABLES.items()},
    "member": (idx_member.name, _MEMBER_COLUMNS),
}
"""Table and column order of each kind of buffered row."""
COPY_MIN_ROWS = 32
"""From this many rows, PostgreSQL takes them by COPY (an executemany is one INSERT per row on the server)."""


def _write_sql(conn: Connection) -> _WriteSql:
    found = _WRITE_SQL.get(conn.dialect.name)
    if found is not None:
        return found
    tables = {**INDEX_TABLES, "resource": resource, "version": resource_version, "member": idx_member}
    columns = {**_INDEX_COLUMNS, "resource": _RESOURCE_COLUMNS, "version": _VERSION_COLUMNS, "member": _MEMBER_COLUMNS}
    inserts = {
        name: driver.compile_positional(conn, driver.insert_statement(table, columns[name]))[0]
        for name, table in tables.items()
    }
    rewrite: tuple[tuple[str, tuple[str, ...]], ...] = ()
    if conn.dialect.name == "sqlite":
        deletes = [delete(t).where(t.c.rid == bindparam("rid")) for t in REWRITTEN_TABLES]
        update_row = (
            update(resource)
            .where(resource.c.rid == bindparam("rid"))
            .values(
                version_id=bindparam("version_id"),
                last_updated=bindparam("last_updated"),
                deleted=bindparam("deleted"),
                body=bindparam("body"),
            )
        )
        rewrite = tuple(driver.compile_positional(conn, statement) for statement in (*deletes, update_row))
    max_rid, _ = driver.compile_positional(conn, select(func.coalesce(func.max(resource.c.rid), literal_column("0"))))
    found = _WRITE_SQL[conn.dialect.name] = _WriteSql(inserts, max_rid, rewrite)
    return found


def _stored(row: Any) -> StoredResource:
    return StoredResource(
        rid=row.rid,
        res_type=row.res_type,
        res_id=row.res_id,
        version_id=row.version_id,
        last_updated=row.last_updated,
        deleted=bool(row.deleted),
        body=row.body,
        method=getattr(row, "method", ""),
    )


class Repository:
    """Access to the stored resources of one database."""

    def __init__(
        self, engine: Engine, *, indexer: Indexer, lock_timeout_s: float = 10.0, group_commit: int = 32
    ) -> None:
        self.engine = engine
        self.lock_timeout_s = lock_timeout_s
        self.indexer = indexer
        self.sqlite = is_sqlite(engine)
        # SQLite has one writer at a time; its busy handler makes waiting writers sleep and poll with
        # growing pauses (up to 100 ms), which wastes the lock's idle moments and gives long tails.
        # Writers of this process queue on a lock, and the processes of one file on a file lock.
        self._write_lock = threading.Lock() if self.sqlite else None
        self._file_lock = WriterFileLock.beside(engine.url.database) if self.sqlite else None
        self.group_writer = self._group_writer(group_commit)
        database = engine.url.database
        on_file = self.sqlite and database not in (None, "", ":memory:")
        self.checkpointer = WalCheckpointer(str(database)) if on_file else None
        """Checkpoints the write-ahead log after writes, off the commit path (``gateway.store.checkpoint``)."""
        pinned = PinnedConnections(engine) if self.sqlite else None
        self._point_read = PointRead(engine, _SELECT_CURRENT, pinned)
        self._version_read = PointRead(engine, _SELECT_VERSION, pinned)

    def first(self, sql: str, bound: tuple[Any, ...]) -> tuple[Any, ...] | None:
        """The first row of the driver SQL ``sql`` (positional parameters ``bound``), on a pooled DBAPI
        connection without SQLAlchemy's execution layer (``PointRead``)."""
        return self._point_read.first(sql, bound)

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        """A read-only transaction: one consistent snapshot for a read or a search page."""
        with translate_db_errors(), self.engine.connect() as conn, conn.begin():
            yield conn

    def _group_writer(self, max_writers: int) -> SqliteGroupWriter | None:
        """The group committer of a SQLite file (``gateway.store.group_commit``), unless disabled (1) or
        the database is in memory (one connection shared by every thread)."""
        if not self.sqlite or max_writers <= 1 or self.engine.url.database in (None, "", ":memory:"):
            return None
        file_lock = self._file_lock
        return SqliteGroupWriter(
            self.engine,
            lock_timeout_s=self.lock_timeout_s,
            max_writers=max_writers,
            acquire_file_lock=file_lock.acquire if file_lock is not None else lambda _deadline: True,
            release_file_lock=file_lock.release if file_lock is not None else lambda: None,
            busy=_busy,
        )

    @contextmanager
    def write(self) -> Iterator[WriteTransaction]:
        """A write transaction; committed when the block ends, rolled back if it raises. On a SQLite file,
        concurrent writers of this process share commits (``gateway.store.group_commit``): the block runs
        in a savepoint of the group's transaction, and ``write`` returns once that is committed."""
        if self.group_writer is not None:
            with _group_commit_errors(), translate_db_errors(), self.group_writer.transaction() as conn:
                tx = WriteTransaction(conn, indexer=self.indexer, lock_rows=False)
                yield tx
                tx.flush()
            if self.checkpointer is not None:
                self.checkpointer.wrote()
            return
        lock, file_lock = self._write_lock, self._file_lock
        deadline = time.monotonic() + self.lock_timeout_s
        if lock is not None and not lock.acquire(timeout=self.lock_timeout_s):
            raise _busy()
        try:
            if file_lock is not None and not file_lock.acquire(deadline):
                raise _busy()
            try:
                with translate_db_errors(), write_transaction(self.engine) as conn:
                    tx = WriteTransaction(conn, indexer=self.indexer, lock_rows=not self.sqlite)
                    yield tx
                    tx.flush()
            finally:
                if file_lock is not None:
                    file_lock.release()
        finally:
            if lock is not None:
                lock.release()
        if self.checkpointer is not None:
            self.checkpointer.wrote()

    def read(self, res_type: str, res_id: str, *, sql: str | None = None) -> StoredResource | None:
        """The current version of a resource (deleted ones too, flagged), or None if never created.

        ``sql``: driver SQL to run instead (the id its one positional parameter, the same columns), e.g. the
        read with a caller's visibility folded in (``gateway.auth.access.Access.read_sql``)."""
        row = self._point_read.one({"t": res_type, "i": res_id}) if sql is None else self.first(sql, (res_id,))
        return _stored_from_tuple(row, "") if row is not None else None

    def vread(self, res_type: str, res_id: str, version_id: int) -> StoredResource | None:
        """One version of a resource (https://hl7.org/fhir/R4/http.html#vread), or None."""
        row = self._version_read.one({"t": res_type, "i": res_id, "v": version_id})
        if row is None:
            return None
        _hseq, rid, r_type, r_id, version, last_updated, method, deleted, body = row
        return StoredResource(rid, r_type, r_id, version, last_updated, bool(deleted), _bytes(body), method)


class WriterFileLock:
    """An advisory lock (``flock``) on a file beside a SQLite database, taken by a process's writer
    before ``BEGIN IMMEDIATE``, so the gateway processes of one file hand the write lock over at once
    instead of through SQLite's busy handler. Waiting polls every ``POLL_S`` (a released lock is seen
    within that), bounded by the caller's deadline. It only orders the gateway's own writers: SQLite's
    lock stays the truth, and other programs writing the file still work through the busy timeout.
    Without ``fcntl`` (Windows) or for an in-memory database there is no file lock."""

    POLL_S = 0.0002

    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        weakref.finalize(self, os.close, self._fd)

    @classmethod
    def beside(cls, database: str | None) -> WriterFileLock | None:
        """The lock of the database file ``database`` (None for ``:memory:`` or without ``fcntl``)."""
        if fcntl is None or database in (None, "", ":memory:"):
            return None
        return cls(f"{database}-writer.lock")

    def acquire(self, deadline: float) -> bool:
        """Take the lock; False when ``deadline`` (``time.monotonic``) passes first."""
        assert fcntl is not None
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    return False
                time.sleep(self.POLL_S)

    def release(self) -> None:
        """Let the next process's writer in."""
        assert fcntl is not None
        fcntl.flock(self._fd, fcntl.LOCK_UN)


class PinnedConnections:
    """SQLite connections kept by the first ``LIMIT`` threads that read by key (the event loop thread
    above all: point reads run there, docs/performance.md), instead of a pool check-out and check-in
    per read (~10 µs, as much as the read). A pinned connection is in autocommit mode (no transaction
    is left open between reads); it is made by the engine's pool, so it carries the store's PRAGMAs, and
    then detached from it (it does not take a pool slot). It is closed when its thread ends or after a
    driver error."""

    LIMIT = 2

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._local = threading.local()
        self._lock = threading.Lock()
        self._count = 0

    def of_this_thread(self) -> Any | None:
        """This thread's pinned DBAPI connection, pinning one if fewer than ``LIMIT`` threads have one."""
        connection = getattr(self._local, "connection", None)
        if connection is not None or getattr(self._local, "refused", False):
            return connection
        with self._lock:
            if self._count >= self.LIMIT:
                self._local.refused = True
                return None
            self._count += 1
        try:
            fairy = self._engine.raw_connection()
        except (OperationalError, PoolTimeoutError):
            with self._lock:
                self._count -= 1
            return None
        connection = fairy.dbapi_connection
        fairy.detach()
        self._local.fairy, self._local.connection = fairy, connection
        weakref.finalize(threading.current_thread(), self._release, fairy)
        return self._local.connection

    def drop(self) -> None:
        """Give this thread's connection back (after a driver error: the next read pins a fresh one)."""
        fairy = getattr(self._local, "fairy", None)
        self._local.fairy = self._local.connection = None
        if fairy is not None:
            self._release(fairy)

    def _release(self, fairy: Any) -> None:
        with self._lock:
            self._count -= 1
        try:
            fairy.close()
        except Exception as exc:  # the connection broke: nothing left to close
            log.debug("pinned connection not closed: %s", type(exc).__name__)


class PointRead:
    """A one-row SELECT run on a pooled DBAPI connection, bypassing SQLAlchemy's execution layer.

    Reads by primary key are the hottest path of the server; SQLAlchemy's per-statement work (events,
    result objects, the transaction begin/commit round trip) cost ~130 µs against ~10 µs for the
    statement itself. The SQL is still compiled by SQLAlchemy, once, for the engine's dialect and
    paramstyle, so this stays one code for SQLite and PostgreSQL. A single SELECT needs no explicit
    transaction: it sees one consistent snapshot on both dialects.
    """

    def __init__(self, engine: Engine, statement: Select[Any], pinned: PinnedConnections | None = None) -> None:
        self._engine = engine
        self._pinned = pinned
        compiled = statement.compile(dialect=engine.dialect)
        self._sql = str(compiled)
        self._order = list(compiled.positiontup or []) if compiled.positional else None
        # Two or more positional names: itemgetter gives their tuple (a generator costs a read ~0.5 µs).
        self._values = operator.itemgetter(*self._order) if self._order is not None and len(self._order) > 1 else None
        self._dbapi_errors: tuple[type[BaseException], ...] = (engine.dialect.loaded_dbapi.OperationalError,)

    def one(self, params: dict[str, Any]) -> tuple[Any, ...] | None:
        """The first row for ``params``, or None."""
        if self._values is not None:
            bound: Any = self._values(params)
        else:
            bound = tuple(params[name] for name in self._order) if self._order is not None else params
        return self.first(self._sql, bound)

    def first(self, sql: str, bound: Any) -> tuple[Any, ...] | None:
        """The first row of the driver SQL ``sql`` with the driver parameters ``bound``, or None."""
        pinned = self._pinned.of_this_thread() if self._pinned is not None else None
        if pinned is not None:
            try:
                cursor = pinned.cursor()
                cursor.execute(sql, bound)
                row = cursor.fetchone()
                cursor.close()
            except self._dbapi_errors as exc:
                self._pinned.drop()  # type: ignore[union-attr]
                if not transient(exc):
                    raise
                raise _busy() from None
            return tuple(row) if row is not None else None
        try:
            connection = self._engine.raw_connection()
        except (OperationalError, PoolTimeoutError):
            raise _busy() from None
        try:
            cursor = connection.cursor()
            cursor.execute(sql, bound)
            row = cursor.fetchone()
            cursor.close()
            connection.commit()  # ends the read snapshot (PostgreSQL opened a transaction implicitly)
        except self._dbapi_errors as exc:
            connection.invalidate()
            if not transient(exc):
                raise
            raise _busy() from None
        finally:
            connection.close()
        return tuple(row) if row is not None else None


def _bytes(body: Any) -> bytes | None:
    """Driver blobs as bytes (psycopg returns memoryview-compatible bytes, sqlite3 bytes)."""
    return bytes(body) if body is not None and not isinstance(body, bytes) else body


def _stored_from_tuple(row: tuple[Any, ...], method: str) -> StoredResource:
    rid, res_type, res_id, version_id, last_updated, deleted, body = row
    return StoredResource(rid, res_type, res_id, version_id, last_updated, bool(deleted), _bytes(body), method)


def current_version(conn: Connection, res_type: str, res_id: str, *, for_update: bool = False) -> StoredResource | None:
    """The current row of ``res_type/res_id`` read on ``conn``."""
    query = _SELECT_CURRENT_LOCKED if for_update else _SELECT_CURRENT
    row = conn.execute(query, {"t": res_type, "i": res_id}).first()
    return _stored(row) if row is not None else None


class WriteTransaction:
    """Writes inside one database transaction. Index and version rows are buffered and flushed in
    bulk (executemany) before any read through ``conn`` that needs them and at commit."""

    def __init__(self, conn: Connection, *, indexer: Indexer, lock_rows: bool) -> None:
        self.conn = conn
        self._indexer = indexer
        self._lock_rows = lock_rows
        self._sql = _write_sql(conn)
        self._resources: list[tuple[Any, ...]] = []
        self._free_rids: list[int] = []
        self._rid_block = RID_BLOCKS[0]
        self._next_rid: int | None = None
        self._versions: list[tuple[Any, ...]] = []
        # "member": idx_member rows (gateway.search.membership), buffered and flushed like index rows.
        self._index_rows: dict[str, list[tuple[Any, ...]]] = {kind: [] for kind in (*INDEX_TABLES, "member")}

    def current(self, res_type: str, res_id: str) -> StoredResource | None:
        """The current row of a resource, locked for the rest of the transaction where the dialect can."""
        self.flush()
        return current_version(self.conn, res_type, res_id, for_update=self._lock_rows)

    def create(
        self,
        resource_json: JSONObject,
        *,
        res_id: str | None = None,
        method: str = "POST",
        index: IndexRows | None = None,
    ) -> StoredResource:
        """Insert version 1 of a new resource with ``res_id`` (server-assigned when None). ``index``: its
        search-index rows when the caller computed them itself (they must equal what the indexer gives for
        ``resource_json``)."""
        res_type = resource_json["resourceType"]
        res_id = res_id or new_id()
        body, last_updated = _stamp(resource_json, res_id, 1)
        rid = self._allocate_rid()
        self._resources.append((rid, res_type, res_id, 1, last_updated, False, body))
        stored = StoredResource(rid, res_type, res_id, 1, last_updated, False, body, method)
        self._add_version(stored)
        self._add_index_rows(rid, res_type, resource_json, index)
        return stored

    def create_history(
        self, versions: Sequence[tuple[JSONObject, str]], *, res_id: str | None = None
    ) -> list[StoredResource]:
        """Insert a new resource with its first ``len(versions)`` versions at once (each JSON with the method
        that wrote it, the last one current): the rows ``create`` then ``update`` calls would leave in this
        transaction, without rewriting the current row in between (index rows of the last version only).
        Each JSON is stamped in place (id, meta.versionId, meta.lastUpdated). Used by the batched referral
        intake (``gateway.calaim.referral_batch``: a Task created, then moved by the decision)."""
        res_type = versions[0][0]["resourceType"]
        res_id = res_id or new_id()
        rid = self._allocate_rid()
        written: list[StoredResource] = []
        for version_id, (resource_json, method) in enumerate(versions, start=1):
            body, last_updated = _stamp(resource_json, res_id, version_id)
            written.append(StoredResource(rid, res_type, res_id, version_id, last_updated, False, body, method))
            self._add_version(written[-1])
        last = written[-1]
        self._resources.append((rid, res_type, res_id, last.version_id, last.last_updated, False, last.body))
        self._add_index_rows(rid, res_type, versions[-1][0])
        return written

    def update(self, resource_json: JSONObject, previous: StoredResource, *, method: str = "PUT") -> StoredResource:
        """Write the next version of an existing (possibly deleted) resource."""
        return self.update_many([(resource_json, previous)], method=method)[0]

    def update_many(
        self, items: Sequence[tuple[JSONObject, StoredResource]], *, method: str = "PUT"
    ) -> list[StoredResource]:
        """``update`` of several resources at once (each ``previous`` a different resource): one flush, then
        the current rows are replaced for all of them at once (``_rewrite_current``) instead of once per
        resource. Used by the HN file's CHG rows (``adapters/files/hn_authorizations.py``)."""
        if len({previous.rid for _, previous in items}) != len(items):
            raise ValueError("update_many writes one version per resource")
        if not items:
            return []
        written: list[StoredResource] = []
        for resource_json, previous in items:
            version_id = previous.version_id + 1
            body, last_updated = _stamp(resource_json, previous.res_id, version_id)
            written.append(
                StoredResource(
                    previous.rid, previous.res_type, previous.res_id, version_id, last_updated, False, body, method
                )
            )
        self._rewrite_current([pg_bulk.Rewrite(s.rid, s.version_id, s.last_updated, False, s.body) for s in written])
        for (resource_json, _), stored in zip(items, written, strict=True):
            self._add_version(stored)
            self._add_index_rows(stored.rid, stored.res_type, resource_json)
        return written

    def delete(self, previous: StoredResource) -> StoredResource:
        """Mark a resource deleted: a new version without body, no index rows (https://hl7.org/fhir/R4/http.html#delete)."""
        version_id = previous.version_id + 1
        _, last_updated = instant_now()
        self._rewrite_current([pg_bulk.Rewrite(previous.rid, version_id, last_updated, True, None)])
        stored = StoredResource(
            previous.rid, previous.res_type, previous.res_id, version_id, last_updated, True, None, "DELETE"
        )
        self._add_version(stored)
        return stored

    def claim_conditional_key(self, res_type: str, key_hash: str, rid: int) -> bool:
        """Reserve the uniqueness key of a conditional create; False when another resource holds it."""
        self.flush()
        try:
            with self.conn.begin_nested():
                self.conn.execute(insert(conditional_key).values(res_type=res_type, key_hash=key_hash, rid=rid))
        except IntegrityError:
            return False
        return True

    def release_conditional_key(self, res_type: str, key_hash: str) -> None:
        """Drop a stale uniqueness key (its resource no longer matches the condition)."""
        self.conn.execute(
            delete(conditional_key).where(
                conditional_key.c.res_type == res_type, conditional_key.c.key_hash == key_hash
            )
        )

    def flush(self) -> None:
        """Write the buffered version and index rows (before searching inside this transaction, and at commit)."""
        if self._resources:
            self._insert("resource", self._resources)
            self._resources = []
        if self._versions:
            self._insert("version", self._versions)
            self._versions = []
        for kind, rows in self._index_rows.items():
            if rows:
                self._insert(kind, rows)
                self._index_rows[kind] = []

    def _insert(self, name: str, rows: list[tuple[Any, ...]]) -> None:
        """Insert ``rows`` into the table ``name`` (``resource``, ``version`` or an index kind): one
        executemany, or on PostgreSQL a COPY stream from ``COPY_MIN_ROWS`` rows on."""
        if self._lock_rows and len(rows) >= COPY_MIN_ROWS:
            table, columns = _TABLES[name]
            driver.copy_rows(self.conn, table, columns, rows)
        else:
            driver.executemany(self.conn, self._sql.inserts[name], rows)

    def expect_creates(self, count: int) -> None:
        """Say that about ``count`` resources will be created next (a transaction Bundle's POST entries), so
        PostgreSQL hands out their row ids in one round trip instead of ``RID_BLOCKS``' doubling ones (at
        most ``RID_BLOCKS[1]`` per trip; unused ids are gaps). A hint: SQLite ignores it."""
        if self._lock_rows and count > len(self._free_rids):
            self._rid_block = max(self._rid_block, min(count - len(self._free_rids), RID_BLOCKS[1]))

    def _allocate_rid(self) -> int:
        """The row id of a new resource, known before its row is inserted so rows can go in bulk.

        SQLite: this transaction holds the write lock (BEGIN IMMEDIATE) from its first write, so after
        one look at max(rid) the following ids are ours. PostgreSQL: ids come from the column's sequence
        in blocks growing with the transaction (unused ones are gaps, as after a rolled-back ``INSERT``).
        """
        if self._lock_rows:  # PostgreSQL
            if not self._free_rids:
                block = self._rid_block
                self._free_rids = [int(r) for r in self.conn.execute(_NEXT_RIDS, {"n": block}).scalars()]
                self._free_rids.reverse()
                self._rid_block = min(block * 2, RID_BLOCKS[1])
            return self._free_rids.pop()
        if self._next_rid is None:
            self._next_rid = int(driver.fetch(self.conn, self._sql.max_rid)[0][0]) + 1 + len(self._resources)
        rid = self._next_rid
        self._next_rid += 1
        return rid

    def _rewrite_current(self, rows: Sequence[pg_bulk.Rewrite]) -> None:
        """Replace the current row of each of ``rows`` (its index rows and conditional keys dropped): one
        statement on PostgreSQL (``gateway.store.pg_bulk``), each of ``_WriteSql.rewrite`` for all rows
        (executemany) on SQLite."""
        self.flush()  # buffered rows of these rids must not survive the deletes
        if self._lock_rows:
            pg_bulk.rewrite_current(self.conn, rows)
            return
        for sql, names in self._sql.rewrite:
            driver.executemany(self.conn, sql, [tuple(getattr(row, name) for name in names) for row in rows])

    def _add_version(self, stored: StoredResource) -> None:
        self._versions.append(
            (
                stored.rid,
                stored.res_type,
                stored.res_id,
                stored.version_id,
                stored.last_updated,
                stored.method,
                stored.deleted,
                stored.body,
            )
        )

    def _add_index_rows(
        self, rid: int, res_type: str, resource_json: JSONObject, index: IndexRows | None = None
    ) -> None:
        head = (rid, res_type)
        found = self._indexer(resource_json) if index is None else index
        if res_type in MEMBER_ROUTES:  # from every extracted row (a Task's route reads its ``patient`` rows)
            self._add_members(rid, res_type, found.get("reference", ()))
        # Only the rows no other stored row of the resource repeats (gateway.search.sources: the
        # rules of the vendored parameters, which every search reads through).
        for kind, rows in stored_values(res_type, found).items():
            if rows:
                self._index_rows[kind].extend([head + tuple(row) for row in rows])

    def _add_members(self, rid: int, res_type: str, references: Sequence[Sequence[Any]]) -> None:
        """The ``idx_member`` rows of a route resource (``gateway.search.membership``), from its reference
        index rows: written and dropped with them, so membership follows every write of the resource."""
        self._index_rows["member"].extend([(rid, res_type, o, p) for o, p in member_pairs(res_type, references)])


def _stamp(resource_json: JSONObject, res_id: str, version_id: int) -> tuple[bytes, int]:
    """Set id, meta.versionId and meta.lastUpdated; return the serialized bytes and the time in micros."""
    text, micros = instant_now()
    resource_json["id"] = res_id
    meta = dict(resource_json.get("meta") or {})
    meta["versionId"] = str(version_id)
    meta["lastUpdated"] = text
    resource_json["meta"] = meta
    return jsonutil.dumps(resource_json), micros
