"""The append-only audit log (table ``audit_log_batch``, docs/access-control.md "Audit") and its
materialization into AuditEvents.

Writing: one row per batch of accesses the writer flushes, the accesses as compact JSON
(``gateway.fhir.audit_events.encode_batch``: no resource bodies, each caller's columns once per batch), a
batch per transaction, one ``INSERT`` on the DBAPI cursor (``gateway.store.driver``). A row per access cost
the writer thread ~4 µs of CPU per access (3 µs of it SQLite: 14 columns, a B-tree insert each); one row
per batch costs ~1 µs per access, a third of it encoding the JSON (docs/performance.md, session 6).

Materializing: AuditEvents are created from the batches past a high-water mark (``audit_log_mark``), in
chunks of whole batches, each chunk in one transaction that also advances the mark, so every logged access
becomes part of exactly one AuditEvent whichever process materializes it and whatever crashes in between.
The mark's row is locked for the chunk (``FOR UPDATE`` on PostgreSQL; SQLite has one writer at a time).
On PostgreSQL ids are taken from a sequence before commit, so a row with a smaller id can become visible
after one with a larger id; the log writers therefore hold a shared transaction-level advisory lock, and
the materializer takes it exclusively for a moment to learn an id below which every row is committed.
SQLite commits its one writer at a time in id order, so the mark alone suffices.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, bindparam, func, insert, literal_column, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from gateway.fhir.audit_events import LogRow, audit_index, encode_rows, events_of_groups, grouped, rows_of_batch
from gateway.store import driver
from gateway.store.ids import new_id
from gateway.store.repository import Repository
from gateway.store.schema import audit_log_batch, audit_log_mark

AUDIT_LOCK_SPACE = 0x41554454
"""First key of the audit log's advisory lock ("AUDT"), apart from the leases' and the migrations'."""
AUDIT_LOCK_KEY = 1
MARK_NAME = "AuditEvent"
"""The mark's row: the last ``audit_log_batch.id`` already part of AuditEvents."""
MAX_BATCHES_PER_CHUNK = 1000
"""Most batches one materializing transaction looks at (besides its ``chunk`` of accesses)."""


@dataclass(frozen=True, slots=True)
class _Sql:
    """The driver SQL of the audit log for one dialect (``gateway.store.driver``), compiled once."""

    insert: str
    """``INSERT INTO audit_log_batch (recorded, count, body) VALUES (?, ?, ?)``."""
    shared_lock: str | None
    exclusive_lock: str | None
    max_id: str
    ensure_mark: str
    mark: str
    """The mark, locked for the transaction (``FOR UPDATE``) where the dialect can."""
    mark_unlocked: str
    set_mark: str
    counts: str
    """Id and access count of the batches with ids in (after, up to], in id order, at most ``MAX_BATCHES_PER_CHUNK``."""
    bodies: str
    """The JSON of the batches with ids in (after, up to], in id order."""
    pending_count: str


_SQL: dict[str, _Sql] = {}


def _sql(conn: Connection) -> _Sql:
    found = _SQL.get(conn.dialect.name)
    if found is not None:
        return found
    postgres = conn.dialect.name == "postgresql"

    def compiled(statement: Any, names: tuple[str, ...] = ()) -> str:
        sql, order = driver.compile_positional(conn, statement)
        assert order == names, (order, names)  # callers pass values in this order
        return sql

    lock: tuple[Any, ...] = (literal_column(str(AUDIT_LOCK_SPACE)), literal_column(str(AUDIT_LOCK_KEY)))
    dialect_insert = postgresql_insert if postgres else sqlite_insert
    name: Any = bindparam("name")
    mark = select(audit_log_mark.c.last_id).where(audit_log_mark.c.name == name)
    c = audit_log_batch.c
    after, upto = c.id > bindparam("after"), c.id <= bindparam("upto")
    found = _SQL[conn.dialect.name] = _Sql(
        insert=compiled(
            insert(audit_log_batch).values(
                recorded=bindparam("recorded"), count=bindparam("count"), body=bindparam("body")
            ),
            ("recorded", "count", "body"),
        ),
        shared_lock=compiled(select(func.pg_advisory_xact_lock_shared(*lock))) if postgres else None,
        exclusive_lock=compiled(select(func.pg_advisory_xact_lock(*lock))) if postgres else None,
        max_id=compiled(select(func.coalesce(func.max(c.id), literal_column("0")))),
        ensure_mark=compiled(
            dialect_insert(audit_log_mark).values(name=name, last_id=literal_column("0")).on_conflict_do_nothing(),
            ("name",),
        ),
        mark=compiled(mark.with_for_update() if postgres else mark, ("name",)),
        mark_unlocked=compiled(mark, ("name",)),
        set_mark=compiled(
            update(audit_log_mark).where(audit_log_mark.c.name == name).values(last_id=bindparam("last_id")),
            ("last_id", "name"),
        ),
        counts=compiled(select(c.id, c.count).where(after, upto).order_by(c.id), ("after", "upto"))
        + f" LIMIT {MAX_BATCHES_PER_CHUNK}",  # a constant: SQLite's compiler would add a bound OFFSET
        bodies=compiled(select(c.body).where(after, upto).order_by(c.id), ("after", "upto")),
        pending_count=compiled(select(func.coalesce(func.sum(c.count), literal_column("0"))).where(after), ("after",)),
    )
    return found


