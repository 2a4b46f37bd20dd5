"""Outbox rows of ``calaim.referral>hl7v2``, a queue nobody reads any more, are removed.

Until session 7 every referral taken in wrote a ``calaim.referral`` event for the county's RRI sender
(adapters/hl7v2/outbound.py), which completed each one unsent: the county learns of a referral from its
Task's Pending status event. The workflow no longer writes that queue (gateway/calaim/events.py
``CONSUMERS``) and the sender no longer claims it, so its undelivered rows would never be delivered, and
outbox retention purges delivered rows only (docs/outbox.md). Nothing reads them, so nothing is lost;
downgrade cannot bring them back (a no-op).

The newest row of the table is kept whatever its queue, as retention keeps it: SQLite gives a new row
``max(id) + 1``, and outbox ids must never be handed out twice (MSH-10 is ``RRI`` + the id; the file ledger
remembers ids). If it is one of these rows it is marked delivered instead, so retention purges it once a
newer event exists.

(The rows of the two other ``hl7v2`` queues that are not a county referral's need nothing: the sender still
reads those queues and completes such rows unsent, so retention purges them.)

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision: str | None = "0012"
branch_labels: str | None = None
depends_on: str | None = None

UNREAD_QUEUE = "calaim.referral>hl7v2"


def upgrade() -> None:
    outbox = sa.table(
        "outbox",
        sa.column("id", sa.BigInteger),
        sa.column("topic", sa.String),
        sa.column("created_at", sa.BigInteger),
        sa.column("claimed_by", sa.String),
        sa.column("claimed_until", sa.BigInteger),
        sa.column("delivered_at", sa.BigInteger),
    )
    newest = sa.select(sa.func.max(outbox.c.id)).scalar_subquery()
    op.execute(outbox.delete().where(outbox.c.topic == UNREAD_QUEUE, outbox.c.id < newest))
    op.execute(
        outbox.update()
        .where(outbox.c.topic == UNREAD_QUEUE, outbox.c.delivered_at.is_(None))
        .values(delivered_at=outbox.c.created_at, claimed_by=None, claimed_until=None)
    )


def downgrade() -> None:
    """Nothing to restore: the rows were never read."""
