"""Discovery: ``/.well-known/smart-configuration`` has every field SMART App Launch 2.x requires
(https://build.fhir.org/ig/HL7/smart-app-launch/conformance.html), with absolute URLs that answer;
the OpenID configuration and the JWKS agree with it."""

from __future__ import annotations

from fastapi.testclient import TestClient

from adapters.smart.discovery import CAPABILITIES, oauth_uris
from tests.smart.support import FHIR_BASE

REQUIRED = (
    "issuer",
    "jwks_uri",
    "authorization_endpoint",
    "grant_types_supported",
    "token_endpoint",
    "token_endpoint_auth_methods_supported",
    "scopes_supported",
    "response_types_supported",
    "capabilities",
    "code_challenge_methods_supported",
    "introspection_endpoint",
    "revocation_endpoint",
)


def test_smart_configuration_has_every_required_field(http: TestClient) -> None:
    response = http.get("/fhir/.well-known/smart-configuration")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert [name for name in REQUIRED if name not in body] == []
    assert body["code_challenge_methods_supported"] == ["S256"]
    assert set(body["grant_types_supported"]) == {"authorization_code", "refresh_token", "client_credentials"}
    assert {"private_key_jwt", "client_secret_basic", "none"} <= set(body["token_endpoint_auth_methods_supported"])
    assert set(body["token_endpoint_auth_signing_alg_values_supported"]) == {"RS384", "ES384"}
    assert set(body["capabilities"]) == set(CAPABILITIES)
    for capability in (
        "launch-ehr",
        "launch-standalone",
        "client-public",
        "client-confidential-symmetric",
        "client-confidential-asymmetric",
        "sso-openid-connect",
        "context-standalone-patient",
        "permission-v2",
        "permission-offline",
    ):
        assert capability in body["capabilities"]
    assert body["issuer"] == FHIR_BASE
    for name in (
        "authorization_endpoint",
        "token_endpoint",
        "jwks_uri",
        "introspection_endpoint",
        "revocation_endpoint",
    ):
        assert body[name].startswith("https://testserver/auth/"), body[name]
    assert body["token_endpoint"] == oauth_uris(FHIR_BASE)["token"]
    assert body["authorization_endpoint"] == oauth_uris(FHIR_BASE)["authorize"]


def test_discovery_needs_no_token_and_follows_the_host(http: TestClient) -> None:
    body = http.get("/fhir/.well-known/smart-configuration", headers={"Host": "fhir.example.org"}).json()
    assert body["token_endpoint"] == "https://fhir.example.org/auth/token"


def test_openid_configuration_and_jwks(http: TestClient) -> None:
    config = http.get("/fhir/.well-known/openid-configuration").json()
    assert config["issuer"] == FHIR_BASE
    assert config["id_token_signing_alg_values_supported"] == ["RS256"]
    jwks = http.get(config["jwks_uri"].removeprefix("https://testserver")).json()
    assert len(jwks["keys"]) == 1
    key = jwks["keys"][0]
    assert key["kty"] == "RSA" and key["alg"] == "RS256" and key["use"] == "sig" and "d" not in key


def test_style_document(http: TestClient) -> None:
    style = http.get("/auth/smart-style.json").json()
    assert style["color_background"].startswith("#")
