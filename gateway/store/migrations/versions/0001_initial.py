"""Initial schema: resources, versions, search indexes, conditional keys, outbox.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("topic", sa.String(length=64), nullable=False),
        sa.Column("dedupe_key", sa.String(length=200), nullable=True),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("available_at", sa.BigInteger(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("claimed_by", sa.String(length=64), nullable=True),
        sa.Column("claimed_until", sa.BigInteger(), nullable=True),
        sa.Column("delivered_at", sa.BigInteger(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("topic", "dedupe_key", name="uq_outbox_dedupe"),
    )
    op.create_index("ix_outbox_pending", "outbox", ["topic", "delivered_at", "available_at", "id"], unique=False)
    op.create_table(
        "resource",
        sa.Column("rid", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("res_type", sa.String(length=64), nullable=False),
        sa.Column("res_id", sa.String(length=64), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("last_updated", sa.BigInteger(), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=True),
        sa.PrimaryKeyConstraint("rid"),
        sa.UniqueConstraint("res_type", "res_id", name="uq_resource_type_id"),
    )
    op.create_index("ix_resource_type_rid", "resource", ["res_type", "rid"], unique=False)
    op.create_index("ix_resource_type_updated", "resource", ["res_type", "last_updated", "rid"], unique=False)
    op.create_table(
        "conditional_key",
        sa.Column("res_type", sa.String(length=64), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("rid", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.ForeignKeyConstraint(
            ["rid"],
            ["resource.rid"],
        ),
        sa.PrimaryKeyConstraint("res_type", "key_hash", name="pk_conditional_key"),
    )
    op.create_index("ix_conditional_key_rid", "conditional_key", ["rid"], unique=False)
    op.create_table(
        "idx_date",
        sa.Column("rid", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("res_type", sa.String(length=64), nullable=False),
        sa.Column("param", sa.String(length=64), nullable=False),
        sa.Column("low", sa.BigInteger(), nullable=False),
        sa.Column("high", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["rid"],
            ["resource.rid"],
        ),
    )
    op.create_index("ix_date_rid", "idx_date", ["rid", "param", "low", "high"], unique=False)
    op.create_index("ix_date_value", "idx_date", ["res_type", "param", "low", "high", "rid"], unique=False)
    op.create_table(
        "idx_number",
        sa.Column("rid", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("res_type", sa.String(length=64), nullable=False),
        sa.Column("param", sa.String(length=64), nullable=False),
        sa.Column("low", sa.Float(), nullable=False),
        sa.Column("high", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["rid"],
            ["resource.rid"],
        ),
    )
    op.create_index("ix_number_rid", "idx_number", ["rid", "param", "low"], unique=False)
    op.create_index("ix_number_value", "idx_number", ["res_type", "param", "low", "rid"], unique=False)
    op.create_table(
        "idx_quantity",
        sa.Column("rid", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("res_type", sa.String(length=64), nullable=False),
        sa.Column("param", sa.String(length=64), nullable=False),
        sa.Column("system", sa.Text(), nullable=True),
        sa.Column("code", sa.Text(), nullable=True),
        sa.Column("unit", sa.Text(), nullable=True),
        sa.Column("low", sa.Float(), nullable=False),
        sa.Column("high", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["rid"],
            ["resource.rid"],
        ),
    )
    op.create_index("ix_quantity_rid", "idx_quantity", ["rid", "param"], unique=False)
    op.create_index("ix_quantity_value", "idx_quantity", ["res_type", "param", "code", "low", "rid"], unique=False)
    op.create_table(
        "idx_reference",
        sa.Column("rid", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("res_type", sa.String(length=64), nullable=False),
        sa.Column("param", sa.String(length=64), nullable=False),
        sa.Column("target_type", sa.String(length=64), nullable=True),
        sa.Column("target_id", sa.String(length=64), nullable=True),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("identifier_system", sa.Text(), nullable=True),
        sa.Column("identifier_value", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["rid"],
            ["resource.rid"],
        ),
    )
    op.create_index("ix_reference_reverse", "idx_reference", ["target_type", "target_id"], unique=False)
    op.create_index("ix_reference_rid", "idx_reference", ["rid", "param", "target_type", "target_id"], unique=False)
    op.create_index(
        "ix_reference_target", "idx_reference", ["res_type", "param", "target_id", "target_type", "rid"], unique=False
    )
    op.create_table(
        "idx_string",
        sa.Column("rid", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("res_type", sa.String(length=64), nullable=False),
        sa.Column("param", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("exact", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["rid"],
            ["resource.rid"],
        ),
    )
    op.create_index("ix_string_rid", "idx_string", ["rid", "param", "value"], unique=False)
    op.create_index("ix_string_value", "idx_string", ["res_type", "param", "value", "rid"], unique=False)
    op.create_table(
        "idx_token",
        sa.Column("rid", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("res_type", sa.String(length=64), nullable=False),
        sa.Column("param", sa.String(length=64), nullable=False),
        sa.Column("system", sa.Text(), nullable=True),
        sa.Column("code", sa.Text(), nullable=True),
        sa.Column("text", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["rid"],
            ["resource.rid"],
        ),
    )
    op.create_index("ix_token_rid", "idx_token", ["rid", "param", "code"], unique=False)
    op.create_index("ix_token_value", "idx_token", ["res_type", "param", "code", "system", "rid"], unique=False)
    op.create_table(
        "idx_uri",
        sa.Column("rid", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("res_type", sa.String(length=64), nullable=False),
        sa.Column("param", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["rid"],
            ["resource.rid"],
        ),
    )
    op.create_index("ix_uri_rid", "idx_uri", ["rid", "param"], unique=False)
    op.create_index("ix_uri_value", "idx_uri", ["res_type", "param", "value", "rid"], unique=False)
    op.create_table(
        "resource_version",
        sa.Column("hseq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("rid", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("res_type", sa.String(length=64), nullable=False),
        sa.Column("res_id", sa.String(length=64), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("last_updated", sa.BigInteger(), nullable=False),
        sa.Column("method", sa.String(length=8), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=True),
        sa.ForeignKeyConstraint(
            ["rid"],
            ["resource.rid"],
        ),
        sa.PrimaryKeyConstraint("hseq"),
        sa.UniqueConstraint("res_type", "res_id", "version_id", name="uq_version"),
    )
    op.create_index("ix_version_rid_hseq", "resource_version", ["rid", "hseq"], unique=False)
    op.create_index("ix_version_type_hseq", "resource_version", ["res_type", "hseq"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_version_type_hseq", table_name="resource_version")
    op.drop_index("ix_version_rid_hseq", table_name="resource_version")
    op.drop_table("resource_version")
    op.drop_index("ix_uri_value", table_name="idx_uri")
    op.drop_index("ix_uri_rid", table_name="idx_uri")
    op.drop_table("idx_uri")
    op.drop_index("ix_token_value", table_name="idx_token")
    op.drop_index("ix_token_rid", table_name="idx_token")
    op.drop_table("idx_token")
    op.drop_index("ix_string_value", table_name="idx_string")
    op.drop_index("ix_string_rid", table_name="idx_string")
    op.drop_table("idx_string")
    op.drop_index("ix_reference_target", table_name="idx_reference")
    op.drop_index("ix_reference_rid", table_name="idx_reference")
    op.drop_index("ix_reference_reverse", table_name="idx_reference")
    op.drop_table("idx_reference")
    op.drop_index("ix_quantity_value", table_name="idx_quantity")
    op.drop_index("ix_quantity_rid", table_name="idx_quantity")
    op.drop_table("idx_quantity")
    op.drop_index("ix_number_value", table_name="idx_number")
    op.drop_index("ix_number_rid", table_name="idx_number")
    op.drop_table("idx_number")
    op.drop_index("ix_date_value", table_name="idx_date")
    op.drop_index("ix_date_rid", table_name="idx_date")
    op.drop_table("idx_date")
    op.drop_index("ix_conditional_key_rid", table_name="conditional_key")
    op.drop_table("conditional_key")
    op.drop_index("ix_resource_type_updated", table_name="resource")
    op.drop_index("ix_resource_type_rid", table_name="resource")
    op.drop_table("resource")
    op.drop_index("ix_outbox_pending", table_name="outbox")
    op.drop_table("outbox")
