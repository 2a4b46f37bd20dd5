"""The append-only audit log (table ``audit_log``, docs/access-control.md "Audit") and its
materialization into AuditEvents.

Writing: one narrow row per access (``gateway.fhir.audit_events.LogRow``: no bodies), a batch per
transaction, inserted with multi-row ``INSERT ... VALUES`` statements on the DBAPI cursor
(``gateway.store.driver``): one statement per 512 rows binds every value in C and runs the whole chunk
in one step without the interpreter lock, where ``executemany`` takes the lock back for every row
(measured on SQLite: 3-4 µs of CPU per row against 4-5 µs).

Materializing: AuditEvents are created from the log rows past a high-water mark (``audit_log_mark``),
in chunks, each chunk in one transaction that also advances the mark, so every logged access becomes
part of exactly one AuditEvent whichever process materializes it and whatever crashes in between. The
mark's row is locked for the chunk (``FOR UPDATE`` on PostgreSQL; SQLite has one writer at a time).
On PostgreSQL ids are taken from a sequence before commit, so a row with a smaller id can become
visible after one with a larger id; the log writers therefore hold a shared transaction-level advisory
lock, and the materializer takes it exclusively for a moment to learn an id below which every row is
committed. SQLite commits its one writer at a time in id order, so the mark alone suffices.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Connection, Text, bindparam, cast, func, insert, literal_column, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from gateway.fhir.audit_events import (
    GROUP_MICROS,
    LOG_COLUMNS,
    SUBTYPES,
    Entry,
    GroupKey,
    LogRow,
    audit_index,
    events_of_groups,
)
from gateway.store import driver
from gateway.store.repository import Repository
from gateway.store.schema import audit_log as audit_log_table
from gateway.store.schema import audit_log_mark

AUDIT_LOCK_SPACE = 0x41554454
"""First key of the audit log's advisory lock ("AUDT"), apart from the leases' and the migrations'."""
AUDIT_LOCK_KEY = 1
MARK_NAME = "AuditEvent"
"""The mark's row: the last ``audit_log.id`` already part of an AuditEvent."""
MAX_ROWS_PER_INSERT = 512
"""Rows per INSERT statement (14 values each: below SQLite's 32,766 and PostgreSQL's 65,535 parameters).
Statements are built for powers of two only, so at most ten texts reach the driver's statement cache."""


@dataclass(frozen=True, slots=True)
class _Sql:
    """The driver SQL of the audit log for one dialect (``gateway.store.driver``), compiled once."""

    inserts: dict[int, str]
    """Row count → ``INSERT INTO audit_log ... VALUES (...), (...)``; values row by row in ``LOG_COLUMNS`` order."""
    shared_lock: str | None
    exclusive_lock: str | None
    max_id: str
    ensure_mark: str
    mark: str
    """The mark, locked for the transaction (``FOR UPDATE``) where the dialect can."""
    mark_unlocked: str
    set_mark: str
    grouped: str
    """The accesses with ids in (after, up to], one row per group of ``audit_events.group_key`` but with the
    interaction instead of its subtype: the key's columns, then the group's accesses as a JSON array of
    ``audit_events.Entry`` (grouping and the per-access values are made by the database, not Python)."""
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

    inserts: dict[int, str] = {}
    for size in _sizes():
        names = tuple(f"{column}_{n}" for n in range(size) for column in LOG_COLUMNS)
        rows: list[dict[str, Any]] = [
            {column: bindparam(f"{column}_{n}") for column in LOG_COLUMNS} for n in range(size)
        ]
        inserts[size] = compiled(insert(audit_log_table).values(rows), names)
    lock: tuple[Any, ...] = (literal_column(str(AUDIT_LOCK_SPACE)), literal_column(str(AUDIT_LOCK_KEY)))
    dialect_insert = postgresql_insert if postgres else sqlite_insert
    name: Any = bindparam("name")
    mark = select(audit_log_mark.c.last_id).where(audit_log_mark.c.name == name)
    after, upto = audit_log_table.c.id > bindparam("after"), audit_log_table.c.id <= bindparam("upto")
    c = audit_log_table.c
    keys = (
        c.client_id,
        c.subject,
        c.token_id,
        c.fhir_user,
        c.organization,
        c.patient,
        c.interaction,
        c.status,
        c.address,
    )
    minute = c.recorded // literal_column(str(GROUP_MICROS))
    entry = (c.recorded, c.res_type, c.res_id, c.operation, c.query)
    entries = (
        cast(func.json_agg(func.json_build_array(*entry)), Text)
        if postgres
        else func.json_group_array(func.json_array(*entry))
    )
    found = _SQL[conn.dialect.name] = _Sql(
        inserts=inserts,
        shared_lock=compiled(select(func.pg_advisory_xact_lock_shared(*lock))) if postgres else None,
        exclusive_lock=compiled(select(func.pg_advisory_xact_lock(*lock))) if postgres else None,
        max_id=compiled(select(func.coalesce(func.max(audit_log_table.c.id), literal_column("0")))),
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
        grouped=compiled(select(*keys, minute, entries).where(after, upto).group_by(*keys, minute), ("after", "upto")),
        pending_count=compiled(select(func.count()).select_from(audit_log_table).where(after), ("after",)),
    )
    return found


