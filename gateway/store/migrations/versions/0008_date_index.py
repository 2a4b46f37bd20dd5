"""Date-range search: what bounds the scan of a date index (docs/performance.md finding 4).

``idx_date.span_class``, a column the database computes from the row (the class of ``high - low``,
``gateway/store/date_spans.py``), and the value index ``ix_date_span`` on ``(res_type, param,
span_class, low, high, rid)`` in place of ``ix_date_value``: a search on the end of a range becomes one
bounded range scan per class. The column is virtual on SQLite (``ALTER TABLE ADD COLUMN`` of a generated
column: no table rewrite; the index stores it) and stored on PostgreSQL, where adding it rewrites
``idx_date`` under an exclusive lock (seconds per million rows: run it in a maintenance window on a
large store).

The expression is written out here, not imported: a migration keeps the schema of its revision.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision: str | None = "0007"
branch_labels: str | None = None
depends_on: str | None = None

_SPAN_CLASS = (
    "CASE WHEN high - low <= 1000000 THEN 0 WHEN high - low <= 61000000 THEN 1 "
    "WHEN high - low <= 3601000000 THEN 2 WHEN high - low <= 86401000000 THEN 3 "
    "WHEN high - low <= 604801000000 THEN 4 WHEN high - low <= 2678401000000 THEN 5 "
    "WHEN high - low <= 31622401000000 THEN 6 WHEN high - low <= 315619201000000 THEN 7 ELSE 8 END"
)


def upgrade() -> None:
    # SQLite adds only virtual generated columns in place; PostgreSQL indexes only stored ones.
    stored = True if op.get_bind().dialect.name == "postgresql" else None
    column = sa.Column("span_class", sa.Integer(), sa.Computed(_SPAN_CLASS, persisted=stored), nullable=True)
    op.add_column("idx_date", column)
    op.create_index("ix_date_span", "idx_date", ["res_type", "param", "span_class", "low", "high", "rid"], unique=False)
    op.drop_index("ix_date_value", table_name="idx_date")


def downgrade() -> None:
    op.create_index("ix_date_value", "idx_date", ["res_type", "param", "low", "high", "rid"], unique=False)
    op.drop_index("ix_date_span", table_name="idx_date")
    with op.batch_alter_table("idx_date") as batch:  # SQLite before 3.35 cannot drop a column in place
        batch.drop_column("span_class")
