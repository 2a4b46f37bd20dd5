"""Date-range search: what bounds the scan of a date index (docs/performance.md finding 4).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-24
"""

from __future__ import annotations

revision = "0008"
down_revision: str | None = "0007"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Placeholder: filled in by the change that needs it."""


def downgrade() -> None:
    """Placeholder: filled in by the change that needs it."""
