"""HN file exchange (file ledger, rows applied, export watermarks).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None

RowId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "file_inbound",
        sa.Column("id", RowId, primary_key=True, autoincrement=True),
        sa.Column("sender", sa.String(length=64), nullable=False),
        sa.Column("layout", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("rows_read", sa.Integer(), nullable=False),
        sa.Column("rows_applied", sa.Integer(), nullable=False),
        sa.Column("rows_unchanged", sa.Integer(), nullable=False),
        sa.Column("rows_rejected", sa.Integer(), nullable=False),
        sa.Column("received_at", sa.BigInteger(), nullable=False),
        sa.Column("finished_at", sa.BigInteger(), nullable=True),
        sa.UniqueConstraint("sender", "sha256", name="uq_file_inbound_digest"),
    )
    op.create_table(
        "file_row_error",
        sa.Column("id", RowId, primary_key=True, autoincrement=True),
        sa.Column("file_id", RowId, sa.ForeignKey("file_inbound.id"), nullable=False),
        sa.Column("row_no", sa.Integer(), nullable=False),
        sa.Column("column_name", sa.String(length=64), nullable=False),
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
    )
    op.create_index("ix_file_row_error_file", "file_row_error", ["file_id", "row_no"])
    op.create_table(
        "file_outbound",
        sa.Column("id", RowId, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("recipient", sa.String(length=64), nullable=False),
        sa.Column("period", sa.String(length=16), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("written_at", sa.BigInteger(), nullable=True),
        sa.UniqueConstraint("kind", "recipient", "sequence", name="uq_file_outbound_sequence"),
    )
    op.create_index("ix_file_outbound_period", "file_outbound", ["kind", "recipient", "period"])
    op.create_table(
        "file_outbound_event",
        sa.Column("outbox_id", RowId, primary_key=True),
        sa.Column("file_id", RowId, sa.ForeignKey("file_outbound.id"), nullable=False),
    )
    op.create_index("ix_file_outbound_event_file", "file_outbound_event", ["file_id"])
    op.create_table(
        "file_record",
        sa.Column("layout", sa.String(length=64), nullable=False),
        sa.Column("sender", sa.String(length=64), nullable=False),
        sa.Column("record_key", sa.String(length=100), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("res_type", sa.String(length=64), nullable=False),
        sa.Column("res_id", sa.String(length=64), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("layout", "sender", "record_key", name="pk_file_record"),
    )


def downgrade() -> None:
    op.drop_table("file_record")
    op.drop_table("file_outbound_event")
    op.drop_table("file_outbound")
    op.drop_table("file_row_error")
    op.drop_table("file_inbound")
