"""End to end against real ``calaim-gateway serve`` processes (uvicorn, real TCP), driven by authlib's
httpx OAuth2 client: code flow with PKCE, FHIR calls with the token through the enforcing front door,
refresh, revocation; and revocation seen by a second process within the recheck bound."""

from __future__ import annotations

import time

import httpx
import pytest
from authlib.integrations.httpx_client import OAuth2Client

from gateway.store.database import make_engine
from tests.smart.support import REDIRECT, callback_params, forms, login, register_app, register_staff, submit
from tests.support.server import gateway_processes

pytestmark = pytest.mark.slow
RECHECK_S = 1.0


@pytest.fixture
def registered(database_url: str) -> str:
    engine = make_engine(database_url)
    try:
        register_app(engine, "app", scope="openid fhirUser user/*.rs offline_access")
        register_staff(engine, "nurse", organization="hn-altamed", fhir_user="Practitioner/p-1")
    finally:
        engine.dispose()
    return database_url


def test_authlib_client_against_two_real_processes(registered: str) -> None:
    env = {"CALAIM_AUTH_ENABLED": "true", "CALAIM_SMART_REVOCATION_RECHECK_S": str(RECHECK_S)}
    with gateway_processes(registered, 2, env=env) as (first, second):
        oauth = OAuth2Client(
            client_id="app",
            redirect_uri=REDIRECT,
            scope="openid fhirUser user/*.rs offline_access",
            code_challenge_method="S256",
            token_endpoint_auth_method="none",
        )
        config = httpx.get(f"{first}/fhir/.well-known/smart-configuration").json()
        verifier = "v" * 64
        url, state = oauth.create_authorization_url(
            config["authorization_endpoint"], code_verifier=verifier, aud=f"{first}/fhir"
        )
        with httpx.Client() as browser:
            page = browser.get(url)
            assert "login-form" in forms(page.text)
            consent = login(browser, page, "nurse")
            done = submit(browser, consent, "consent-form", _decision="approve")
        assert callback_params(done)["state"] == state
        token = oauth.fetch_token(
            config["token_endpoint"], authorization_response=done.headers["location"], code_verifier=verifier
        )
        assert token["token_type"] == "Bearer" and "id_token" in token and "refresh_token" in token

        assert httpx.get(f"{first}/fhir/Patient").status_code == 401
        assert oauth.get(f"{first}/fhir/Patient").status_code == 200
        # The second process knows the key (shared in the store) but its FHIR base differs: wrong aud.
        bearer = {"Authorization": f"Bearer {token['access_token']}"}
        assert httpx.get(f"{second}/fhir/Patient", headers=bearer).status_code == 401

        refreshed = oauth.refresh_token(config["token_endpoint"])
        assert refreshed["refresh_token"] != token["refresh_token"]
        assert oauth.get(f"{first}/fhir/Patient").status_code == 200
        revoked = oauth.revoke_token(config["revocation_endpoint"], refreshed["access_token"])
        assert revoked.status_code == 200
        assert oauth.get(f"{first}/fhir/Patient").status_code == 401, "revoked in this process: at once"


def test_revocation_reaches_another_process_within_the_bound(registered: str) -> None:
    """Both processes are addressed with one FHIR base (public_base_url), like instances behind a balancer."""
    public = "https://fhir.example.org/fhir"
    env = {
        "CALAIM_AUTH_ENABLED": "true",
        "CALAIM_SMART_REVOCATION_RECHECK_S": str(RECHECK_S),
        "CALAIM_PUBLIC_BASE_URL": public,
        "AUTHLIB_INSECURE_TRANSPORT": "1",  # the balancer terminates TLS; the test talks to the processes in http
    }
    engine = make_engine(registered)
    try:
        from tests.smart.support import backend_form, es384_key, register_backend

        key = es384_key()
        register_backend(engine, "hn", key, organization="hn-noble", scope="system/*.rs")
    finally:
        engine.dispose()
    with gateway_processes(registered, 2, env=env) as (first, second):
        form = backend_form("hn", key, "system/*.rs", aud="https://fhir.example.org/auth/token")
        token = httpx.post(f"{first}/auth/token", data=form).json()
        bearer = {"Authorization": f"Bearer {token['access_token']}"}
        assert httpx.get(f"{second}/fhir/Patient", headers=bearer).status_code == 200  # cached in the second
        assert (
            httpx.post(
                f"{first}/auth/revoke",
                data={
                    "token": token["access_token"],
                    "client_id": "hn",
                    **backend_form("hn", key, "", aud="https://fhir.example.org/auth/token"),
                },
            ).status_code
            == 200
        )
        assert httpx.get(f"{first}/fhir/Patient", headers=bearer).status_code == 401
        revoked_at = time.monotonic()
        while httpx.get(f"{second}/fhir/Patient", headers=bearer).status_code == 200:
            assert time.monotonic() - revoked_at < RECHECK_S + 1.0, "the second process kept accepting the token"
            time.sleep(0.05)
