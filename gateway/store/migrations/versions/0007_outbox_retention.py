"""Outbox retention and dead letters: ``outbox.dead_at`` and the partial index of dead events.

Retention itself needs no schema: delivered events are purged in id order (gateway/store/outbox_retention.py).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None

_DEAD = sa.text("dead_at IS NOT NULL")


def upgrade() -> None:
    # A nullable column without a default: no table rewrite on PostgreSQL, a plain ALTER TABLE on SQLite.
    op.add_column("outbox", sa.Column("dead_at", sa.BigInteger(), nullable=True))
    op.create_index(
        "ix_outbox_dead", "outbox", ["topic", "id"], unique=False, sqlite_where=_DEAD, postgresql_where=_DEAD
    )


def downgrade() -> None:
    op.drop_index("ix_outbox_dead", table_name="outbox")
    with op.batch_alter_table("outbox") as batch:  # SQLite before 3.35 cannot drop a column in place
        batch.drop_column("dead_at")
