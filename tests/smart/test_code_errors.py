"""Refusals of the authorization-code flow, each with the right error (SMART App Launch conformance,
RFC 6749 section 4.1.2.1 and 5.2, RFC 7636): PKCE missing, ``plain`` or wrong, code reused (and the
tokens issued from it revoked), redirect_uri not registered or changed, wrong ``aud``, unknown client."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from adapters.smart.verify import AccessTokenVerifier
from gateway.auth.grant import InvalidToken
from gateway.settings import Settings
from tests.smart.support import (
    FHIR_BASE,
    TOKEN_URL,
    authorize_url,
    callback_params,
    exchange_code,
    pkce,
    register_app,
    register_staff,
    run_code_flow,
)

SCOPE = "user/*.rs offline_access"


@pytest.fixture
def app_and_user(engine: Engine) -> None:
    register_app(engine, "app")
    register_app(engine, "other")
    register_staff(engine, "nurse")


def _code(http: TestClient) -> tuple[str, str]:
    params, verifier = run_code_flow(http, client_id="app", username="nurse", scope=SCOPE)
    return params["code"], verifier


def test_wrong_pkce_verifier(http: TestClient, app_and_user: None) -> None:
    code, _ = _code(http)
    response = exchange_code(http, code, pkce()[0], "app")
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"


def test_missing_pkce_verifier(http: TestClient, app_and_user: None) -> None:
    code, _ = _code(http)
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": "https://app.example.org/callback"}
    response = http.post(TOKEN_URL, data={**data, "client_id": "app"})
    assert response.status_code == 400 and response.json()["error"] == "invalid_request"


def test_missing_code_challenge_is_refused(http: TestClient, app_and_user: None) -> None:
    url = authorize_url("app", SCOPE, "x" * 43).replace("code_challenge=" + "x" * 43, "")
    url = url.replace("&code_challenge_method=S256", "")
    params = callback_params(http.get(url))
    assert params["error"] == "invalid_request" and params["state"] == "st-1"


def test_plain_code_challenge_is_refused(http: TestClient, app_and_user: None) -> None:
    verifier, _ = pkce()
    url = authorize_url("app", SCOPE, verifier).replace("code_challenge_method=S256", "code_challenge_method=plain")
    params = callback_params(http.get(url))
    assert params["error"] == "invalid_request"
    assert "S256" in params["error_description"]


def test_reused_code_is_refused_and_revokes_its_tokens(
    http: TestClient, engine: Engine, settings: Settings, app_and_user: None
) -> None:
    code, verifier = _code(http)
    first = exchange_code(http, code, verifier, "app")
    assert first.status_code == 200
    verifier_ = AccessTokenVerifier(engine, settings)
    access = first.json()["access_token"]
    assert verifier_.verify(access, audience=FHIR_BASE).client_id == "app"
    second = exchange_code(http, code, verifier, "app")
    assert second.status_code == 400 and second.json()["error"] == "invalid_grant"
    with pytest.raises(InvalidToken):
        verifier_.verify(access, audience=FHIR_BASE)
    refreshed = http.post(
        TOKEN_URL,
        data={"grant_type": "refresh_token", "refresh_token": first.json()["refresh_token"], "client_id": "app"},
    )
    assert refreshed.status_code == 400 and refreshed.json()["error"] == "invalid_grant"


def test_code_of_another_client_is_refused(http: TestClient, app_and_user: None) -> None:
    code, verifier = _code(http)
    response = exchange_code(http, code, verifier, "other")
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"
    assert exchange_code(http, code, verifier, "app").status_code == 200, "a foreign attempt does not spend it"


def test_unregistered_redirect_uri_is_never_redirected_to(http: TestClient, app_and_user: None) -> None:
    _, challenge = pkce()
    response = http.get(authorize_url("app", SCOPE, challenge, redirect_uri="https://evil.example.com/cb"))
    assert response.status_code == 400
    assert "location" not in response.headers
    assert "invalid_request" in response.text


def test_redirect_uri_prefix_is_not_a_match(http: TestClient, app_and_user: None) -> None:
    _, challenge = pkce()
    response = http.get(authorize_url("app", SCOPE, challenge, redirect_uri="https://app.example.org/callback/x"))
    assert response.status_code == 400 and "location" not in response.headers


def test_changed_redirect_uri_at_the_token_endpoint(http: TestClient, app_and_user: None) -> None:
    code, verifier = _code(http)
    data = {"grant_type": "authorization_code", "code": code, "code_verifier": verifier, "client_id": "app"}
    response = http.post(TOKEN_URL, data={**data, "redirect_uri": "https://app.example.org/other"})
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"


@pytest.mark.parametrize("aud", ["https://other.example.org/fhir", "https://testserver/fhir/Patient", ""])
def test_wrong_or_missing_aud(http: TestClient, app_and_user: None, aud: str) -> None:
    _, challenge = pkce()
    params = callback_params(http.get(authorize_url("app", SCOPE, challenge, aud=aud, state="s-9")))
    assert params["error"] == "invalid_request" and params["state"] == "s-9"
    assert "aud" in params["error_description"]


def test_unknown_client_gets_an_error_page(http: TestClient, app_and_user: None) -> None:
    _, challenge = pkce()
    response = http.get(authorize_url("nobody", SCOPE, challenge))
    assert response.status_code == 400 and "invalid_client" in response.text and "location" not in response.headers


def test_scope_the_client_is_not_registered_for(http: TestClient, engine: Engine) -> None:
    register_app(engine, "tiny", scope="openid")
    _, challenge = pkce()
    params = callback_params(http.get(authorize_url("tiny", "system/*.cruds", challenge)))
    assert params["error"] == "invalid_scope"


def test_plain_http_is_refused_off_loopback(settings: Settings, http: TestClient, app_and_user: None) -> None:
    response = http.post("http://testserver/auth/token", data={"grant_type": "client_credentials"})
    assert response.status_code == 400 and response.json()["error"] == "insecure_transport"


def test_confidential_client_must_authenticate(http: TestClient, engine: Engine) -> None:
    register_app(engine, "conf", secret="conf-secret-1", scope=SCOPE)
    register_staff(engine, "nurse")
    params, verifier = run_code_flow(http, client_id="conf", username="nurse", scope=SCOPE)
    unauthenticated = exchange_code(http, params["code"], verifier, "conf")
    assert unauthenticated.json()["error"] == "invalid_client"
    wrong = exchange_code(http, params["code"], verifier, "conf", secret="nope")
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
    post = http.post(
        TOKEN_URL,
        data={
            "grant_type": "authorization_code",
            "code": params["code"],
            "redirect_uri": "https://app.example.org/callback",
            "code_verifier": verifier,
            "client_id": "conf",
            "client_secret": "conf-secret-1",
        },
    )
    assert post.status_code == 200, post.text
