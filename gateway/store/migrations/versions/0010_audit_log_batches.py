"""The audit log as one row per written batch (``audit_log_batch``) instead of one row per access.

The audit writer thread (gateway/fhir/audit.py) spent ~4 µs of CPU per access writing a 14-column row
into ``audit_log``; one row per batch holding the accesses as compact JSON (the caller's six columns once
per caller) costs ~1 µs per access (docs/performance.md "SMART enforcement overhead", session 6).
The accesses ``audit_log`` holds past the materialization mark are moved into batches, so none is lost
or materialized twice; the rows already materialized are AuditEvents and leave with the table. The mark
(``audit_log_mark``, name ``AuditEvent``) now counts batch ids and restarts at 0. Downgrade does the
reverse (pending batches back into rows).

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-24
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision: str | None = "0009"
branch_labels: str | None = None
depends_on: str | None = None

MARK = "AuditEvent"
BATCH = 5000
_CALLER = ("client_id", "subject", "token_id", "fhir_user", "organization", "patient")
_ACCESS = ("interaction", "res_type", "res_id", "operation", "query", "status", "address")
_ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "audit_log_batch",
        sa.Column("id", _ROW_ID, autoincrement=True, nullable=False),
        sa.Column("recorded", sa.BigInteger(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sqlite_autoincrement=True,
    )
    bind = op.get_bind()
    log = sa.table("audit_log", sa.column("id"), *(sa.column(c) for c in ("recorded", *_CALLER, *_ACCESS)))
    columns = [log.c[c] for c in ("recorded", *_CALLER, *_ACCESS)]
    rows = bind.execute(sa.select(*columns).where(log.c.id > _mark(bind)).order_by(log.c.id)).all()
    batch = sa.table("audit_log_batch", sa.column("recorded"), sa.column("count"), sa.column("body"))
    for start in range(0, len(rows), BATCH):
        chunk = rows[start : start + BATCH]
        callers: dict[tuple[Any, ...], int] = {}
        accesses = []
        for recorded, *rest in chunk:
            caller, access = tuple(rest[: len(_CALLER)]), rest[len(_CALLER) :]
            accesses.append([recorded, callers.setdefault(caller, len(callers)), *access])
        body = json.dumps({"callers": [list(c) for c in callers], "accesses": accesses}, separators=(",", ":"))
        bind.execute(sa.insert(batch).values(recorded=chunk[0][0], count=len(chunk), body=body))
    _set_mark(bind)
    op.drop_table("audit_log")


def downgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("id", _ROW_ID, autoincrement=True, nullable=False),
        sa.Column("recorded", sa.BigInteger(), nullable=False),
        sa.Column("client_id", sa.Text(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("token_id", sa.Text(), nullable=False),
        sa.Column("fhir_user", sa.Text(), nullable=True),
        sa.Column("organization", sa.Text(), nullable=True),
        sa.Column("patient", sa.Text(), nullable=True),
        sa.Column("interaction", sa.Text(), nullable=False),
        sa.Column("res_type", sa.Text(), nullable=True),
        sa.Column("res_id", sa.Text(), nullable=True),
        sa.Column("operation", sa.Text(), nullable=True),
        sa.Column("query", sa.Text(), nullable=True),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("address", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sqlite_autoincrement=True,
    )
    bind = op.get_bind()
    bodies = bind.execute(
        sa.text("SELECT body FROM audit_log_batch WHERE id > :mark ORDER BY id"), {"mark": _mark(bind)}
    ).scalars()
    log = sa.table("audit_log", *(sa.column(c) for c in ("recorded", *_CALLER, *_ACCESS)))
    for body in bodies:
        decoded = json.loads(body)
        callers = decoded["callers"]
        rows = [
            dict(zip(("recorded", *_CALLER, *_ACCESS), (recorded, *callers[caller], *access), strict=True))
            for recorded, caller, *access in decoded["accesses"]
        ]
        if rows:
            bind.execute(sa.insert(log), rows)
    _set_mark(bind)
    op.drop_table("audit_log_batch")


def _mark(bind: sa.Connection) -> int:
    found = bind.execute(sa.text("SELECT last_id FROM audit_log_mark WHERE name = :name"), {"name": MARK}).first()
    return int(found[0]) if found else 0


def _set_mark(bind: sa.Connection) -> None:
    """Every row of the new table is pending: its ids start anew."""
    bind.execute(sa.text("UPDATE audit_log_mark SET last_id = 0 WHERE name = :name"), {"name": MARK})
