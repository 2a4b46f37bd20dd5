"""Append-only audit log (accesses recorded off the request path, materialized into AuditEvents).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24
"""

from __future__ import annotations

revision = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Placeholder: filled in by the change that needs it."""


def downgrade() -> None:
    """Placeholder: filled in by the change that needs it."""
