"""Outbox rows of the queues nobody reads are removed: ``calaim.referral-status>files`` and
``calaim.service>files``.

Until session 6 the CalAIM workflow (gateway/calaim/events.py ``CONSUMERS``) wrote every
``calaim.referral-status`` and ``calaim.service`` event for a ``files`` consumer too, but no part of the
file exchange reads those queues (the HN reconciliation file reads ``calaim.authorization>files``, the ECM
activity log is computed by ``$ecm-activity``; docs/calaim-workflow.md "Outbox topics"). Their rows were
never delivered, and retention purges delivered rows only, so they only grew (two of the seven outbox
rows of every first-import row of an HN file). The workflow no longer writes them; this drops those
already written. Nothing reads them, so nothing is lost; downgrade cannot bring them back (a no-op).

The newest row of the table is kept whatever its queue, as retention keeps it (SQLite gives a new row
``max(id) + 1``, and an outbox id is never handed out twice: MSH-10 of an RRI is ``RRI`` + the id); if it
is one of these rows it is marked delivered instead, so retention purges it once a newer event exists.
(Until session 7 this migration deleted it too: see migration 0013, which does the same for its queue.)

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision: str | None = "0010"
branch_labels: str | None = None
depends_on: str | None = None

UNREAD_QUEUES = ("calaim.referral-status>files", "calaim.service>files")


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
    op.execute(outbox.delete().where(outbox.c.topic.in_(UNREAD_QUEUES), outbox.c.id < newest))
    op.execute(
        outbox.update()
        .where(outbox.c.topic.in_(UNREAD_QUEUES), outbox.c.delivered_at.is_(None))
        .values(delivered_at=outbox.c.created_at, claimed_by=None, claimed_until=None)
    )


def downgrade() -> None:
    """Nothing to restore: the rows were never read."""
