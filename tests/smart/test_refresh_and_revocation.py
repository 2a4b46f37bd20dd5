"""Refresh tokens (rotation, narrowing allowed, widening refused, replay revokes the family), revocation
(RFC 7009) and introspection (RFC 7662 with SMART's fields)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from adapters.smart.verify import AccessTokenVerifier
from gateway.auth.grant import InvalidToken
from gateway.settings import Settings
from tests.calaim.support import add_member
from tests.smart.support import (
    FHIR_BASE,
    HTTPS_BASE,
    TOKEN_URL,
    exchange_code,
    register_app,
    register_staff,
    run_code_flow,
)

SCOPE = "launch/patient patient/*.rs user/Patient.rs offline_access"


@pytest.fixture
def token(http: TestClient, engine: Engine, client: TestClient) -> dict[str, Any]:
    add_member(client, "1")
    register_app(engine, "app", secret="app-secret-1")
    register_app(engine, "other", secret="other-secret-1")
    register_staff(engine, "nurse")
    params, verifier = run_code_flow(http, client_id="app", username="nurse", scope=SCOPE, patient="m-1")
    body: dict[str, Any] = exchange_code(http, params["code"], verifier, "app", secret="app-secret-1").json()
    return body


def _refresh(
    http: TestClient, refresh_token: str, scope: str | None = None, auth: tuple[str, str] = ("app", "app-secret-1")
) -> Any:
    data = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    if scope is not None:
        data["scope"] = scope
    return http.post(TOKEN_URL, data=data, auth=auth)


def test_refresh_rotates_and_keeps_the_launch_context(http: TestClient, token: dict[str, Any]) -> None:
    first = _refresh(http, token["refresh_token"])
    assert first.status_code == 200, first.text
    assert first.headers["cache-control"] == "no-store"
    body = first.json()
    assert body["refresh_token"] != token["refresh_token"]
    assert body["patient"] == "m-1" and body["scope"] == token["scope"]
    assert _refresh(http, body["refresh_token"]).status_code == 200


def test_refresh_token_replay_revokes_the_family(
    http: TestClient, engine: Engine, settings: Settings, token: dict[str, Any]
) -> None:
    rotated = _refresh(http, token["refresh_token"]).json()
    replay = _refresh(http, token["refresh_token"])
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    assert _refresh(http, rotated["refresh_token"]).json()["error"] == "invalid_grant"
    with pytest.raises(InvalidToken, match="revoked"):
        AccessTokenVerifier(engine, settings).verify(rotated["access_token"], audience=FHIR_BASE)


def test_refresh_may_narrow_the_scope(
    http: TestClient, engine: Engine, settings: Settings, token: dict[str, Any]
) -> None:
    narrowed = _refresh(http, token["refresh_token"], scope="patient/Observation.rs offline_access")
    assert narrowed.status_code == 200, narrowed.text
    assert narrowed.json()["scope"] == "patient/Observation.rs offline_access"
    grant = AccessTokenVerifier(engine, settings).verify(narrowed.json()["access_token"], audience=FHIR_BASE)
    assert grant.scope == "patient/Observation.rs offline_access"
    again = _refresh(http, narrowed.json()["refresh_token"])
    assert again.json()["scope"] == token["scope"], "the new refresh token keeps the original grant"


@pytest.mark.parametrize("wider", ["patient/*.cruds", "user/*.rs", "patient/*.rs system/*.rs", "openid"])
def test_refresh_with_widened_scope_is_refused(http: TestClient, token: dict[str, Any], wider: str) -> None:
    response = _refresh(http, token["refresh_token"], scope=wider)
    assert response.status_code == 400 and response.json()["error"] == "invalid_scope"
    assert _refresh(http, token["refresh_token"]).status_code == 200, "a refused refresh does not spend the token"


def test_refresh_by_another_client_is_refused(http: TestClient, token: dict[str, Any]) -> None:
    response = _refresh(http, token["refresh_token"], auth=("other", "other-secret-1"))
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"


def test_revoke_access_token_takes_effect_at_once(
    http: TestClient, engine: Engine, settings: Settings, token: dict[str, Any]
) -> None:
    verifier = AccessTokenVerifier(engine, settings.model_copy(update={"smart_revocation_recheck_s": 60}))
    assert verifier.verify(token["access_token"], audience=FHIR_BASE).subject == "nurse"
    revoked = http.post("/auth/revoke", data={"token": token["access_token"]}, auth=("app", "app-secret-1"))
    assert revoked.status_code == 200
    with pytest.raises(InvalidToken, match="revoked"):
        verifier.verify(token["access_token"], audience=FHIR_BASE)
    assert _refresh(http, token["refresh_token"]).status_code == 200, "revoking an access token keeps the refresh"


def test_revoke_refresh_token_revokes_the_grant(
    http: TestClient, engine: Engine, settings: Settings, token: dict[str, Any]
) -> None:
    revoked = http.post(
        "/auth/revoke",
        data={"token": token["refresh_token"], "token_type_hint": "refresh_token"},
        auth=("app", "app-secret-1"),
    )
    assert revoked.status_code == 200
    assert _refresh(http, token["refresh_token"]).json()["error"] == "invalid_grant"
    with pytest.raises(InvalidToken):
        AccessTokenVerifier(engine, settings).verify(token["access_token"], audience=FHIR_BASE)


def test_revoke_needs_the_owning_client(
    http: TestClient, engine: Engine, settings: Settings, token: dict[str, Any]
) -> None:
    refused = http.post("/auth/revoke", data={"token": token["access_token"]}, auth=("other", "other-secret-1"))
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"
    assert AccessTokenVerifier(engine, settings).verify(token["access_token"], audience=FHIR_BASE)
    assert http.post("/auth/revoke", data={"token": token["access_token"]}).status_code == 401


def test_introspection(http: TestClient, token: dict[str, Any]) -> None:
    response = http.post("/auth/introspect", data={"token": token["access_token"]}, auth=("app", "app-secret-1"))
    assert response.status_code == 200
    body = response.json()
    assert body["active"] is True
    assert body["scope"] == token["scope"] and body["client_id"] == "app"
    assert body["patient"] == "m-1" and body["organization"] == "hn-altamed" and body["sub"] == "nurse"
    assert body["iss"] == FHIR_BASE and body["aud"] == FHIR_BASE and body["exp"] > body["iat"]
    refresh = http.post("/auth/introspect", data={"token": token["refresh_token"]}, auth=("app", "app-secret-1")).json()
    assert refresh["active"] is True and refresh["client_id"] == "app"
    http.post("/auth/revoke", data={"token": token["access_token"]}, auth=("app", "app-secret-1"))
    after = http.post("/auth/introspect", data={"token": token["access_token"]}, auth=("app", "app-secret-1"))
    assert after.json() == {"active": False}
    junk = http.post("/auth/introspect", data={"token": "not-a-token"}, auth=("app", "app-secret-1"))
    assert junk.json() == {"active": False}


def test_introspection_of_another_clients_token_is_inactive(http: TestClient, token: dict[str, Any]) -> None:
    response = http.post("/auth/introspect", data={"token": token["access_token"]}, auth=("other", "other-secret-1"))
    assert response.json() == {"active": False}
    assert http.post(f"{HTTPS_BASE}/auth/introspect", data={"token": token["access_token"]}).status_code == 401
