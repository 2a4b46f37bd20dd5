"""``AccessTokenVerifier``: the Grant of a valid token (an opaque handle whose grant is its stored row);
InvalidToken for unknown, expired, revoked tokens, tokens of another FHIR base, JWTs (the format before
session 9, even validly signed with the server's key), the stored digest presented as a token, and malformed
input; revocation made elsewhere is seen within the recheck bound; the cache never outlives ``exp``."""

from __future__ import annotations

import time
from typing import Any

import pytest
from fastapi.testclient import TestClient
from joserfc import jwt
from sqlalchemy import Engine, select, update

from adapters.smart.handles import digest, is_handle, new_handle
from adapters.smart.keys import load_signing_key
from adapters.smart.verify import AccessTokenVerifier
from gateway.auth.grant import InvalidToken
from gateway.settings import Settings
from gateway.store.database import write_transaction
from gateway.store.schema import smart_access_token
from tests.smart.support import FHIR_BASE, backend_token


@pytest.fixture
def token(http: TestClient, engine: Engine) -> dict[str, Any]:
    return backend_token(http, engine, organization="hn-noble", scope="system/*.rs")


def _set_row(engine: Engine, token: str, **values: Any) -> None:
    """Change the stored row of ``token`` (as another process or an operator would)."""
    with write_transaction(engine) as conn:
        conn.execute(update(smart_access_token).where(smart_access_token.c.jti == digest(token)).values(**values))


def test_valid_token_and_cache(engine: Engine, settings: Settings, token: dict[str, Any]) -> None:
    verifier = AccessTokenVerifier(engine, settings)
    first = verifier.verify(token["access_token"], audience=FHIR_BASE)
    assert first.client_id.startswith("backend-hn-noble") and first.scope == "system/*.rs"
    assert verifier.verify(token["access_token"], audience=FHIR_BASE) is first, "the second call is a cache hit"


def test_wrong_audience(engine: Engine, settings: Settings, token: dict[str, Any]) -> None:
    verifier = AccessTokenVerifier(engine, settings)
    with pytest.raises(InvalidToken, match=r"iss|aud"):
        verifier.verify(token["access_token"], audience="https://other.example.org/fhir")
    verifier.verify(token["access_token"], audience=FHIR_BASE)
    with pytest.raises(InvalidToken, match="aud"):
        verifier.verify(token["access_token"], audience="https://other.example.org/fhir")  # cached, still refused


def test_a_row_for_another_base_is_refused(engine: Engine, settings: Settings, token: dict[str, Any]) -> None:
    _set_row(engine, token["access_token"], audience="https://other.example.org/fhir")
    with pytest.raises(InvalidToken, match="aud"):
        AccessTokenVerifier(engine, settings).verify(token["access_token"], audience=FHIR_BASE)
    _set_row(engine, token["access_token"], audience=None)  # a row written before migration 0015
    with pytest.raises(InvalidToken, match="aud"):
        AccessTokenVerifier(engine, settings).verify(token["access_token"], audience=FHIR_BASE)


def test_expired_token(engine: Engine, settings: Settings, token: dict[str, Any]) -> None:
    _set_row(engine, token["access_token"], expires_at=int(time.time()) - 1)
    with pytest.raises(InvalidToken, match="expired"):
        AccessTokenVerifier(engine, settings).verify(token["access_token"], audience=FHIR_BASE)


def test_cached_token_expires(engine: Engine, settings: Settings, token: dict[str, Any]) -> None:
    _set_row(engine, token["access_token"], expires_at=int(time.time()) + 2)
    verifier = AccessTokenVerifier(engine, settings)
    verifier.verify(token["access_token"], audience=FHIR_BASE)
    deadline = time.time() + 5
    while time.time() < deadline:
        try:
            verifier.verify(token["access_token"], audience=FHIR_BASE)
        except InvalidToken as error:
            assert "expired" in error.description
            return
        time.sleep(0.1)
    raise AssertionError("the cached token never expired")


