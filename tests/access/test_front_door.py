"""The FHIR API is closed by default (issue 5): 401 with ``WWW-Authenticate`` without a valid token, the
CapabilityStatement and discovery documents public and in agreement, and ``--no-auth`` only on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from gateway.cli import main
from gateway.fhir.core import build_context
from gateway.settings import Settings
from gateway.web.app import create_app
from tests.conftest import FHIR_JSON, issue_codes


@pytest.fixture
def secured(database_url: str) -> Iterator[TestClient]:
    settings = Settings(database_url=database_url, sqlite_synchronous="NORMAL")
    assert settings.auth_enabled, "enforcement is the default"
    ctx = build_context(settings)
    with TestClient(create_app(settings, context=ctx), raise_server_exceptions=False) as client:
        client.headers.update({"Accept": FHIR_JSON})
        yield client
    ctx.repo.engine.dispose()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/fhir/Patient"),
        ("GET", "/fhir/Patient/x"),
        ("GET", "/fhir/_history"),
        ("POST", "/fhir"),
        ("POST", "/fhir/Patient"),
        ("DELETE", "/fhir/Patient/x"),
        ("GET", "/fhir/$ecm-activity"),
    ],
)
def test_no_token_no_access(secured: TestClient, method: str, path: str) -> None:
    response = secured.request(method, path, headers={"Content-Type": FHIR_JSON}, content=b"{}")
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith('Bearer realm="http://testserver/fhir"')
    assert issue_codes(response) == ["login"]


@pytest.mark.parametrize("token", ["garbage", "a.b.c", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."])
def test_invalid_tokens_are_refused(secured: TestClient, token: str) -> None:
    response = secured.get("/fhir/Patient", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


def test_basic_auth_is_not_a_bearer_token(secured: TestClient) -> None:
    response = secured.get("/fhir/Patient", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert response.status_code == 401


def test_capability_statement_and_discovery_are_public_and_agree(secured: TestClient) -> None:
    metadata = secured.get("/fhir/metadata")
    assert metadata.status_code == 200
    security = metadata.json()["rest"][0]["security"]
    assert security["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
    (oauth,) = security["extension"]
    uris = {e["url"]: e["valueUri"] for e in oauth["extension"]}
    config = secured.get("/fhir/.well-known/smart-configuration")
    assert config.status_code == 200
    assert uris["authorize"] == config.json()["authorization_endpoint"]
    assert uris["token"] == config.json()["token_endpoint"]
    assert uris["revoke"] == config.json()["revocation_endpoint"]
    assert uris["introspect"] == config.json()["introspection_endpoint"]


def test_no_auth_is_refused_off_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CALAIM_HOST", "CALAIM_PORT", "CALAIM_DATABASE_URL", "CALAIM_AUTH_ENABLED"):
        monkeypatch.setenv(name, "")  # `serve` exports its flags; restored after the test
        monkeypatch.delenv(name)
    runner = CliRunner()
    result = runner.invoke(main, ["serve", "--no-auth", "--host", "0.0.0.0", "--database-url", "sqlite://"])
    assert result.exit_code == 2
    assert "refused on 0.0.0.0" in result.output
    monkeypatch.setenv("CALAIM_AUTH_ENABLED", "false")
    result = runner.invoke(main, ["serve", "--host", "10.1.2.3", "--database-url", "sqlite://"])
    assert result.exit_code == 2
    assert "refused on 10.1.2.3" in result.output


def test_fail_closed_until_the_verifier_is_set_up(database_url: str) -> None:
    """Before the app has its token verifier (start-up), a token request is refused with 503, never let in;
    the front door keeps the verifier only once there is one (session 11), so the first request after
    start-up is checked by it."""
    from adapters.smart.verify import AccessTokenVerifier

    settings = Settings(database_url=database_url, sqlite_synchronous="NORMAL")
    ctx = build_context(settings)
    app = create_app(settings, context=ctx)
    client = TestClient(app, raise_server_exceptions=False)  # no lifespan: the verifier is not set up
    for _ in range(2):
        response = client.get("/fhir/Patient/x", headers={"Accept": FHIR_JSON, "Authorization": "Bearer abc"})
        assert response.status_code == 503
    app.state.verifier = AccessTokenVerifier(ctx.repo.engine, settings)
    response = client.get("/fhir/Patient/x", headers={"Accept": FHIR_JSON, "Authorization": "Bearer abc"})
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["www-authenticate"]
    ctx.repo.engine.dispose()