def write_batch(conn: Connection, recorded: int, count: int, body: str) -> None:
    """Insert one batch of ``count`` accesses (``body``: ``audit_events.encode_batch``; ``recorded``: its
    first access, µs since the epoch) inside the transaction of ``conn``."""
    sql = _sql(conn)
    if sql.shared_lock is not None:
        driver.fetch(conn, sql.shared_lock)
    driver.execute(conn, sql.insert, (recorded, count, body))


def write_rows(conn: Connection, rows: list[LogRow]) -> None:
    """Insert ``rows`` as one batch inside the transaction of ``conn`` (tests, tools)."""
    if rows:
        write_batch(conn, rows[0][0], len(rows), encode_rows(rows))


def materialize(repo: Repository, *, chunk: int = 5000) -> int:
    """Create the AuditEvents of every logged access not yet part of one; returns how many were created.

    Runs in transactions of whole batches, at least one and about ``chunk`` accesses each (each advances
    the mark), so it may be stopped anywhere and another process or a later call continues where it
    stopped."""
    upper = _committed_upper_bound(repo)
    created = 0
    while True:
        with repo.write() as tx:
            conn = tx.conn
            sql = _sql(conn)
            driver.execute(conn, sql.ensure_mark, (MARK_NAME,))
            last_id = int(driver.fetch(conn, sql.mark, (MARK_NAME,))[0][0])
            if last_id >= upper:
                return created
            stop, taken = upper, 0  # every id up to ``upper`` has committed: gaps (rolled back) included
            batches = driver.fetch(conn, sql.counts, (last_id, upper))
            for batch_id, count in batches:
                taken += int(count)
                if taken >= chunk:
                    stop = int(batch_id)
                    break
            else:
                if len(batches) == MAX_BATCHES_PER_CHUNK:
                    stop = int(batches[-1][0])
            bodies = driver.fetch(conn, sql.bodies, (last_id, stop))
            for event in events_of_groups(grouped(row for (body,) in bodies for row in rows_of_batch(body))):
                tx.create(event, res_id=new_id(), method="POST", index=audit_index(event, repo.indexer))
                created += 1
            driver.execute(conn, sql.set_mark, (stop, MARK_NAME))


def pending_count(repo: Repository) -> int:
    """How many logged accesses are not yet part of an AuditEvent (monitoring, tests)."""
    with repo.connect() as conn:
        sql = _sql(conn)
        found = driver.fetch(conn, sql.mark_unlocked, (MARK_NAME,))
        last_id = int(found[0][0]) if found else 0
        return int(driver.fetch(conn, sql.pending_count, (last_id,))[0][0])


def _committed_upper_bound(repo: Repository) -> int:
    """An id at or below which every ``audit_log_batch`` row that will ever commit has committed."""
    if repo.sqlite:  # one writer at a time, ids in commit order: the largest id seen is such a bound
        with repo.connect() as conn:
            return int(driver.fetch(conn, _sql(conn).max_id)[0][0])
    with repo.write() as tx:
        sql = _sql(tx.conn)
        assert sql.exclusive_lock is not None
        driver.fetch(tx.conn, sql.exclusive_lock)
        return int(driver.fetch(tx.conn, sql.max_id)[0][0])
