"""CalAIM profiles over HTTP: writes claiming a profile are checked against it, ``$validate?profile=``
(https://hl7.org/fhir/R4/resource-operation-validate.html) and ``supportedProfile`` in the
CapabilityStatement (https://hl7.org/fhir/R4/capabilitystatement-definitions.html)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from tests.conftest import post, put

SD = "https://fhir.calaim-gateway.org/StructureDefinition"
MEMBER = f"{SD}/calaim-member"
CIN_SLICE = "Patient.identifier.where(system = 'https://fhir.calaim-gateway.org/sid/medi-cal-cin')"
EXAMPLES = Path(__file__).parents[1] / "fhir" / "examples" / "calaim-profile-examples.json"


def member() -> dict[str, Any]:
    """The synthetic CalAIM member example (claims the member profile), without its id."""
    entries = json.loads(EXAMPLES.read_text())["entry"]
    resource: dict[str, Any] = copy.deepcopy(
        next(e["resource"] for e in entries if e["resource"]["resourceType"] == "Patient")
    )
    del resource["id"]
    return resource


def expressions(body: dict[str, Any]) -> list[str]:
    return [e for issue in body["issue"] if issue["severity"] == "error" for e in issue.get("expression", [])]


def test_a_write_claiming_the_member_profile_without_cin_is_422(client: TestClient) -> None:
    resource = member()
    resource["identifier"] = [i for i in resource["identifier"] if not i["system"].endswith("medi-cal-cin")]
    created = post(client, "Patient", resource)
    assert created.status_code == 422
    assert expressions(created.json()) == [CIN_SLICE]
    assert MEMBER in created.json()["issue"][0]["diagnostics"]
    stored = post(client, "Patient", member())
    assert stored.status_code == 201
    updated = put(client, f"Patient/{stored.json()['id']}", {**resource, "id": stored.json()["id"]})
    assert updated.status_code == 422
    assert expressions(updated.json()) == [CIN_SLICE]


def test_an_unknown_claimed_profile_does_not_stop_a_write(client: TestClient) -> None:
    resource = member()
    resource["meta"]["profile"] = ["http://example.org/StructureDefinition/elsewhere"]
    assert post(client, "Patient", resource).status_code == 201


def test_validate_with_a_profile_parameter(client: TestClient) -> None:
    resource = member()
    del resource["meta"]  # claims nothing: only the profile parameter asks for the check
    resource["identifier"] = resource["identifier"][1:]
    checked = post(client, f"Patient/$validate?profile={MEMBER}", resource)
    assert checked.status_code == 200
    assert expressions(checked.json()) == [CIN_SLICE]
    plain = post(client, "Patient/$validate", resource)
    assert [i["severity"] for i in plain.json()["issue"]] == ["information"]
    body = {
        "resourceType": "Parameters",
        "parameter": [{"name": "resource", "resource": resource}, {"name": "profile", "valueUri": MEMBER}],
    }
    assert expressions(post(client, "Patient/$validate", body).json()) == [CIN_SLICE]
    good = post(client, f"Patient/$validate?profile={MEMBER}", member())
    assert [i["severity"] for i in good.json()["issue"]] == ["information"]


def test_validate_with_an_unknown_profile_is_an_error_issue(client: TestClient) -> None:
    response = post(client, f"Patient/$validate?profile={SD}/calaim-nothing", member())
    assert response.status_code == 200
    (issue,) = response.json()["issue"]
    assert (issue["severity"], issue["code"]) == ("error", "not-supported")
    assert "unknown profile" in issue["diagnostics"]


def test_metadata_lists_the_supported_profiles(client: TestClient) -> None:
    resources = {r["type"]: r for r in client.get("/fhir/metadata").json()["rest"][0]["resource"]}
    assert resources["Patient"]["supportedProfile"] == [MEMBER]
    assert resources["CoverageEligibilityResponse"]["supportedProfile"] == [f"{SD}/calaim-authorization"]
    assert resources["Task"]["supportedProfile"] == [f"{SD}/calaim-referral-task"]
    assert "supportedProfile" not in resources["Organization"]
