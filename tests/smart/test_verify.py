"""``AccessTokenVerifier``: the Grant of a valid token; InvalidToken for expired, tampered, alg none,
HMAC-with-the-public-key, foreign key, wrong iss/aud, unknown or revoked tokens and malformed input;
revocation made elsewhere is seen within the recheck bound; the cache never outlives ``exp``."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import pytest
from fastapi.testclient import TestClient
from joserfc import jwt
from joserfc.jwk import RSAKey
from sqlalchemy import Engine, update

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


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _parts(token: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    header, payload, signature = token.split(".")
    return _decode(header), _decode(payload), signature


def _decode(part: str) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return decoded


def _resign(engine: Engine, settings: Settings, token: str, **changes: Any) -> str:
    """The token's claims changed and signed again with the server's own key (a valid signature)."""
    header, claims, _ = _parts(token)
    key = load_signing_key(engine, settings)
    return jwt.encode(header, {**claims, **changes}, key.key, algorithms=[key.alg])


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


def test_wrong_aud_claim_with_a_valid_signature(engine: Engine, settings: Settings, token: dict[str, Any]) -> None:
    forged = _resign(engine, settings, token["access_token"], aud="https://other.example.org/fhir")
    with pytest.raises(InvalidToken, match="aud"):
        AccessTokenVerifier(engine, settings).verify(forged, audience=FHIR_BASE)
    wrong_iss = _resign(engine, settings, token["access_token"], iss="https://other.example.org/fhir")
    with pytest.raises(InvalidToken, match="iss"):
        AccessTokenVerifier(engine, settings).verify(wrong_iss, audience=FHIR_BASE)


def test_expired_token(engine: Engine, settings: Settings, token: dict[str, Any]) -> None:
    expired = _resign(engine, settings, token["access_token"], exp=int(time.time()) - 1)
    with pytest.raises(InvalidToken, match="expired"):
        AccessTokenVerifier(engine, settings).verify(expired, audience=FHIR_BASE)


def test_cached_token_expires(engine: Engine, settings: Settings, token: dict[str, Any]) -> None:
    soon = _resign(engine, settings, token["access_token"], exp=int(time.time()) + 2)
    verifier = AccessTokenVerifier(engine, settings)
    verifier.verify(soon, audience=FHIR_BASE)
    deadline = time.time() + 5
    while time.time() < deadline:
        try:
            verifier.verify(soon, audience=FHIR_BASE)
        except InvalidToken as error:
            assert "expired" in error.description
            return
        time.sleep(0.1)
    raise AssertionError("the cached token never expired")


def test_tampered_token(engine: Engine, settings: Settings, token: dict[str, Any]) -> None:
    header, claims, signature = _parts(token["access_token"])
    tampered = f"{_b64(header)}.{_b64({**claims, 'scope': 'system/*.cruds'})}.{signature}"
    with pytest.raises(InvalidToken, match="signature"):
        AccessTokenVerifier(engine, settings).verify(tampered, audience=FHIR_BASE)


def test_alg_none(engine: Engine, settings: Settings, token: dict[str, Any]) -> None:
    _, claims, _ = _parts(token["access_token"])
    for unsigned in (
        f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}.",
        f"{_b64({'alg': 'none'})}.{_b64(claims)}.x",
    ):
        with pytest.raises(InvalidToken):
            AccessTokenVerifier(engine, settings).verify(unsigned, audience=FHIR_BASE)


def test_hmac_with_the_public_key(engine: Engine, settings: Settings, token: dict[str, Any]) -> None:
    header, claims, _ = _parts(token["access_token"])
    public_pem = load_signing_key(engine, settings).key.as_pem(private=False)
    signing_input = f"{_b64({**header, 'alg': 'HS256'})}.{_b64(claims)}"
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    forged = f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"
    with pytest.raises(InvalidToken, match="RS256"):
        AccessTokenVerifier(engine, settings).verify(forged, audience=FHIR_BASE)


def test_signed_by_another_key(engine: Engine, settings: Settings, token: dict[str, Any]) -> None:
    header, claims, _ = _parts(token["access_token"])
    stranger = RSAKey.generate_key(2048, private=True)
    forged = jwt.encode(header, claims, stranger, algorithms=["RS256"])
    with pytest.raises(InvalidToken, match="signature"):
        AccessTokenVerifier(engine, settings).verify(forged, audience=FHIR_BASE)


def test_unknown_jti_with_a_valid_signature(engine: Engine, settings: Settings, token: dict[str, Any]) -> None:
    minted = _resign(engine, settings, token["access_token"], jti="never-issued", iat=int(time.time()) - 60)
    with pytest.raises(InvalidToken, match="revoked"):
        AccessTokenVerifier(engine, settings).verify(minted, audience=FHIR_BASE)


@pytest.mark.parametrize("junk", ["", "abc", "a.b", "a.b.c", "..", "x" * 5000, "e30.e30.e30"])
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
