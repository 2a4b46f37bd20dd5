"""batch and transaction Bundles (https://hl7.org/fhir/R4/http.html#transaction)."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tests.conftest import FHIR_JSON, patient, post


def _bundle(kind: str, entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": entries}


def _send(client: TestClient, bundle: dict[str, Any], **headers: str) -> Any:
    return client.post("/fhir", json=bundle, headers={"Content-Type": FHIR_JSON, **headers})


def _service_request(subject: str) -> dict[str, Any]:
    return {
        "resourceType": "ServiceRequest",
        "status": "active",
        "intent": "order",
        "subject": {"reference": subject},
    }


def test_transaction_rewrites_urn_uuid_references(client: TestClient) -> None:
    bundle = _bundle(
        "transaction",
        [
            {
                "fullUrl": "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a",
                "resource": patient(cin="T1"),
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "fullUrl": "urn:uuid:88f151c0-a954-468a-88bd-5ae15c08e059",
                "resource": _service_request("urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a"),
                "request": {"method": "POST", "url": "ServiceRequest"},
            },
        ],
    )
    response = _send(client, bundle)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["type"] == "transaction-response"
    statuses = [e["response"]["status"] for e in result["entry"]]
    assert statuses == ["201 Created", "201 Created"]
    pid = result["entry"][0]["resource"]["id"]
    sr = client.get(result["entry"][1]["response"]["location"].replace("http://testserver", "")).json()
    assert sr["subject"]["reference"] == f"Patient/{pid}"


def test_transaction_is_all_or_nothing(client: TestClient) -> None:
    bundle = _bundle(
        "transaction",
        [
            {"resource": patient(cin="ATOMIC"), "request": {"method": "POST", "url": "Patient"}},
            {"resource": {**patient(), "gender": "bogus"}, "request": {"method": "POST", "url": "Patient"}},
        ],
    )
    response = _send(client, bundle)
    assert response.status_code == 422
    diagnostics = response.json()["issue"][0]
    assert "Bundle.entry[1]" in diagnostics["diagnostics"]
    assert any(e.startswith("Bundle.entry[1].resource.Patient.gender") for e in diagnostics.get("expression", []))
    search = client.get("/fhir/Patient?identifier=ATOMIC").json()
    assert search.get("total", 0) == 0 and not search.get("entry")


def test_transaction_processing_order_and_conditional_references(client: TestClient) -> None:
    existing = post(client, "Patient", patient(cin="ORDER")).json()["id"]
    doomed = post(client, "Patient", patient(cin="DOOMED")).json()["id"]
    bundle = _bundle(
        "transaction",
        [
            {"request": {"method": "GET", "url": f"Patient/{existing}"}},
            {
                "resource": _service_request("Patient?identifier=ORDER"),
                "request": {"method": "POST", "url": "ServiceRequest"},
            },
            {"request": {"method": "DELETE", "url": f"Patient/{doomed}"}},
            {
                "resource": {**patient(cin="ORDER", family="Updated"), "id": existing},
                "request": {"method": "PUT", "url": f"Patient/{existing}"},
            },
        ],
    )
    response = _send(client, bundle)
    assert response.status_code == 200, response.text
    entries = response.json()["entry"]
    # GET runs last (after the PUT), so it sees the update; DELETE ran first.
    assert entries[0]["resource"]["name"][0]["family"] == "Updated"
    assert entries[2]["response"]["status"].startswith("204")
    sr_location = entries[1]["response"]["location"].replace("http://testserver", "")
    assert client.get(sr_location).json()["subject"]["reference"] == f"Patient/{existing}"
    assert client.get(f"/fhir/Patient/{doomed}").status_code == 410


def test_transaction_conditional_reference_must_match_one(client: TestClient) -> None:
    bundle = _bundle(
        "transaction",
        [
            {
                "resource": _service_request("Patient?identifier=NOBODY"),
                "request": {"method": "POST", "url": "ServiceRequest"},
            }
        ],
    )
    assert _send(client, bundle).status_code == 412


def test_transaction_conditional_create_resolves_to_existing(client: TestClient) -> None:
    existing = post(client, "Patient", patient(cin="COND")).json()["id"]
    bundle = _bundle(
        "transaction",
        [
            {
                "fullUrl": "urn:uuid:0c3b5d3e-3a3b-4f34-9b7e-6a2f5f0f0001",
                "resource": patient(cin="COND"),
                "request": {"method": "POST", "url": "Patient", "ifNoneExist": "identifier=COND"},
            },
            {
                "resource": _service_request("urn:uuid:0c3b5d3e-3a3b-4f34-9b7e-6a2f5f0f0001"),
                "request": {"method": "POST", "url": "ServiceRequest"},
            },
        ],
    )
    response = _send(client, bundle)
    assert response.status_code == 200, response.text
    entries = response.json()["entry"]
    assert entries[0]["response"]["status"] == "200 OK"
    location = entries[1]["response"]["location"].replace("http://testserver", "")
    assert client.get(location).json()["subject"]["reference"] == f"Patient/{existing}"


def test_transaction_duplicate_target_and_dangling_urn_are_400(client: TestClient) -> None:
    dup = _bundle(
        "transaction",
        [
            {"resource": {**patient(), "id": "x"}, "request": {"method": "PUT", "url": "Patient/x"}},
            {"resource": {**patient(), "id": "x"}, "request": {"method": "PUT", "url": "Patient/x"}},
        ],
    )
    assert _send(client, dup).status_code == 400
    dangling = _bundle(
        "transaction",
        [
            {
                "resource": _service_request("urn:uuid:ffffffff-0000-0000-0000-000000000000"),
                "request": {"method": "POST", "url": "ServiceRequest"},
            }
        ],
    )
    assert _send(client, dangling).status_code == 400


def test_batch_answers_each_entry(client: TestClient) -> None:
    bundle = _bundle(
        "batch",
        [
            {"resource": patient(cin="B1"), "request": {"method": "POST", "url": "Patient"}},
            {"resource": {**patient(), "gender": "bogus"}, "request": {"method": "POST", "url": "Patient"}},
            {"request": {"method": "GET", "url": "Patient/does-not-exist"}},
            {"request": {"method": "GET", "url": "Patient?identifier=B1"}},
        ],
    )
    response = _send(client, bundle)
    assert response.status_code == 200
    entries = response.json()["entry"]
    assert entries[0]["response"]["status"] == "201 Created"
    assert entries[1]["response"]["status"] == "422"
    assert entries[1]["response"]["outcome"]["resourceType"] == "OperationOutcome"
    assert entries[2]["response"]["status"] == "404"
    assert entries[3]["resource"]["type"] == "searchset"
    assert len(entries[3]["resource"]["entry"]) == 1


def test_bundle_errors(client: TestClient) -> None:
    assert _send(client, {"resourceType": "Bundle", "type": "collection"}).status_code == 400
    assert _send(client, patient()).status_code == 400
    missing_request = _bundle("transaction", [{"resource": patient()}])
    response = _send(client, missing_request)
    assert response.status_code == 400
    assert response.json()["issue"][0]["expression"] == ["Bundle.entry[0].request"]
    nested = _bundle("batch", [{"resource": _bundle("batch", []), "request": {"method": "POST", "url": ""}}])
    assert _send(client, nested).json()["entry"][0]["response"]["status"] == "400"


def test_bundle_entry_limit_is_413(client: TestClient) -> None:
    entries = [{"request": {"method": "GET", "url": "metadata"}}] * 5001
    assert _send(client, _bundle("batch", entries)).status_code == 413