def test_the_token_is_a_random_handle_never_stored(engine: Engine, token: dict[str, Any]) -> None:
    """256 random bits, URL-safe (RFC 6750 b64token); the store keeps only its SHA-256 digest."""
    access = token["access_token"]
    assert is_handle(access) and len(access) == 43 and "." not in access
    assert len({new_handle() for _ in range(1000)}) == 1000
    with engine.connect() as conn:
        rows = [tuple(row) for row in conn.execute(select(smart_access_token))]
    assert rows and not any(access in str(value) for row in rows for value in row)
    assert any(row[0] == digest(access) for row in rows)


def test_the_stored_digest_is_not_a_token(engine: Engine, settings: Settings, token: dict[str, Any]) -> None:
    """A copy of the table (or an AuditEvent's ``jti``) cannot be presented as the token."""
    verifier = AccessTokenVerifier(engine, settings)
    jti = verifier.verify(token["access_token"], audience=FHIR_BASE).token_id
    assert jti == digest(token["access_token"])
    for stolen in (jti, jti[:43], digest(jti)[:43]):
        with pytest.raises(InvalidToken):
            verifier.verify(stolen, audience=FHIR_BASE)


def test_a_jwt_is_refused_even_signed_by_the_server(engine: Engine, settings: Settings, token: dict[str, Any]) -> None:
    """The format before session 9: a JWT with the token's own claims, signed with the server's key (as a
    token issued before the upgrade would be), is not an access token any more."""
    verifier = AccessTokenVerifier(engine, settings)
    grant = verifier.verify(token["access_token"], audience=FHIR_BASE)
    key = load_signing_key(engine, settings)
    now = int(time.time())
    claims: dict[str, Any] = {"iss": FHIR_BASE, "aud": FHIR_BASE, "sub": grant.subject, "client_id": grant.client_id}
    claims |= {"scope": grant.scope, "jti": grant.token_id, "iat": now, "exp": now + 300}
    signed = jwt.encode({"alg": key.alg, "kid": key.kid, "typ": "at+jwt"}, claims, key.key, algorithms=[key.alg])
    with pytest.raises(InvalidToken, match="malformed"):
        verifier.verify(signed, audience=FHIR_BASE)


def test_unknown_handle(engine: Engine, settings: Settings) -> None:
    with pytest.raises(InvalidToken, match="unknown"):
        AccessTokenVerifier(engine, settings).verify(new_handle(), audience=FHIR_BASE)


@pytest.mark.parametrize("junk", ["", "abc", "a.b", "a.b.c", "..", "x" * 5000, "e30.e30.e30", "x" * 42 + "=", "x" * 44])
def test_malformed(engine: Engine, settings: Settings, junk: str) -> None:
    with pytest.raises(InvalidToken):
        AccessTokenVerifier(engine, settings).verify(junk, audience=FHIR_BASE)


def test_revocation_by_another_process_is_seen_within_the_recheck_bound(
    engine: Engine, settings: Settings, token: dict[str, Any]
) -> None:
    recheck = 0.5
    verifier = AccessTokenVerifier(engine, settings.model_copy(update={"smart_revocation_recheck_s": recheck}))
    grant = verifier.verify(token["access_token"], audience=FHIR_BASE)
    # Another process revokes: only the shared table changes (no in-process notification).
    with write_transaction(engine) as conn:
        conn.execute(update(smart_access_token).where(smart_access_token.c.jti == grant.token_id).values(revoked=True))
    revoked_at = time.monotonic()
    while True:
        try:
            verifier.verify(token["access_token"], audience=FHIR_BASE)
        except InvalidToken as error:
            assert "revoked" in error.description
            break
        assert time.monotonic() - revoked_at <= recheck + 0.2, "the revocation was not seen within the bound"
        time.sleep(0.02)