def _sizes() -> list[int]:
    sizes, size = [], 1
    while size <= MAX_ROWS_PER_INSERT:
        sizes.append(size)
        size *= 2
    return sizes


def write_rows(conn: Connection, rows: Sequence[LogRow]) -> None:
    """Insert ``rows`` into ``audit_log`` inside the transaction of ``conn``."""
    write_values(conn, [value for row in rows for value in row], len(rows))


def write_values(conn: Connection, values: Sequence[object], count: int) -> None:
    """Insert ``count`` rows whose ``values`` follow each other flat, in ``LOG_COLUMNS`` order (what the
    statements bind: no tuple per row to build and take apart on the writer's path)."""
    sql = _sql(conn)
    if sql.shared_lock is not None:
        driver.fetch(conn, sql.shared_lock)
    width = len(LOG_COLUMNS)
    start = 0
    while start < count:
        size = min(MAX_ROWS_PER_INSERT, 1 << ((count - start).bit_length() - 1))
        driver.execute(conn, sql.inserts[size], values[start * width : (start + size) * width])
        start += size


def materialize(repo: Repository, *, chunk: int = 5000) -> int:
    """Create the AuditEvents of every logged access not yet part of one; returns how many were created.

    Runs in transactions of at most ``chunk`` ids each (each advances the mark), so it may be stopped
    anywhere and another process or a later call continues where it stopped."""
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
            stop = min(upper, last_id + chunk)
            groups: dict[GroupKey, list[Entry]] = {}
            for *caller, interaction, status, address, minute, values in driver.fetch(
                conn, sql.grouped, (last_id, stop)
            ):
                key = (*caller, SUBTYPES.get(interaction, "operation"), status, address, minute)
                groups.setdefault(key, []).extend(orjson.loads(values))
            for event in events_of_groups(groups):
                tx.create(event, res_id=uuid.uuid4().hex, method="POST", index=audit_index(event, repo.indexer))
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
    """An id at or below which every ``audit_log`` row that will ever commit has committed."""
    if repo.sqlite:  # one writer at a time, ids in commit order: the largest id seen is such a bound
        with repo.connect() as conn:
            return int(driver.fetch(conn, _sql(conn).max_id)[0][0])
    with repo.write() as tx:
        sql = _sql(tx.conn)
        assert sql.exclusive_lock is not None
        driver.fetch(tx.conn, sql.exclusive_lock)
        return int(driver.fetch(tx.conn, sql.max_id)[0][0])
