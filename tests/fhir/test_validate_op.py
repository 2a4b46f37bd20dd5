"""$validate logic (https://hl7.org/fhir/R4/resource-operation-validate.html): gateway/fhir/validate_op.py."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.errors import BadRequest
from gateway.fhir.validate_op import validate_operation
from gateway.types import JSONObject
from tests.fhir.test_validation import example


def patient() -> JSONObject:
    """The example Patient without its meta.profile claim (which $validate reports as unchecked)."""
    resource = example("Patient")
    del resource["meta"]["profile"]
    return resource


def parameters(*params: dict[str, Any]) -> JSONObject:
    return {"resourceType": "Parameters", "parameter": list(params)}


def issues(outcome: JSONObject) -> list[tuple[str, str, list[str]]]:
    assert outcome["resourceType"] == "OperationOutcome"
    return [(i["severity"], i["code"], i.get("expression", [])) for i in outcome["issue"]]


ALL_OK: list[tuple[str, str, list[str]]] = [("information", "informational", [])]


def test_valid_resource_is_all_ok() -> None:
    outcome = validate_operation(patient(), resource_type="Patient", mode=None, profile=None)
    assert issues(outcome) == ALL_OK
    assert outcome["issue"][0]["diagnostics"] == "All OK"


def test_invalid_resource_issues_are_in_the_outcome() -> None:
    resource = example("ServiceRequest")
    del resource["status"]
    outcome = validate_operation(resource, resource_type="ServiceRequest", mode="create", profile=None)
    assert issues(outcome) == [("error", "required", ["ServiceRequest.status"])]


def test_type_mismatch_with_the_url() -> None:
    outcome = validate_operation(patient(), resource_type="Organization", mode=None, profile=None)
    assert issues(outcome) == [("error", "invalid", ["resourceType"])]


def test_parameters_body() -> None:
    resource = patient()
    body = parameters({"name": "resource", "resource": resource}, {"name": "mode", "valueCode": "create"})
    assert issues(validate_operation(body, resource_type="Patient", mode=None, profile=None)) == ALL_OK
    resource["gender"] = "F"
    outcome = validate_operation(body, resource_type="Patient", mode=None, profile=None)
    assert issues(outcome) == [("error", "code-invalid", ["Patient.gender"])]


def test_parameters_override_the_query() -> None:
    body = parameters({"name": "resource", "resource": patient()}, {"name": "mode", "valueCode": "create"})
    outcome = validate_operation(body, resource_type="Patient", mode="bogus", profile=None)
    assert issues(outcome) == ALL_OK


def test_update_needs_the_id_of_the_url() -> None:
    resource = patient()
    ok = validate_operation(resource, resource_type="Patient", mode="update", profile=None, resource_id=resource["id"])
    assert issues(ok) == ALL_OK
    other = validate_operation(resource, resource_type="Patient", mode="update", profile=None, resource_id="x")
    assert issues(other) == [("error", "invalid", ["id"])]
    del resource["id"]
    missing = validate_operation(resource, resource_type="Patient", mode="update", profile=None)
    assert issues(missing) == [("error", "required", ["id"])]


def test_delete_needs_no_resource() -> None:
    outcome = validate_operation(parameters(), resource_type="Patient", mode="delete", profile=None)
    assert issues(outcome) == ALL_OK


def test_unknown_mode_is_400() -> None:
    with pytest.raises(BadRequest) as caught:
        validate_operation(patient(), resource_type="Patient", mode="merge", profile=None)
    assert caught.value.status == 400


@pytest.mark.parametrize(
    "body",
    [
        parameters({"name": "mode", "valueCode": "create"}),
        parameters({"name": "resource", "valueString": "x"}),
        parameters({"name": "color", "valueCode": "red"}),
        parameters({"name": "mode"}),
        {"resourceType": "Parameters", "parameter": {"name": "mode"}},
    ],
    ids=["no resource", "resource not a resource", "unknown parameter", "mode without value", "parameter not array"],
)
def test_bad_parameters_are_400(body: JSONObject) -> None:
    with pytest.raises(BadRequest):
        validate_operation(body, resource_type="Patient", mode=None, profile=None)


@pytest.mark.parametrize(
    "profile",
    [
        "http://hl7.org/fhir/StructureDefinition/Patient",
        "http://hl7.org/fhir/StructureDefinition/Patient|4.0.1",
    ],
)
def test_base_profile_is_known(profile: str) -> None:
    outcome = validate_operation(patient(), resource_type="Patient", mode=None, profile=profile)
    assert issues(outcome) == ALL_OK


def test_other_profile_is_unknown() -> None:
    profile = "http://example.org/fhir/calaim/StructureDefinition/calaim-patient"
    body = parameters({"name": "resource", "resource": patient()}, {"name": "profile", "valueUri": profile})
    outcome = validate_operation(body, resource_type="Patient", mode=None, profile=None)
    assert issues(outcome) == [("error", "not-supported", [])]
    assert profile in outcome["issue"][0]["diagnostics"]


def test_claimed_meta_profile_is_a_warning() -> None:
    resource = patient()
    resource["meta"]["profile"] = ["http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient"]
    outcome = validate_operation(resource, resource_type="Patient", mode=None, profile=None)
    assert issues(outcome) == [("warning", "not-supported", ["Patient.meta.profile[0]"])]
