"""Access control end to end over HTTP with real tokens from the gateway's own authorization server
(issue 5): a backend-services token of provider X and a standalone-launch token for member A never show
member B's data, through read, search, paging, includes, history or batch; revoked tokens stop working."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gateway.fhir.context import Context
from gateway.fhir.core import build_context
from gateway.settings import Settings
from gateway.web.app import create_app
from tests.access.support import NETWORK_A, NETWORK_B, PROVIDER_X, PROVIDER_Y, Member, seed_member
from tests.conftest import FHIR_JSON
from tests.smart.support import HTTPS_BASE, backend_token, user_token


@dataclass
class Secured:
    http: TestClient
    ctx: Context
    a: Member
    b: Member


@pytest.fixture
def secured(database_url: str) -> Iterator[Secured]:
    settings = Settings(database_url=database_url, sqlite_synchronous="NORMAL")
    ctx = build_context(settings)
    open_settings = settings.model_copy(update={"auth_enabled": False})
    with TestClient(create_app(open_settings, context=ctx, background=False)) as seeding:
        seeding.headers.update({"Accept": FHIR_JSON})
        a = seed_member(seeding, ctx, "a", network=NETWORK_A, provider=PROVIDER_X)
        b = seed_member(seeding, ctx, "b", network=NETWORK_B, provider=PROVIDER_Y)
    app = create_app(settings, context=ctx, background=False)
    with TestClient(app, base_url=HTTPS_BASE, follow_redirects=False) as http:
        yield Secured(http, ctx, a, b)
    ctx.repo.engine.dispose()


def _get(http: TestClient, token: str, url: str) -> Any:
    return http.get(url, headers={"Authorization": f"Bearer {token}", "Accept": FHIR_JSON})


def _pages(http: TestClient, token: str, url: str) -> set[str]:
    refs: set[str] = set()
    next_url: str | None = url
    while next_url:
        response = _get(http, token, next_url)
        assert response.status_code == 200, response.text
        bundle = response.json()
        refs |= {
            f"{e['resource']['resourceType']}/{e['resource']['id']}"
            for e in bundle.get("entry", [])
            if e["resource"]["resourceType"] != "OperationOutcome"
        }
        next_url = next((link["url"] for link in bundle["link"] if link["relation"] == "next"), None)
    return refs


def test_backend_token_of_a_provider_sees_only_its_members(secured: Secured) -> None:
    http, a, b = secured.http, secured.a, secured.b
    token = backend_token(http, secured.ctx.repo.engine, organization=PROVIDER_X, scope="system/*.rs")["access_token"]
    for res_type, ids in b.resources.items():
        for res_id in ids:
            assert _get(http, token, f"/fhir/{res_type}/{res_id}").status_code == 404
    for res_type, ids in a.resources.items():
        found = _pages(http, token, f"/fhir/{res_type}?_count=1")
        assert {f"{res_type}/{i}" for i in ids} <= found
        assert not found & b.refs()
    everything = _pages(http, token, "/fhir/Patient?_revinclude=Condition:subject&_revinclude=Task:patient&_count=1")
    assert f"Patient/{a.patient}" in everything
    assert not everything & b.refs()
    assert not _pages(http, token, "/fhir/_history?_count=5") & b.refs()
    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [{"request": {"method": "GET", "url": f"Patient/{p}"}} for p in (a.patient, b.patient)],
    }
    answer = http.post(
        "/fhir",
        json=batch,
        headers={"Authorization": f"Bearer {token}", "Content-Type": FHIR_JSON, "Accept": FHIR_JSON},
    )
    assert [e["response"]["status"][:3] for e in answer.json()["entry"]] == ["200", "404"]
    write = http.post(
        "/fhir/Goal",
        json={
            "resourceType": "Goal",
            "lifecycleStatus": "active",
            "description": {"text": "x"},
            "subject": {"reference": f"Patient/{a.patient}"},
        },
        headers={"Authorization": f"Bearer {token}", "Content-Type": FHIR_JSON},
    )
    assert write.status_code == 403  # system/*.rs reads only


def test_patient_launch_token_sees_one_compartment(secured: Secured) -> None:
    http, a, b = secured.http, secured.a, secured.b
    response = user_token(
        http, secured.ctx.repo.engine, organization=PROVIDER_X, scope="launch/patient patient/*.rs", patient=a.patient
    )
    assert response["patient"] == a.patient
    token = response["access_token"]
    assert _pages(http, token, "/fhir/Patient") == {f"Patient/{a.patient}"}
    assert _get(http, token, f"/fhir/Patient/{b.patient}").status_code == 404
    conditions = _pages(http, token, "/fhir/Condition")
    assert conditions == {f"Condition/{i}" for i in a.resources["Condition"]}
    assert _get(http, token, "/fhir/Organization").status_code == 200  # the directory is readable


def test_revoked_token_stops_working(secured: Secured) -> None:
    http = secured.http
    body = user_token(http, secured.ctx.repo.engine, organization=PROVIDER_X, scope="user/*.rs")
    token = body["access_token"]
    assert _get(http, token, "/fhir/Patient").status_code == 200
    revoked = http.post("/auth/revoke", data={"token": token, "client_id": f"app-{PROVIDER_X}"})
    assert revoked.status_code == 200, revoked.text
    answer = _get(http, token, "/fhir/Patient")
    assert answer.status_code == 401
    assert 'error="invalid_token"' in answer.headers["www-authenticate"]
