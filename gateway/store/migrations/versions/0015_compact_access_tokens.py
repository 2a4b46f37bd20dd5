"""Access tokens are compact random handles: what a token grants is kept with its row.

Until session 9 an access token was a signed JWT (~770 characters) carrying its claims; the store kept its
``jti`` for introspection and revocation. Now the token is a random handle (256 bits, 43 URL-safe
characters; adapters/smart/tokens.py) and its row holds what the verifier needs to turn it into a grant:
the FHIR base it was issued for (``audience``: ``iss`` and ``aud``) and the launch context (``patient``,
``encounter``, ``fhir_user``, ``organization``). The row's ``jti`` is the handle's SHA-256 digest, so a
copy of the table (or an AuditEvent naming the ``jti``) cannot be presented as a token.

Rows written before the upgrade (JWT access tokens, at most one access-token lifetime old) keep their
columns empty: those tokens are no longer accepted, and their clients ask for a new one (refresh tokens,
kept as digests of random secrets already, are unchanged).

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision: str | None = "0014"
branch_labels: str | None = None
depends_on: str | None = None

COLUMNS = ("audience", "patient", "encounter", "fhir_user", "organization")


def upgrade() -> None:
    with op.batch_alter_table("smart_access_token") as batch:
        batch.add_column(sa.Column("audience", sa.Text(), nullable=True))
        for name in COLUMNS[1:]:
            batch.add_column(sa.Column(name, sa.String(200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("smart_access_token") as batch:
        for name in reversed(COLUMNS):
            batch.drop_column(name)
