"""Outbox retention and dead letters.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24
"""

from __future__ import annotations

revision = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Placeholder: filled in by the change that needs it."""


def downgrade() -> None:
    """Placeholder: filled in by the change that needs it."""
