"""Migration 0015 (gateway/store/migrations/versions/0015_compact_access_tokens.py) gives
``smart_access_token`` the columns a compact token's grant needs; rows of JWT-era tokens keep them empty,
stay introspectable as unknown and are refused by the verifier; downgrade removes the columns again, on
both dialects."""

from __future__ import annotations

import pytest
from alembic import command
from sqlalchemy import create_engine, inspect, text

from adapters.smart.handles import digest, new_handle
from adapters.smart.verify import AccessTokenVerifier
from gateway.auth.grant import InvalidToken
from gateway.settings import Settings
from gateway.store.migrate import _config

COLUMNS = {"audience", "patient", "encounter", "fhir_user", "organization"}


def test_upgrade_keeps_jwt_era_rows_refused_and_downgrade_drops_the_columns(empty_database_url: str) -> None:
    engine = create_engine(empty_database_url)
    handle = new_handle()  # a JWT-era jti is random hex, never a handle's digest; the worst case is tested
    try:
        with engine.begin() as conn:
            command.upgrade(_config(conn), "0014")
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO smart_access_token (jti, grant_id, client_id, subject, scope, issued_at, "
                    "expires_at, revoked) VALUES (:jti, NULL, 'app', 'nurse', 'user/*.rs', 1, 4000000000, :no)"
                ),
                {"jti": digest(handle), "no": False},
            )
        with engine.begin() as conn:
            command.upgrade(_config(conn), "0015")
        assert {c["name"] for c in inspect(engine).get_columns("smart_access_token")} >= COLUMNS
        verifier = AccessTokenVerifier(engine, Settings(database_url=empty_database_url))
        with pytest.raises(InvalidToken, match="aud"):
            verifier.verify(handle, audience="https://testserver/fhir")
        with engine.begin() as conn:
            command.downgrade(_config(conn), "0014")
        assert not COLUMNS & {c["name"] for c in inspect(engine).get_columns("smart_access_token")}
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM smart_access_token")).scalar_one() == 1
    finally:
        engine.dispose()
