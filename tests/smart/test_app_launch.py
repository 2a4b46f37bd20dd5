"""SMART App Launch over HTTP on the real app and store: standalone launch with the patient picker, EHR
launch, authorize by POST, the token response, the id_token, consent denial, and the verifier's view of
the issued token (https://build.fhir.org/ig/HL7/smart-app-launch/app-launch.html)."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient
from joserfc import jwt
from joserfc.jwk import KeySet
from sqlalchemy import Engine

from adapters.smart.verify import AccessTokenVerifier
from gateway.fhir.context import Context
from gateway.settings import Settings
from tests.calaim.support import add_member
from tests.smart.support import (
    FHIR_BASE,
    REDIRECT,
    authorize_url,
    callback_params,
    exchange_code,
    forms,
    login,
    pkce,
    register_app,
    register_staff,
    run_code_flow,
    submit,
)


@pytest.fixture
def members(client: TestClient) -> list[str]:
    """Three synthetic members: two in hn-altamed's network, one in hn-noble's."""
    return [add_member(client, "1"), add_member(client, "2"), add_member(client, "3", network="hn-noble")]


def test_standalone_launch_with_patient_picker(
    http: TestClient, engine: Engine, settings: Settings, members: list[str]
) -> None:
    register_app(engine, "app")
    register_staff(engine, "nurse", organization="Organization/hn-altamed", fhir_user="Practitioner/p-1")
    verifier, challenge = pkce()
    scope = "launch/patient openid fhirUser offline_access patient/*.rs"
    page = http.get(authorize_url("app", scope, challenge, state="s-42"))
    assert page.status_code == 200 and "login-form" in forms(page.text)
    picker = login(http, page, "nurse")
    choices = forms(picker.text)["pick-form"].radios["_pick"]
    assert choices == ["m-1", "m-2"], "the picker lists the patients of the user's organization only"
    filtered = submit(http, picker, "filter-form", _name="Member2")
    assert forms(filtered.text)["pick-form"].radios["_pick"] == ["m-2"]
    consent = submit(http, filtered, "pick-form", _pick="m-2")
    assert "consent-form" in forms(consent.text)
    for listed in ("launch/patient", "patient/*.rs", "offline_access"):
        assert listed in consent.text
    assert consent.headers["x-frame-options"] == "DENY"
    done = submit(http, consent, "consent-form", _decision="approve")
    params = callback_params(done)
    assert params["state"] == "s-42" and params["code"]

    response = exchange_code(http, params["code"], verifier, "app")
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store" and response.headers["pragma"] == "no-cache"
    token = response.json()
    assert token["token_type"] == "Bearer"
    assert 0 < token["expires_in"] <= settings.smart_access_token_lifetime_s
    assert token["scope"].split() == scope.split()
    assert token["patient"] == "m-2"
    assert token["need_patient_banner"] is True
    assert token["smart_style_url"] == "https://testserver/auth/smart-style.json"
    assert token["fhirContext"] == []
    assert token["refresh_token"]

    grant = AccessTokenVerifier(engine, settings).verify(token["access_token"], audience=FHIR_BASE)
    assert (grant.subject, grant.client_id, grant.patient) == ("nurse", "app", "m-2")
    assert (grant.organization, grant.fhir_user) == ("hn-altamed", "Practitioner/p-1")
    assert grant.scope == token["scope"] and grant.expires_at > time.time()

    keys = KeySet.import_key_set(http.get("/auth/jwks").json())
    id_token = jwt.decode(token["id_token"], keys, algorithms=["RS256"])
    assert id_token.header["alg"] == "RS256"
    claims = id_token.claims
    assert claims["iss"] == FHIR_BASE and claims["aud"] == ["app"] and claims["sub"] == "nurse"
    assert claims["fhirUser"] == "Practitioner/p-1"
    assert claims["exp"] > time.time()


def test_ehr_launch_binds_the_patient_and_is_single_use(
    http: TestClient, engine: Engine, settings: Settings, members: list[str]
) -> None:
    register_app(engine, "ehr", scope="launch", secret="ehr-secret-1")
    register_app(engine, "app", secret="app-secret-1")
    register_staff(engine, "doc", organization="hn-altamed")
    created = http.post("/auth/launch", data={"patient": "m-1", "encounter": "enc-9"}, auth=("ehr", "ehr-secret-1"))
    assert created.status_code == 200, created.text
    launch = created.json()["launch"]
    assert created.json()["expires_in"] == settings.smart_launch_lifetime_s

    params, verifier = run_code_flow(http, client_id="app", username="doc", scope="launch patient/*.rs", launch=launch)
    assert "code" in params, params
    token = exchange_code(http, params["code"], verifier, "app", secret="app-secret-1").json()
    assert token["patient"] == "m-1" and token["encounter"] == "enc-9"
    assert token["fhirContext"] == [{"reference": "Encounter/enc-9"}]
    assert token["need_patient_banner"] is False
    assert "refresh_token" not in token, "no offline_access/online_access: no refresh token"
    grant = AccessTokenVerifier(engine, settings).verify(token["access_token"], audience=FHIR_BASE)
    assert (grant.patient, grant.encounter) == ("m-1", "enc-9")

    _, challenge = pkce()
    again = http.get(authorize_url("app", "launch patient/*.rs", challenge, launch=launch))
    assert callback_params(again)["error"] == "invalid_request"


def test_launch_endpoint_needs_an_authenticated_ehr_client(
    http: TestClient, engine: Engine, members: list[str]
) -> None:
    register_app(engine, "ehr", scope="launch", secret="ehr-secret-1")
    register_app(engine, "app", secret="app-secret-1", scope="patient/*.rs")
    assert http.post("/auth/launch", data={"patient": "m-1"}).status_code in (400, 401)
    assert http.post("/auth/launch", data={"patient": "m-1"}, auth=("ehr", "wrong")).status_code == 401
    refused = http.post("/auth/launch", data={"patient": "m-1"}, auth=("app", "app-secret-1"))
    assert refused.status_code == 403 and refused.json()["error"] == "unauthorized_client"
    unknown = http.post("/auth/launch", data={"patient": "nobody"}, auth=("ehr", "ehr-secret-1"))
    assert unknown.status_code == 400 and unknown.json()["error"] == "invalid_request"


def test_authorize_by_post(http: TestClient, engine: Engine) -> None:
    register_app(engine, "app")
    register_staff(engine, "nurse")
    verifier, challenge = pkce()
    query = authorize_url("app", "openid fhirUser user/*.rs", challenge).split("?", 1)[1]
    from urllib.parse import parse_qsl

    page = http.post("/auth/authorize", data=dict(parse_qsl(query)))
    assert "login-form" in forms(page.text)
    consent = login(http, page, "nurse")
    params = callback_params(submit(http, consent, "consent-form", _decision="approve"))
    token = exchange_code(http, params["code"], verifier, "app")
    assert token.status_code == 200
    assert "patient" not in token.json(), "user/ scopes without launch/patient: no patient context"


def test_consent_denied(http: TestClient, engine: Engine) -> None:
    register_app(engine, "app")
    register_staff(engine, "nurse")
    _, challenge = pkce()
    consent = login(http, http.get(authorize_url("app", "user/*.rs", challenge, state="xyz")), "nurse")
    params = callback_params(submit(http, consent, "consent-form", _decision="deny"))
    assert params == {"error": "access_denied", "state": "xyz"} or (
        params["error"] == "access_denied" and params["state"] == "xyz"
    )


def test_granted_scope_is_the_intersection_with_the_registration(http: TestClient, engine: Engine) -> None:
    register_app(engine, "narrow", scope="user/Patient.rs user/Observation.read openid")
    register_staff(engine, "nurse")
    params, verifier = run_code_flow(
        http, client_id="narrow", username="nurse", scope="user/Patient.r user/Observation.rs user/Condition.rs openid"
    )
    token = exchange_code(http, params["code"], verifier, "narrow").json()
    assert token["scope"] == "user/Patient.r user/Observation.rs openid"


def test_picker_refuses_a_patient_outside_the_organization(
    http: TestClient, engine: Engine, ctx: Context, members: list[str]
) -> None:
    register_app(engine, "app")
    register_staff(engine, "nurse", organization="hn-altamed")
    _, challenge = pkce()
    picker = login(http, http.get(authorize_url("app", "launch/patient patient/*.rs", challenge)), "nurse")
    assert "m-3" not in forms(picker.text)["pick-form"].radios["_pick"]
    forged = submit(http, picker, "pick-form", _pick="m-3")
    assert forged.status_code == 403
    assert REDIRECT not in forged.headers.get("location", "")
