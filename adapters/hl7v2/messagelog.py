"""The HL7 v2 message log (table ``hl7v2_message``, gateway/store/schema.py): every inbound message with
the ACK it got, every outbound RRI with the ACK it got; searchable and replayable (``calaim-gateway mllp
log / show / replay``).

Inbound rows are keyed by (``in``, sender = MSH-3|MSH-4, MSH-10). The row of an applied message (AA) is
written in the transaction of the resources it produced, so it exists if and only if they do; a resend
finds it and gets the stored ACK (exactly once: DESIGN.md choice 3). AE/AR rows are not final: nothing
was applied, so a resend is processed again and the row updated (a corrected message with the same
MSH-10 then succeeds). The raw bytes are PHI: they are stored, never logged.

``find`` and ``insert_row`` run once per message on the commit thread: their SQL is compiled once per
dialect and run on the connection's DBAPI cursor (``gateway.store.driver``), inside the caller's
transaction, instead of building and compiling a SQLAlchemy statement per call.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, bindparam, select, update

from gateway.store import driver
from gateway.store.schema import hl7v2_message

IN = "in"
OUT = "out"
FINAL_INBOUND = "AA"


def now_micros() -> int:
    """Microseconds since the epoch."""
    return time.time_ns() // 1000


@dataclass(frozen=True, slots=True)
class LogRow:
    """One logged message (``raw``/``ack`` only when asked for)."""

    id: int
    direction: str
    sender: str
    control_id: str | None
    message_type: str
    status: str
    received_at: int
    updated_at: int
    attempts: int
    charset: str | None
    error: str | None
    resources: list[str]
    outbox_id: int | None
    raw: bytes | None = None
    ack: bytes | None = None


_SUMMARY = [c for c in hl7v2_message.c if c.name not in ("raw", "ack")]


def _row(row: Any, *, full: bool) -> LogRow:
    return LogRow(
        id=row.id,
        direction=row.direction,
        sender=row.sender,
        control_id=row.control_id,
        message_type=row.message_type,
        status=row.status,
        received_at=row.received_at,
        updated_at=row.updated_at,
        attempts=row.attempts,
        charset=row.charset,
        error=row.error,
        resources=orjson.loads(row.resources) if row.resources else [],
        outbox_id=row.outbox_id,
        raw=bytes(row.raw) if full and row.raw is not None else None,
        ack=bytes(row.ack) if full and row.ack is not None else None,
    )


_COLUMNS = tuple(c.name for c in hl7v2_message.c)
_INSERTED = tuple(c for c in _COLUMNS if c != "id")
_SQL: dict[tuple[str, str], tuple[str, tuple[str, ...]]] = {}


def _sql(conn: Connection, name: str) -> tuple[str, tuple[str, ...]]:
    """A statement of this module as driver SQL for the connection's dialect (compiled once)."""
    key = (conn.dialect.name, name)
    found = _SQL.get(key)
    if found is None:
        c = hl7v2_message.c
        if name == "insert":
            statement: Any = driver.insert_statement(hl7v2_message, _INSERTED).returning(c.id)
        else:
            statement = select(hl7v2_message).where(
                c.direction == bindparam("direction"),
                c.sender == bindparam("sender"),
                c.control_id == bindparam("control_id"),
            )
            if name == "find_locked":
                statement = statement.with_for_update()
        found = _SQL[key] = driver.compile_positional(conn, statement)
    return found


def find(conn: Connection, direction: str, sender: str, control_id: str, *, lock: bool = False) -> LogRow | None:
    """The row of a message key, locked for the transaction on PostgreSQL when ``lock``."""
    name = "find_locked" if lock and conn.dialect.name == "postgresql" else "find"
    sql, order = _sql(conn, name)
    values = {"direction": direction, "sender": sender, "control_id": control_id}
    rows = driver.fetch(conn, sql, [values[n] for n in order])
    if not rows:
        return None
    return _row(_Fetched(dict(zip(_COLUMNS, rows[0], strict=True))), full=True)


