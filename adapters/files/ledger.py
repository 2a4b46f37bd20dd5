"""The file ledger (tables ``file_inbound``, ``file_row_error``, ``file_outbound``, ``file_outbound_event``
of gateway/store/schema.py): what makes imports idempotent and crash-safe and exports exactly-once.

Inbound: a file is known by (sender, sha256). Its ``position`` (the last line whose row is committed) and
its counts advance in the same transaction as the resources the rows wrote (``advance``), guarded by the
position the importer started from, so a resumed or concurrent import can never apply a row twice.
Outbound: a file is recorded with its sequence (and, for reconciliation, the outbox events it carries)
before it is written; a crash rewrites the recorded file instead of producing a new one.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, and_, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from gateway.errors import Conflict
from gateway.store.database import write_transaction
from gateway.store.schema import file_inbound, file_outbound, file_outbound_event, file_record, file_row_error, resource
from mappings.files.layout import FieldError

IMPORTING, DONE, REJECTED = "importing", "done", "rejected"
WRITING, WRITTEN = "writing", "written"


def now_micros() -> int:
    """Wall-clock microseconds since the epoch (ledger timestamps)."""
    return time.time_ns() // 1000


@dataclass(frozen=True, slots=True)
class Counts:
    """Rows read, applied, unchanged and rejected."""

    read: int = 0
    applied: int = 0
    unchanged: int = 0
    rejected: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(
            self.read + other.read,
            self.applied + other.applied,
            self.unchanged + other.unchanged,
            self.rejected + other.rejected,
        )


@dataclass(frozen=True, slots=True)
class InboundFile:
    """A ledger row of an inbound file."""

    id: int
    sender: str
    layout: str
    name: str
    sha256: str
    status: str
    position: int
    counts: Counts


def _inbound(r: Any) -> InboundFile:
    return InboundFile(
        r.id,
        r.sender,
        r.layout,
        r.name,
        r.sha256,
        r.status,
        r.position,
        Counts(r.rows_read, r.rows_applied, r.rows_unchanged, r.rows_rejected),
    )


def find_inbound(engine: Engine, sender: str, sha256: str) -> InboundFile | None:
    """The ledger row of a sender's file with this digest, if any."""
    query = select(file_inbound).where(file_inbound.c.sender == sender, file_inbound.c.sha256 == sha256)
    with engine.connect() as conn:
        row = conn.execute(query).first()
    return _inbound(row) if row is not None else None


def open_inbound(
    engine: Engine, *, sender: str, layout: str, name: str, sha256: str, size: int, sequence: int | None, status: str
) -> InboundFile:
    """The ledger row of this file: the existing one (same sender and digest), or a new one with ``status``."""
    found = find_inbound(engine, sender, sha256)
    if found is not None:
        return found
    values = {
        "sender": sender,
        "layout": layout,
        "name": name,
        "sha256": sha256,
        "size": size,
        "sequence": sequence,
        "status": status,
        "position": 0,
        "rows_read": 0,
        "rows_applied": 0,
        "rows_unchanged": 0,
        "rows_rejected": 0,
        "received_at": now_micros(),
    }
    try:
        with write_transaction(engine) as conn:
            conn.execute(insert(file_inbound).values(**values))
    except IntegrityError:
        pass  # another process recorded the same file first: use its row
    found = find_inbound(engine, sender, sha256)
    assert found is not None
    return found


def advance(conn: Connection, file_id: int, *, expected: int, position: int, counts: Counts) -> None:
    """Move the file's position from ``expected`` to ``position`` and add ``counts``, in the caller's
    transaction (the one that committed those rows); 409 when another import moved it meanwhile."""
    c = file_inbound.c
    result = conn.execute(
        update(file_inbound)
        .where(c.id == file_id, c.position == expected, c.status == IMPORTING)
        .values(
            position=position,
            rows_read=c.rows_read + counts.read,
            rows_applied=c.rows_applied + counts.applied,
            rows_unchanged=c.rows_unchanged + counts.unchanged,
            rows_rejected=c.rows_rejected + counts.rejected,
        )
    )
    if result.rowcount != 1:
        raise Conflict("another import of this file is running (its position moved)")


def add_errors(conn: Connection, file_id: int, errors: list[FieldError]) -> None:
    """Record row problems in the caller's transaction."""
    if errors:
        conn.execute(
            insert(file_row_error),
            [
                {"file_id": file_id, "row_no": e.row, "column_name": e.column, "code": e.code, "reason": e.reason[:500]}
                for e in errors
            ],
        )


def finish(conn: Connection, file_id: int, status: str) -> None:
    """Mark the file done (or rejected) in the caller's transaction."""
    conn.execute(
        update(file_inbound).where(file_inbound.c.id == file_id).values(status=status, finished_at=now_micros())
    )


def reload(engine: Engine, file_id: int) -> InboundFile:
    """The ledger row as stored now."""
    with engine.connect() as conn:
        row = conn.execute(select(file_inbound).where(file_inbound.c.id == file_id)).one()
    return _inbound(row)


def errors_of(engine: Engine, file_id: int) -> Iterator[FieldError]:
    """The file's recorded problems in row order, streamed."""
    query = (
        select(file_row_error.c.row_no, file_row_error.c.column_name, file_row_error.c.code, file_row_error.c.reason)
        .where(file_row_error.c.file_id == file_id)
        .order_by(file_row_error.c.row_no, file_row_error.c.id)
    )
    with engine.connect() as conn:
        for row in conn.execution_options(yield_per=1000).execute(query):
            yield FieldError(row.row_no, row.column_name, row.code, row.reason)


def error_count(engine: Engine, file_id: int) -> int:
    """How many problems the file has recorded."""
    query = select(func.count()).where(file_row_error.c.file_id == file_id)
    with engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


