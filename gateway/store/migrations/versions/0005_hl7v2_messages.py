"""HL7 v2 message log (raw inbound messages with their ACKs, outbound deliveries).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "hl7v2_message",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("direction", sa.String(length=3), nullable=False),
        sa.Column("sender", sa.String(length=200), nullable=False),
        sa.Column("control_id", sa.String(length=200), nullable=True),
        sa.Column("message_type", sa.String(length=20), nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("received_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("charset", sa.String(length=32), nullable=True),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.Column("ack", sa.LargeBinary(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("resources", sa.Text(), nullable=True),
        sa.Column("outbox_id", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("direction", "sender", "control_id", name="uq_hl7v2_message_key"),
    )
    op.create_index("ix_hl7v2_message_time", "hl7v2_message", ["direction", "received_at"], unique=False)
    op.create_index("ix_hl7v2_message_status", "hl7v2_message", ["direction", "status", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_hl7v2_message_status", table_name="hl7v2_message")
    op.drop_index("ix_hl7v2_message_time", table_name="hl7v2_message")
    op.drop_table("hl7v2_message")
