"""Conditional create, update, delete and patch (https://hl7.org/fhir/R4/http.html#ccreate)."""

from __future__ import annotations

import threading

from fastapi.testclient import TestClient

from gateway.fhir.context import Context
from gateway.fhir.core import dispatch
from gateway.fhir.request import FhirRequest
from tests.conftest import issue_codes, patient, post, put


def test_conditional_create_0_1_many(client: TestClient) -> None:
    first = post(client, "Patient", patient(cin="C1"), headers={"If-None-Exist": "identifier=C1"})
    assert first.status_code == 201
    again = post(client, "Patient", patient(cin="C1"), headers={"If-None-Exist": "identifier=C1"})
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    post(client, "Patient", patient(cin="C1"))  # a second match created without condition
    many = post(client, "Patient", patient(cin="C1"), headers={"If-None-Exist": "identifier=C1"})
    assert many.status_code == 412


def test_conditional_create_is_race_free(ctx: Context) -> None:
    """Threads fire the same conditional create at once; exactly one resource exists afterwards."""
    results: list[int] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def fire() -> None:
        request = FhirRequest(
            method="POST",
            path="Patient",
            headers={"if-none-exist": "identifier=urn:sys|RACE-1"},
            resource=patient(cin=None, identifier=[{"system": "urn:sys", "value": "RACE-1"}]),
            base_url="http://x/fhir",
        )
        barrier.wait()
        try:
            results.append(dispatch(ctx, request).status)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=fire) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert sorted(results) == [200] * 7 + [201]
    with ctx.repo.connect() as conn:
        found = ctx.search.find(conn, resource_type="Patient", params=[("identifier", "urn:sys|RACE-1")], limit=10)
    assert len(found) == 1


def test_stale_conditional_key_does_not_block(client: TestClient) -> None:
    # The created resource does not match its own condition; a later identical condition must still create.
    first = post(client, "Patient", patient(cin="OTHER"), headers={"If-None-Exist": "identifier=NOPE"})
    assert first.status_code == 201
    second = post(client, "Patient", patient(cin="OTHER"), headers={"If-None-Exist": "identifier=NOPE"})
    assert second.status_code == 201
    assert second.json()["id"] != first.json()["id"]


def test_conditional_update(client: TestClient) -> None:
    created = put(client, "Patient?identifier=U1", patient(cin="U1"))
    assert created.status_code == 201
    pid = created.json()["id"]
    updated = put(client, "Patient?identifier=U1", patient(cin="U1", family="Roe"))
    assert updated.status_code == 200
    assert updated.json()["id"] == pid and updated.json()["meta"]["versionId"] == "2"
    wrong_id = put(client, "Patient?identifier=U1", {**patient(cin="U1"), "id": "other"})
    assert wrong_id.status_code == 400
    post(client, "Patient", patient(cin="U1"))
    assert put(client, "Patient?identifier=U1", patient(cin="U1")).status_code == 412
    taken = put(client, "Patient/taken", {**patient(cin="T0"), "id": "taken"})
    assert taken.status_code == 201
    clash = put(client, "Patient?identifier=T9", {**patient(cin="T9"), "id": "taken"})
    assert clash.status_code == 409
    assert issue_codes(clash) == ["conflict"]


def test_conditional_delete(client: TestClient) -> None:
    pid = post(client, "Patient", patient(cin="D1")).json()["id"]
    assert client.delete("/fhir/Patient?identifier=D1").status_code == 204
    assert client.get(f"/fhir/Patient/{pid}").status_code == 410
    assert client.delete("/fhir/Patient?identifier=D1").status_code == 204  # nothing matches now
    post(client, "Patient", patient(cin="D2"))
    post(client, "Patient", patient(cin="D2"))
    assert client.delete("/fhir/Patient?identifier=D2").status_code == 412
    assert client.delete("/fhir/Patient").status_code == 400  # no criteria


def test_conditional_patch(client: TestClient) -> None:
    post(client, "Patient", patient(cin="P1"))
    response = client.patch(
        "/fhir/Patient?identifier=P1",
        json=[{"op": "replace", "path": "/gender", "value": "other"}],
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert response.status_code == 200
    assert response.json()["gender"] == "other"