class _Fetched:
    """A fetched row with attribute access, as ``_row`` reads SQLAlchemy rows."""

    __slots__ = ("_values",)

    def __init__(self, values: dict[str, Any]) -> None:
        self._values = values

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None


def insert_row(
    conn: Connection,
    *,
    direction: str,
    sender: str,
    control_id: str | None,
    message_type: str,
    status: str,
    raw: bytes,
    charset: str | None,
    ack: bytes | None = None,
    error: str | None = None,
    resources: list[str] | None = None,
    outbox_id: int | None = None,
) -> int:
    """Insert a log row; raises IntegrityError when the key exists (the caller decides what that means)."""
    values = _values(
        {
            "direction": direction,
            "sender": sender,
            "control_id": control_id,
            "message_type": message_type,
            "status": status,
            "raw": raw,
            "charset": charset,
            "ack": ack,
            "error": error,
            "resources": resources,
            "outbox_id": outbox_id,
        }
    )
    sql, order = _sql(conn, "insert")
    rows = driver.fetch(conn, sql, [values[n] for n in order])
    return int(rows[0][0])


def insert_rows(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert the rows of a group commit in one executemany (each dict: the keyword arguments of
    ``insert_row``); raises IntegrityError when a key exists (the group's savepoint is then rolled back)."""
    if not rows:
        return
    key = (conn.dialect.name, "insert_many")
    found = _SQL.get(key)
    if found is None:
        found = _SQL[key] = driver.compile_positional(conn, driver.insert_statement(hl7v2_message, _INSERTED))
    sql, order = found
    driver.executemany(conn, sql, [tuple(v[n] for n in order) for v in map(_values, rows)])


def _values(row: dict[str, Any]) -> dict[str, Any]:
    """The column values of a new row (``insert_row``'s keyword arguments)."""
    now = now_micros()
    control_id, charset, resources = row.get("control_id"), row.get("charset"), row.get("resources")
    return {
        "direction": row["direction"],
        "sender": str(row["sender"])[:200],
        "control_id": control_id[:200] if control_id is not None else None,
        "message_type": str(row["message_type"])[:20],
        "status": row["status"],
        "received_at": now,
        "updated_at": now,
        "attempts": 1,
        "charset": charset[:32] if charset else None,
        "raw": row["raw"],
        "ack": row.get("ack"),
        "error": row.get("error"),
        "resources": orjson.dumps(resources).decode() if resources else None,
        "outbox_id": row.get("outbox_id"),
    }


def update_row(conn: Connection, row_id: int, *, count_attempt: bool = True, **values: Any) -> None:
    """Update a row's outcome (status, ack, error, resources, raw ...), counting one more attempt."""
    if "resources" in values:
        values["resources"] = orjson.dumps(values["resources"]).decode() if values["resources"] else None
    changes: dict[str, Any] = {**values, "updated_at": now_micros()}
    if count_attempt:
        changes["attempts"] = hl7v2_message.c.attempts + 1
    conn.execute(update(hl7v2_message).where(hl7v2_message.c.id == row_id).values(**changes))


def get(engine: Engine, row_id: int) -> LogRow | None:
    """One row with its raw message and ACK."""
    with engine.connect() as conn:
        row = conn.execute(select(hl7v2_message).where(hl7v2_message.c.id == row_id)).first()
    return _row(row, full=True) if row is not None else None


def search(
    engine: Engine,
    *,
    direction: str | None = None,
    status: str | None = None,
    message_type: str | None = None,
    control_id: str | None = None,
    sender: str | None = None,
    since: int | None = None,
    limit: int = 50,
) -> list[LogRow]:
    """Rows (without raw bytes) matching every given criterion, newest first."""
    c = hl7v2_message.c
    query = select(*_SUMMARY)
    for column, value in (
        (c.direction, direction),
        (c.status, status),
        (c.message_type, message_type),
        (c.control_id, control_id),
        (c.sender, sender),
    ):
        if value is not None:
            query = query.where(column == value)
    if since is not None:
        query = query.where(c.received_at >= since)
    query = query.order_by(c.id.desc()).limit(limit)
    with engine.connect() as conn:
        return [_row(row, full=False) for row in conn.execute(query)]
