"""$validate on every type, type and instance level (https://hl7.org/fhir/R4/resource-operation-validate.html)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from gateway.fhir.resource_types import SERVED_TYPES
from tests.conftest import patient, post


def test_validate_reports_issues_with_200(client: TestClient) -> None:
    bad = post(client, "Patient/$validate", {**patient(), "gender": "bogus"})
    assert bad.status_code == 200
    outcome = bad.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert any("Patient.gender" in e for i in outcome["issue"] for e in i.get("expression", []))
    good = post(client, "Patient/$validate", patient())
    assert good.status_code == 200
    assert all(i["severity"] == "information" for i in good.json()["issue"])
    assert client.get("/fhir/Patient?identifier=91000001A").json().get("entry") is None  # nothing stored


def test_validate_instance_and_parameters_body(client: TestClient) -> None:
    pid = post(client, "Patient", patient()).json()["id"]
    stored = client.get(f"/fhir/Patient/{pid}/$validate")
    assert stored.status_code == 200
    params = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "resource", "resource": {**patient(), "id": pid}},
            {"name": "mode", "valueCode": "update"},
        ],
    }
    assert post(client, f"Patient/{pid}/$validate", params).status_code == 200
    assert post(client, "Patient/$validate?mode=bogus", patient()).status_code == 400


@pytest.mark.parametrize("res_type", SERVED_TYPES)
def test_validate_exists_on_every_type(client: TestClient, res_type: str) -> None:
    response = post(client, f"{res_type}/$validate", {"resourceType": res_type})
    assert response.status_code == 200
    assert response.json()["resourceType"] == "OperationOutcome"


def test_unknown_operation_is_404(client: TestClient) -> None:
    assert post(client, "Patient/$frobnicate", patient()).status_code == 404
