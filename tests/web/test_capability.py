"""CapabilityStatement generated from what is implemented (https://hl7.org/fhir/R4/http.html#capabilities)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from gateway.fhir.resource_types import SERVED_TYPES


def test_metadata(client: TestClient) -> None:
    response = client.get("/fhir/metadata")
    assert response.status_code == 200
    cs = response.json()
    assert cs["resourceType"] == "CapabilityStatement"
    assert cs["fhirVersion"] == "4.0.1"
    assert cs["implementation"]["url"] == "http://testserver/fhir"
    rest = cs["rest"][0]
    assert {r["type"] for r in rest["resource"]} == set(SERVED_TYPES)
    assert {i["code"] for i in rest["interaction"]} == {
        "transaction",
        "batch",
        "search-system",
        "history-system",
    }
    patient = next(r for r in rest["resource"] if r["type"] == "Patient")
    codes = {i["code"] for i in patient["interaction"]}
    assert codes == {
        "read",
        "vread",
        "update",
        "patch",
        "delete",
        "history-instance",
        "history-type",
        "create",
        "search-type",
    }
    params = {p["name"]: p["type"] for p in patient["searchParam"]}
    assert params["identifier"] == "token" and params["birthdate"] == "date" and params["name"] == "string"
    assert "validate" in {op["name"] for op in patient["operation"]}
    assert "ServiceRequest:subject" in patient["searchRevInclude"]
