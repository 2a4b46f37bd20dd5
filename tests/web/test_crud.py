"""read, vread, create, update, patch, delete over HTTP (https://hl7.org/fhir/R4/http.html)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.conftest import FHIR_JSON, issue_codes, patient, post, put


def test_create_assigns_id_and_version_headers(client: TestClient) -> None:
    response = post(client, "Patient", {**patient(), "id": "client-chosen"})
    assert response.status_code == 201
    body = response.json()
    assert body["id"] != "client-chosen"  # http.html#create: the server assigns the id
    assert body["meta"]["versionId"] == "1"
    assert body["meta"]["lastUpdated"].endswith("Z")
    assert response.headers["ETag"] == 'W/"1"'
    assert response.headers["Location"].endswith(f"/fhir/Patient/{body['id']}/_history/1")
    assert response.headers["Location"].startswith("http://testserver/fhir/")
    assert "GMT" in response.headers["Last-Modified"]
    assert response.headers["content-type"].startswith(FHIR_JSON)


def test_read_serves_stored_bytes(client: TestClient) -> None:
    created = post(client, "Patient", patient())
    pid = created.json()["id"]
    read = client.get(f"/fhir/Patient/{pid}")
    assert read.status_code == 200
    assert read.content == created.content  # the very bytes written, not a re-serialization
    assert read.headers["ETag"] == 'W/"1"'


def test_read_if_none_match_is_304(client: TestClient) -> None:
    pid = post(client, "Patient", patient()).json()["id"]
    assert client.get(f"/fhir/Patient/{pid}", headers={"If-None-Match": 'W/"1"'}).status_code == 304
    assert client.get(f"/fhir/Patient/{pid}", headers={"If-None-Match": 'W/"9"'}).status_code == 200


def test_read_unknown_is_404_outcome(client: TestClient) -> None:
    response = client.get("/fhir/Patient/nope")
    assert response.status_code == 404
    assert issue_codes(response) == ["not-found"]


def test_unknown_type_is_404(client: TestClient) -> None:
    response = client.get("/fhir/Spaceship/1")
    assert response.status_code == 404
    assert "Spaceship" in response.json()["issue"][0]["diagnostics"]


def test_update_and_vread(client: TestClient) -> None:
    pid = post(client, "Patient", patient()).json()["id"]
    changed = {**patient(family="Roe"), "id": pid}
    response = put(client, f"Patient/{pid}", changed)
    assert response.status_code == 200
    assert response.json()["meta"]["versionId"] == "2"
    assert response.headers["ETag"] == 'W/"2"'
    v1 = client.get(f"/fhir/Patient/{pid}/_history/1")
    assert v1.status_code == 200 and v1.json()["name"][0]["family"] == "Doe"
    v2 = client.get(f"/fhir/Patient/{pid}/_history/2")
    assert v2.json()["name"][0]["family"] == "Roe"
    assert client.get(f"/fhir/Patient/{pid}/_history/3").status_code == 404


def test_update_as_create_with_client_id(client: TestClient) -> None:
    response = put(client, "Patient/member-1", {**patient(), "id": "member-1"})
    assert response.status_code == 201
    assert response.json()["id"] == "member-1"
    assert client.get("/fhir/Patient/member-1").status_code == 200


def test_update_id_mismatch_and_missing_id_are_400(client: TestClient) -> None:
    assert put(client, "Patient/a", {**patient(), "id": "b"}).status_code == 400
    assert put(client, "Patient/a", patient()).status_code == 400


def test_type_mismatch_is_400(client: TestClient) -> None:
    response = post(client, "Organization", patient())
    assert response.status_code == 400
    assert "Patient" in response.json()["issue"][0]["diagnostics"]


def test_if_match(client: TestClient) -> None:
    pid = post(client, "Patient", patient()).json()["id"]
    body = {**patient(family="Roe"), "id": pid}
    stale = put(client, f"Patient/{pid}", body, headers={"If-Match": 'W/"7"'})
    assert stale.status_code == 412
    assert issue_codes(stale) == ["conflict"]
    fresh = put(client, f"Patient/{pid}", body, headers={"If-Match": 'W/"1"'})
    assert fresh.status_code == 200
    assert put(client, f"Patient/{pid}", body, headers={"If-Match": 'W/"1"'}).status_code == 412


def test_delete_then_read_is_410_and_history_keeps_versions(client: TestClient) -> None:
    pid = post(client, "Patient", patient()).json()["id"]
    deleted = client.delete(f"/fhir/Patient/{pid}")
    assert deleted.status_code == 204
    assert deleted.headers["ETag"] == 'W/"2"'
    gone = client.get(f"/fhir/Patient/{pid}")
    assert gone.status_code == 410
    assert issue_codes(gone) == ["deleted"]
    assert client.get(f"/fhir/Patient/{pid}/_history/2").status_code == 410
    assert client.get(f"/fhir/Patient/{pid}/_history/1").status_code == 200
    assert client.delete(f"/fhir/Patient/{pid}").status_code == 204  # idempotent
    assert client.delete("/fhir/Patient/never-was").status_code == 404
    recreated = put(client, f"Patient/{pid}", {**patient(), "id": pid})
    assert recreated.status_code == 201
    assert recreated.json()["meta"]["versionId"] == "3"


def test_prefer_return(client: TestClient) -> None:
    minimal = post(client, "Patient", patient(), headers={"Prefer": "return=minimal"})
    assert minimal.status_code == 201 and minimal.content == b""
    assert minimal.headers["Location"]
    outcome = post(client, "Patient", patient(), headers={"Prefer": "return=OperationOutcome"})
    assert outcome.json()["resourceType"] == "OperationOutcome"
    assert post(client, "Patient", patient(), headers={"Prefer": "return=bogus"}).status_code == 400


def test_patch_json_patch(client: TestClient) -> None:
    pid = post(client, "Patient", patient()).json()["id"]
    ops = [
        {"op": "replace", "path": "/name/0/family", "value": "Patched"},
        {"op": "add", "path": "/active", "value": True},
    ]
    response = client.patch(
        f"/fhir/Patient/{pid}",
        json=ops,
        headers={"Content-Type": "application/json-patch+json", "If-Match": 'W/"1"'},
    )
    assert response.status_code == 200, response.text
    assert response.json()["name"][0]["family"] == "Patched"
    assert response.json()["meta"]["versionId"] == "2"
    bad_type = client.patch(f"/fhir/Patient/{pid}", json=ops, headers={"Content-Type": FHIR_JSON})
    assert bad_type.status_code == 415
    invalid = client.patch(
        f"/fhir/Patient/{pid}",
        json=[{"op": "replace", "path": "/gender", "value": "bogus"}],
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert invalid.status_code == 422
    failed_test = client.patch(
        f"/fhir/Patient/{pid}",
        json=[{"op": "test", "path": "/gender", "value": "male"}],
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert failed_test.status_code == 422
    change_id = client.patch(
        f"/fhir/Patient/{pid}",
        json=[{"op": "replace", "path": "/id", "value": "other"}],
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert change_id.status_code == 422
    malformed = client.patch(
        f"/fhir/Patient/{pid}",
        json=[{"op": "frobnicate", "path": "/x"}],
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert malformed.status_code == 400


def test_invalid_resource_is_422_with_expression(client: TestClient) -> None:
    response = post(client, "Patient", {**patient(), "gender": "bogus"})
    assert response.status_code == 422
    issues = response.json()["issue"]
    assert any("Patient.gender" in e for issue in issues for e in issue.get("expression", []))
    missing = post(client, "ServiceRequest", {"resourceType": "ServiceRequest", "subject": {"reference": "Patient/1"}})
    assert missing.status_code == 422
    paths = {e for issue in missing.json()["issue"] for e in issue.get("expression", [])}
    assert {"ServiceRequest.status", "ServiceRequest.intent"} <= paths
