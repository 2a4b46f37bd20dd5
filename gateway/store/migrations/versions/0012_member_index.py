"""Membership as index data: ``idx_member(rid, res_type, organization, patient)`` (issue 5).

One row per (organization, patient) pair a ServiceRequest (``performer``/``requester`` x ``subject``), Task
(``owner``/``requester`` x ``patient``) or Coverage (``health-network`` x ``beneficiary``) makes
(gateway/search/membership.py); the repository writes and drops them with the resource's other index rows.
The narrowing of an organization's view (gateway/auth/access.py) probes ``ix_member_organization`` once
instead of following three routes through ``idx_reference``.

The upgrade fills the table from the reference index rows already stored, in one ``INSERT ... SELECT``
(both dialects): the same pairs the repository writes for those resources, since it computes them from
the same rows. The routes are written out here, not imported: a migration keeps the schema of its
revision.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision: str | None = "0011"
branch_labels: str | None = None
depends_on: str | None = None

BACKFILL = """
INSERT INTO idx_member (rid, res_type, organization, patient)
SELECT DISTINCT o.rid, o.res_type, o.target_id, p.target_id
FROM idx_reference o JOIN idx_reference p ON p.rid = o.rid
WHERE o.target_type = 'Organization' AND p.target_type = 'Patient'
  AND o.target_id IS NOT NULL AND p.target_id IS NOT NULL
  AND (
    (o.res_type = 'ServiceRequest' AND o.param IN ('performer', 'requester') AND p.param = 'subject')
    OR (o.res_type = 'Task' AND o.param IN ('owner', 'requester') AND p.param = 'patient')
    OR (o.res_type = 'Coverage' AND o.param = 'health-network' AND p.param = 'beneficiary')
  )
"""
"""The pairs of every stored route resource, from its reference index rows (the routes of
gateway/search/membership.py at this revision)."""


def upgrade() -> None:
    op.create_table(
        "idx_member",
        sa.Column("rid", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("res_type", sa.String(length=64), nullable=False),
        sa.Column("organization", sa.String(length=64), nullable=False),
        sa.Column("patient", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(["rid"], ["resource.rid"]),
    )
    op.create_index("ix_member_organization", "idx_member", ["organization", "patient", "res_type"], unique=False)
    op.create_index("ix_member_rid", "idx_member", ["rid"], unique=False)
    op.execute(sa.text(BACKFILL))


def downgrade() -> None:
    op.drop_index("ix_member_rid", table_name="idx_member")
    op.drop_index("ix_member_organization", table_name="idx_member")
    op.drop_table("idx_member")
