"""Error statuses: every one is an OperationOutcome (https://hl7.org/fhir/R4/http.html#Status-Codes)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.conftest import FHIR_JSON, issue_codes, patient, post


def test_malformed_json_is_400(client: TestClient) -> None:
    response = client.post("/fhir/Patient", content=b"{not json", headers={"Content-Type": FHIR_JSON})
    assert response.status_code == 400
    assert issue_codes(response) == ["invalid"]


def test_non_object_body_is_400(client: TestClient) -> None:
    response = client.post("/fhir/Patient", content=b"[1,2]", headers={"Content-Type": FHIR_JSON})
    assert response.status_code == 400


def test_wrong_method_is_405_with_allow(client: TestClient) -> None:
    response = client.delete("/fhir/metadata")
    assert response.status_code == 405
    assert "GET" in response.headers["Allow"]
    assert issue_codes(response) == ["not-supported"]
    assert client.put("/fhir/Patient/1/_history/1", json={}).status_code == 405


def test_unacceptable_format_is_406(client: TestClient) -> None:
    assert client.get("/fhir/metadata", headers={"Accept": "application/fhir+xml"}).status_code == 406
    assert client.get("/fhir/metadata?_format=xml").status_code == 406
    assert client.get("/fhir/metadata", headers={"Accept": "application/json"}).status_code == 200
    assert client.get("/fhir/metadata", headers={"Accept": "*/*"}).status_code == 200


def test_body_too_large_is_413(client: TestClient) -> None:
    big = {
        **patient(),
        "text": {
            "status": "generated",
            "div": '<div xmlns="http://www.w3.org/1999/xhtml">' + "x" * 2_100_000 + "</div>",
        },
    }
    response = post(client, "Patient", big)
    assert response.status_code == 413
    assert issue_codes(response) == ["too-costly"]


def test_wrong_content_type_is_415(client: TestClient) -> None:
    response = client.post("/fhir/Patient", content=b"<Patient/>", headers={"Content-Type": "application/fhir+xml"})
    assert response.status_code == 415


def test_too_deep_json_is_400(client: TestClient) -> None:
    deep: dict[str, object] = {}
    node = deep
    for _ in range(200):
        child: dict[str, object] = {}
        node["extension"] = [child]
        node = child
    response = post(client, "Patient", {**patient(), "extension": [deep]})
    assert response.status_code == 400
    assert "nesting" in response.json()["issue"][0]["diagnostics"]


def test_unknown_path_is_404_outcome(client: TestClient) -> None:
    response = client.get("/fhir/Patient/1/_history/1/extra")
    assert response.status_code == 404
    assert issue_codes(response) == ["not-found"]


def test_conflict_and_gone_and_precondition(client: TestClient) -> None:
    pid = post(client, "Patient", patient()).json()["id"]
    client.delete(f"/fhir/Patient/{pid}")
    assert client.get(f"/fhir/Patient/{pid}").status_code == 410
    post(client, "Patient", patient(cin="X1"))
    post(client, "Patient", patient(cin="X1"))
    several = post(client, "Patient", patient(cin="X1"), headers={"If-None-Exist": "identifier=X1"})
    assert several.status_code == 412


def test_healthz(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
