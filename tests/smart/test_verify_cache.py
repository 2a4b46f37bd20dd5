"""The verifier's caches answer only for the very same token or ``Authorization`` header
(adapters/smart/verify.py): a token differing from a cached one in one character is looked up (and refused:
no such handle), revocation still evicts, and a ``Grant`` hashes like its fields (the guard's ``Access``
cache, gateway/fhir/guard.py)."""

from __future__ import annotations

import copy
import os
import pickle
import subprocess
import sys
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from adapters.smart.verify import AccessTokenVerifier, notify_revoked
from gateway.auth.grant import Grant, InvalidToken
from gateway.fhir.context import Context
from gateway.fhir.guard import access_for
from gateway.settings import Settings
from tests.smart.support import FHIR_BASE, backend_token


@pytest.fixture
def token(http: TestClient, engine: Engine) -> dict[str, Any]:
    return backend_token(http, engine, organization="hn-noble", scope="system/*.rs")


def _one_character_off(token: str) -> str:
    """``token`` with its last character changed (same length, same form: a guess next to a real one)."""
    return token[:-1] + ("A" if token[-1] != "A" else "B")


def test_a_token_next_to_a_cached_one_is_looked_up_and_refused(
    engine: Engine, settings: Settings, token: dict[str, Any]
) -> None:
    genuine = token["access_token"]
    verifier = AccessTokenVerifier(engine, settings)
    grant = verifier.verify(genuine, audience=FHIR_BASE)
    guess = _one_character_off(genuine)
    with pytest.raises(InvalidToken, match="unknown"):
        verifier.verify(guess, audience=FHIR_BASE)
    assert verifier.verify(genuine, audience=FHIR_BASE) is grant, "the genuine token is still cached"
    with pytest.raises(InvalidToken, match="unknown"):
        verifier.verify(guess, audience=FHIR_BASE)


def test_a_token_longer_or_shorter_by_its_start_is_not_the_cached_one(
    engine: Engine, settings: Settings, token: dict[str, Any]
) -> None:
    genuine = token["access_token"]
    verifier = AccessTokenVerifier(engine, settings)
    verifier.verify(genuine, audience=FHIR_BASE)
    for variant in ("x" + genuine, genuine[1:], genuine[:-1], genuine[-40:]):
        with pytest.raises(InvalidToken):
            verifier.verify(variant, audience=FHIR_BASE)


def test_revocation_in_this_process_evicts_the_cached_token(
    engine: Engine, settings: Settings, token: dict[str, Any]
) -> None:
    verifier = AccessTokenVerifier(engine, settings)
    grant = verifier.verify(token["access_token"], audience=FHIR_BASE)
    notify_revoked([grant.token_id])
    with pytest.raises(InvalidToken, match="revoked"):
        verifier.verify(token["access_token"], audience=FHIR_BASE)


def test_equal_grants_hash_alike_and_share_one_access(ctx: Context) -> None:
    fields: dict[str, Any] = {
        "subject": "nurse",
        "client_id": "app",
        "scope": "user/*.rs",
        "token_id": "jti-1",
        "expires_at": 2_000_000_000,
        "organization": "hn-noble",
    }
    first, second = Grant(**fields), Grant(**fields)
    assert first == second and hash(first) == hash(second) and first is not second
    assert Grant(**{**fields, "scope": "user/*.cruds"}) != first
    assert hash(Grant(**{**fields, "patient": "p-1"})) != hash(first)
    assert access_for(ctx, first) is access_for(ctx, second)
    assert access_for(ctx, Grant(**{**fields, "organization": "hn-ccn"})) is not access_for(ctx, first)


def test_a_pickled_grant_hashes_in_the_process_that_loads_it() -> None:
    grant = Grant(subject="s", client_id="c", scope="user/*.rs", token_id="j", expires_at=1, patient="p-1")
    assert pickle.loads(pickle.dumps(grant)) == grant and copy.copy(grant) == grant
    program = (
        "import pickle, sys; from gateway.auth.grant import Grant; g = pickle.loads(sys.stdin.buffer.read()); "
        "print(hash(g) == hash(Grant(**{f: getattr(g, f) for f in ('subject', 'client_id', 'scope', 'token_id', "
        "'expires_at', 'patient', 'fhir_user', 'organization', 'encounter')})))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    done = subprocess.run(
        [sys.executable, "-c", program], input=pickle.dumps(grant), capture_output=True, env=env, check=True
    )
    assert done.stdout.strip() == b"True"


def test_the_header_cache_answers_only_for_the_same_header(
    engine: Engine, settings: Settings, token: dict[str, Any]
) -> None:
    """``bearer`` (the front door's call) caches by the raw ``Authorization`` value: the scheme in any
    case, ``None`` without a bearer token, a header one character off looked up (and refused)."""
    genuine = token["access_token"]
    verifier = AccessTokenVerifier(engine, settings)
    grant = verifier.bearer(f"Bearer {genuine}", FHIR_BASE)
    assert grant is not None and grant == verifier.verify(genuine, audience=FHIR_BASE)
    assert verifier.bearer(f"Bearer {genuine}", FHIR_BASE) is grant, "the second call is a cache hit"
    assert verifier.bearer(f"bearer  {genuine} ", FHIR_BASE) == grant
    for no_token in ("", "Bearer", "Bearer  ", f"Basic {genuine}", genuine):
        assert verifier.bearer(no_token, FHIR_BASE) is None, no_token
    with pytest.raises(InvalidToken, match="unknown"):
        verifier.bearer(f"Bearer {_one_character_off(genuine)}", FHIR_BASE)
    with pytest.raises(InvalidToken, match="aud"):
        verifier.bearer(f"Bearer {genuine}", "https://other.example.org/fhir")
    assert verifier.bearer(f"Bearer {genuine}", FHIR_BASE) is grant


def test_revocation_in_this_process_evicts_the_cached_header(
    engine: Engine, settings: Settings, token: dict[str, Any]
) -> None:
    verifier = AccessTokenVerifier(engine, settings)
    header = f"Bearer {token['access_token']}"
    grant = verifier.bearer(header, FHIR_BASE)
    assert grant is not None and verifier.bearer(header, FHIR_BASE) is grant
    notify_revoked([grant.token_id])
    with pytest.raises(InvalidToken, match="revoked"):
        verifier.bearer(header, FHIR_BASE)


def test_an_expired_header_is_refused_although_cached(
    engine: Engine, settings: Settings, token: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    verifier = AccessTokenVerifier(engine, settings)
    header = f"Bearer {token['access_token']}"
    grant = verifier.bearer(header, FHIR_BASE)
    assert grant is not None
    later = grant.expires_at + 1.0
    monkeypatch.setattr("adapters.smart.verify.time.time", lambda: later)
    with pytest.raises(InvalidToken, match="expired"):
        verifier.bearer(header, FHIR_BASE)
