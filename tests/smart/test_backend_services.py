"""SMART Backend Services (https://build.fhir.org/ig/HL7/smart-app-launch/backend-services.html):
client_credentials with a signed assertion (RS384 or ES384, keys from a registered JWKS or a JWKS URL
served by a real local HTTP server), and the refusals: replayed jti, expired assertion, ``exp`` more than
five minutes ahead, wrong ``aud``, ``iss`` not the client, an unexpected algorithm, an unknown key."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from fastapi.testclient import TestClient
from joserfc.jwk import ECKey, RSAKey
from sqlalchemy import Engine

from adapters.smart.registry import add_client
from adapters.smart.verify import AccessTokenVerifier
from gateway.settings import Settings
from tests.smart.support import FHIR_BASE, TOKEN_URL, backend_form, es384_key, public_jwks, register_backend, rs384_key


@pytest.fixture
def key() -> ECKey:
    return es384_key()


@pytest.fixture
def backend(engine: Engine, key: ECKey) -> str:
    return register_backend(
        engine, "hn-system", key, organization="Organization/hn-noble", scope="system/*.rs system/Task.cruds"
    )


def _error(response: Any) -> str:
    assert response.status_code in (400, 401), (response.status_code, response.text)
    error: str = response.json()["error"]
    return error


def test_es384_client_credentials(
    http: TestClient, engine: Engine, settings: Settings, key: ECKey, backend: str
) -> None:
    response = http.post(TOKEN_URL, data=backend_form(backend, key, "system/Patient.rs system/Task.cu"))
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store" and response.headers["pragma"] == "no-cache"
    body = response.json()
    assert body["token_type"] == "Bearer" and 0 < body["expires_in"] <= 300
    assert body["scope"] == "system/Patient.rs system/Task.cu"
    assert "refresh_token" not in body and "id_token" not in body
    grant = AccessTokenVerifier(engine, settings).verify(body["access_token"], audience=FHIR_BASE)
    assert (grant.subject, grant.client_id, grant.organization) == ("hn-system", "hn-system", "hn-noble")
    assert grant.patient is None and grant.expires_at <= time.time() + 300


def test_rs384_client_credentials(http: TestClient, engine: Engine) -> None:
    key = rs384_key()
    register_backend(engine, "county", key, organization="county-hca-bhs")
    response = http.post(TOKEN_URL, data=backend_form("county", key, "system/*.rs"))
    assert response.status_code == 200, response.text


def test_only_registered_system_scopes_are_granted(http: TestClient, key: ECKey, backend: str) -> None:
    response = http.post(TOKEN_URL, data=backend_form(backend, key, "system/*.rs system/Patient.cruds patient/*.rs"))
    assert response.json()["scope"] == "system/*.rs"
    assert _error(http.post(TOKEN_URL, data=backend_form(backend, key, "system/Patient.c"))) == "invalid_scope"


def test_replayed_jti_is_refused(http: TestClient, key: ECKey, backend: str) -> None:
    form = backend_form(backend, key, "system/*.rs", jti="once-only")
    assert http.post(TOKEN_URL, data=form).status_code == 200
    assert _error(http.post(TOKEN_URL, data=form)) == "invalid_client"
    again = backend_form(backend, key, "system/*.rs", jti="once-only")  # a new signature, the same jti
    assert _error(http.post(TOKEN_URL, data=again)) == "invalid_client"


def test_expired_assertion_is_refused(http: TestClient, key: ECKey, backend: str) -> None:
    assert _error(http.post(TOKEN_URL, data=backend_form(backend, key, "system/*.rs", exp_in=-60))) == "invalid_client"


def test_assertion_expiring_more_than_five_minutes_ahead_is_refused(http: TestClient, key: ECKey, backend: str) -> None:
    assert _error(http.post(TOKEN_URL, data=backend_form(backend, key, "system/*.rs", exp_in=600))) == "invalid_client"
    assert http.post(TOKEN_URL, data=backend_form(backend, key, "system/*.rs", exp_in=295)).status_code == 200


def test_wrong_audience_is_refused(http: TestClient, key: ECKey, backend: str) -> None:
    form = backend_form(backend, key, "system/*.rs", aud="https://testserver/auth/authorize")
    assert _error(http.post(TOKEN_URL, data=form)) == "invalid_client"


def test_iss_must_be_the_client(http: TestClient, key: ECKey, backend: str) -> None:
    form = backend_form(backend, key, "system/*.rs", iss="someone-else")
    assert _error(http.post(TOKEN_URL, data=form)) == "invalid_client"


def test_unexpected_algorithm_is_refused(http: TestClient, engine: Engine) -> None:
    key = rs384_key()
    register_backend(engine, "rs256-client", key, organization="hn-noble")
    form = backend_form("rs256-client", key, "system/*.rs", alg="RS256")
    assert _error(http.post(TOKEN_URL, data=form)) == "invalid_client"


def test_assertion_signed_by_another_key_is_refused(http: TestClient, backend: str) -> None:
    assert _error(http.post(TOKEN_URL, data=backend_form(backend, es384_key(), "system/*.rs"))) == "invalid_client"


def test_symmetric_and_public_clients_cannot_use_client_credentials(http: TestClient, engine: Engine) -> None:
    add_client(engine, client_id="sym", scope="system/*.rs", secret="sym-secret-1")
    response = http.post(
        TOKEN_URL, data={"grant_type": "client_credentials", "scope": "system/*.rs"}, auth=("sym", "sym-secret-1")
    )
    assert _error(response) in ("invalid_client", "unauthorized_client")


@pytest.fixture
def jwks_server(key: ECKey) -> Iterator[tuple[str, dict[str, Any]]]:
    """A real HTTP server on 127.0.0.1 serving a JWKS (which the test may change) and counting fetches."""
    state: dict[str, Any] = {"jwks": public_jwks(key), "fetches": 0}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state["fetches"] += 1
            body = json.dumps(state["jwks"]).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/jwks.json", state
    finally:
        server.shutdown()
        server.server_close()


def test_keys_from_a_jwks_url_are_fetched_cached_and_refreshed_on_rotation(
    http: TestClient, engine: Engine, key: ECKey, jwks_server: tuple[str, dict[str, Any]]
) -> None:
    url, state = jwks_server
    add_client(engine, client_id="by-url", scope="system/*.rs", jwks_url=url, organization="hn-noble")
    assert http.post(TOKEN_URL, data=backend_form("by-url", key, "system/*.rs")).status_code == 200
    assert http.post(TOKEN_URL, data=backend_form("by-url", key, "system/*.rs")).status_code == 200
    assert state["fetches"] == 1, "the JWKS is cached"
    rotated = es384_key()
    state["jwks"] = public_jwks(rotated)
    assert http.post(TOKEN_URL, data=backend_form("by-url", rotated, "system/*.rs")).status_code == 200
    assert state["fetches"] == 2, "an unknown kid fetches the set again"


def test_unreachable_jwks_url_is_invalid_client(http: TestClient, engine: Engine, key: RSAKey | ECKey) -> None:
    add_client(engine, client_id="gone", scope="system/*.rs", jwks_url="http://127.0.0.1:9/jwks.json")
    assert _error(http.post(TOKEN_URL, data=backend_form("gone", key, "system/*.rs"))) == "invalid_client"