# ----------------------------------------------------------------------------- outbound


@dataclass(frozen=True, slots=True)
class OutboundFile:
    """A ledger row of an outbound file."""

    id: int
    kind: str
    recipient: str
    period: str
    sequence: int
    name: str
    status: str
    rows: int


def _outbound(r: Any) -> OutboundFile:
    return OutboundFile(r.id, r.kind, r.recipient, r.period, r.sequence, r.name, r.status, r.rows)


def outbound_for(engine: Engine, kind: str, recipient: str, period: str) -> OutboundFile | None:
    """The latest file of ``kind`` for ``recipient`` and ``period``, if any."""
    c = file_outbound.c
    query = (
        select(file_outbound)
        .where(c.kind == kind, c.recipient == recipient, c.period == period)
        .order_by(c.sequence.desc())
        .limit(1)
    )
    with engine.connect() as conn:
        row = conn.execute(query).first()
    return _outbound(row) if row is not None else None


def unfinished(engine: Engine, kind: str, recipient: str | None = None) -> list[OutboundFile]:
    """Files recorded but not yet written (a crash came between the two), oldest first."""
    c = file_outbound.c
    query = select(file_outbound).where(c.kind == kind, c.status == WRITING).order_by(c.id)
    if recipient is not None:
        query = query.where(c.recipient == recipient)
    with engine.connect() as conn:
        return [_outbound(row) for row in conn.execute(query)]


def record_outbound(
    conn: Connection, *, kind: str, recipient: str, period: str, name_of: str, outbox_ids: list[int] | None = None
) -> OutboundFile:
    """Record the next file of ``kind`` for ``recipient`` (sequence = last + 1) in the caller's transaction,
    with the outbox events it carries; ``name_of`` is a format string taking ``sequence``."""
    c = file_outbound.c
    last = conn.execute(select(func.max(c.sequence)).where(c.kind == kind, c.recipient == recipient)).scalar()
    sequence = int(last or 0) + 1
    name = name_of.format(sequence=sequence)
    file_id = conn.execute(
        insert(file_outbound)
        .values(
            kind=kind,
            recipient=recipient,
            period=period,
            sequence=sequence,
            name=name,
            status=WRITING,
            rows=0,
            created_at=now_micros(),
        )
        .returning(c.id)
    ).scalar_one()
    if outbox_ids:
        conn.execute(insert(file_outbound_event), [{"outbox_id": i, "file_id": file_id} for i in outbox_ids])
    return OutboundFile(int(file_id), kind, recipient, period, sequence, name, WRITING, 0)


def mark_written(engine: Engine, file_id: int, *, rows: int, sha256: str) -> None:
    """The file is durably written."""
    with write_transaction(engine) as conn:
        conn.execute(
            update(file_outbound)
            .where(file_outbound.c.id == file_id)
            .values(status=WRITTEN, rows=rows, sha256=sha256, written_at=now_micros())
        )


def events_of(engine: Engine, file_id: int) -> list[int]:
    """The outbox ids a reconciliation file carries, in id order."""
    query = (
        select(file_outbound_event.c.outbox_id)
        .where(file_outbound_event.c.file_id == file_id)
        .order_by(file_outbound_event.c.outbox_id)
    )
    with engine.connect() as conn:
        return [int(i) for i in conn.execute(query).scalars()]


def carried(engine: Engine, outbox_ids: list[int]) -> dict[int, int]:
    """outbox id -> the file already carrying it, for those of ``outbox_ids`` that are in a file."""
    out: dict[int, int] = {}
    with engine.connect() as conn:
        for start in range(0, len(outbox_ids), 900):
            part = outbox_ids[start : start + 900]
            query = select(file_outbound_event.c.outbox_id, file_outbound_event.c.file_id).where(
                file_outbound_event.c.outbox_id.in_(part)
            )
            out.update({int(r.outbox_id): int(r.file_id) for r in conn.execute(query)})
    return out


# ----------------------------------------------------------------------------- record digests


def current_digests(conn: Connection, layout_id: str, sender: str, keys: list[str]) -> dict[str, str]:
    """The digest of the last record applied for each of ``keys`` whose resource is still at the version
    that record left it (in the caller's transaction); keys without one are left out. One query per 900
    keys; the version is compared in SQL, so only the rows the fast path can use come back."""
    r, f = resource.c, file_record.c
    out: dict[str, str] = {}
    for start in range(0, len(keys), 900):
        part = keys[start : start + 900]
        query = (
            select(f.record_key, f.digest)
            .select_from(
                file_record.join(
                    resource, and_(r.res_type == f.res_type, r.res_id == f.res_id, r.version_id == f.version_id)
                )
            )
            .where(f.layout == layout_id, f.sender == sender, f.record_key.in_(part))
        )
        out.update((str(key), str(digest)) for key, digest in conn.execute(query).all())
    return out


def remember(conn: Connection, layout_id: str, sender: str, entries: dict[str, tuple[str, str, str, int]]) -> None:
    """Record ``key -> (digest, res_type, res_id, version)`` in the caller's transaction (replacing)."""
    if not entries:
        return
    keys = list(entries)
    for start in range(0, len(keys), 900):
        part = keys[start : start + 900]
        conn.execute(
            delete(file_record).where(
                file_record.c.layout == layout_id, file_record.c.sender == sender, file_record.c.record_key.in_(part)
            )
        )
    conn.execute(
        insert(file_record),
        [
            {
                "layout": layout_id,
                "sender": sender,
                "record_key": key,
                "digest": digest,
                "res_type": res_type,
                "res_id": res_id,
                "version_id": version,
            }
            for key, (digest, res_type, res_id, version) in entries.items()
        ],
    )
