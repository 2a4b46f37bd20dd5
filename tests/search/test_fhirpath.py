"""The FHIRPath subset compiler (https://hl7.org/fhirpath/N1/) on R4 resources."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.fhir.resource_types import SERVED_TYPES
from gateway.search.fhirpath import FhirPathError, compile_expression, reference_type, split_reference
from gateway.search.registry import default_registry

PATIENT: dict[str, Any] = {
    "resourceType": "Patient",
    "id": "example",
    "extension": [
        {"url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex", "valueCode": "M"},
        {
            "url": "http://hl7.org/fhir/StructureDefinition/patient-religion",
            "valueCodeableConcept": {
                "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ReligiousAffiliation", "code": "1013"}]
            },
        },
    ],
    "name": [
        {"use": "official", "family": "Chalmers", "given": ["Peter", "James"]},
        {"use": "usual", "given": ["Jim"]},
    ],
    "telecom": [
        {"system": "phone", "value": "(03) 5555 6473", "use": "work"},
        {"system": "email", "value": "peter@example.org"},
    ],
    "gender": "male",
    "deceasedDateTime": "2015-02-14T13:42:00+10:00",
}


def run(resource_type: str, expression: str, resource: dict[str, Any]) -> list[Any]:
    return compile_expression(resource_type, expression)(resource)


def test_every_vendored_expression_of_every_served_type_compiles() -> None:
    registry = default_registry()
    compiled = 0
    for resource_type in SERVED_TYPES:
        params = registry.for_type(resource_type)
        assert params, resource_type
        for param in params.values():
            if param.expression is None:
                # Only R4's expression-less parameters (_text, _content, _query) have none.
                assert param.code in ("_text", "_content", "_query"), (resource_type, param.code)
                continue
            path = compile_expression(resource_type, param.expression)
            assert path.types, (resource_type, param.code)
            compiled += 1
    assert compiled > 400


def test_paths_flatten_lists() -> None:
    assert run("Patient", "Patient.name.given", PATIENT) == ["Peter", "James", "Jim"]
    assert run("Patient", "Patient.name.family", PATIENT) == ["Chalmers"]
    assert run("Patient", "Patient.birthDate", PATIENT) == []
    assert compile_expression("Patient", "Patient.name.given").types == ("string",)


def test_resource_and_domain_resource_name_the_context() -> None:
    tagged = {"resourceType": "Task", "meta": {"tag": [{"code": "a"}], "profile": ["http://x/p"]}}
    assert run("Task", "Resource.meta.tag", tagged) == [{"code": "a"}]
    assert run("Task", "DomainResource.meta.profile", tagged) == ["http://x/p"]


def test_union_concatenates_without_duplicates() -> None:
    assert run("Patient", "Patient.name.family | Patient.name.given", PATIENT) == ["Chalmers", "Peter", "James", "Jim"]
    assert run("Patient", "Patient.gender | Patient.gender", PATIENT) == ["male"]


def test_choice_element_reads_whichever_typed_key_is_present() -> None:
    path = compile_expression("Patient", "Patient.deceased")
    assert path.types == ("boolean", "dateTime")
    assert path(PATIENT) == ["2015-02-14T13:42:00+10:00"]
    assert path({"resourceType": "Patient", "deceasedBoolean": False}) == [False]


def test_as_and_of_type_narrow_a_choice_statically() -> None:
    condition = {"resourceType": "Condition", "onsetAge": {"value": 52, "unit": "a"}, "abatementDateTime": "2020-01"}
    assert run("Condition", "(Condition.onset as dateTime)", condition) == []
    assert run("Condition", "Condition.onset.as(Age)", condition) == [{"value": 52, "unit": "a"}]
    assert run("Condition", "Condition.onset.ofType(Age)", condition) == [{"value": 52, "unit": "a"}]
    assert run("Condition", "Condition.abatement.as(dateTime) | Condition.abatement.as(Period)", condition) == [
        "2020-01"
    ]
    assert compile_expression("Condition", "Condition.onset.as(Age) | Condition.onset.as(Range)").types == (
        "Age",
        "Range",
    )
    assert compile_expression("Goal", "(Goal.start as date)").types == ("date",)


def test_where_resolve_is_keeps_references_to_that_type() -> None:
    task = {
        "resourceType": "Task",
        "for": {"reference": "Patient/123"},
        "focus": {"reference": "ServiceRequest/sr-1"},
    }
    assert run("Task", "Task.for.where(resolve() is Patient)", task) == [{"reference": "Patient/123"}]
    assert run("Task", "Task.for.where(resolve() is Group)", task) == []
    provenance = {
        "resourceType": "Provenance",
        "target": [
            {"reference": "https://fhir.example.org/r4/Patient/9/_history/2"},
            {"reference": "Group/g1"},
            {"identifier": {"system": "urn:x", "value": "1"}, "type": "Patient"},
            {"reference": "urn:uuid:6c1b4a8e-58a3-4d4a-9f0b-1d2f3c4b5a6e", "type": "Patient"},
            {"reference": "#contained"},
        ],
    }
    kept = run("Provenance", "Provenance.target.where(resolve() is Patient)", provenance)
    assert kept == [provenance["target"][0], provenance["target"][2], provenance["target"][3]]


def test_where_equality_filter() -> None:
    assert run("Patient", "Patient.telecom.where(system='email')", PATIENT) == [
        {"system": "email", "value": "peter@example.org"}
    ]
    # A general criterion (not the single-key fast path) gives the same answers.
    assert run("Patient", "Patient.telecom.where(system='phone' and use='work').value", PATIENT) == ["(03) 5555 6473"]
    assert run("Patient", "Patient.telecom.where(system!='phone').value", PATIENT) == ["peter@example.org"]


def test_extension_by_url() -> None:
    url = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex"
    assert run("Patient", f"Patient.extension('{url}').value", PATIENT) == ["M"]
    assert run("Patient", f"Patient.extension.where(url='{url}').value", PATIENT) == ["M"]
    religion = "Patient.extension('http://hl7.org/fhir/StructureDefinition/patient-religion').value.as(CodeableConcept)"
    assert run("Patient", religion, PATIENT)[0]["coding"][0]["code"] == "1013"
    assert compile_expression("Patient", religion).types == ("CodeableConcept",)


def test_deceased_boolean_expression() -> None:
    expression = "Patient.deceased.exists() and Patient.deceased != false"
    assert compile_expression("Patient", expression).types == ("boolean",)
    assert run("Patient", expression, PATIENT) == [True]
    assert run("Patient", expression, {"resourceType": "Patient", "deceasedBoolean": True}) == [True]
    assert run("Patient", expression, {"resourceType": "Patient", "deceasedBoolean": False}) == [False]
    assert run("Patient", expression, {"resourceType": "Patient"}) == [False]


def test_exists_empty_not_first_or() -> None:
    assert run("Patient", "Patient.name.exists()", PATIENT) == [True]
    assert run("Patient", "Patient.photo.empty()", PATIENT) == [True]
    assert run("Patient", "Patient.active.exists().not()", PATIENT) == [True]
    assert run("Patient", "Patient.name.first().given", PATIENT) == ["Peter", "James"]
    assert run("Patient", "Patient.active = true or Patient.gender = 'male'", PATIENT) == [True]
    assert run("Patient", "Patient.active = true", PATIENT) == []


def test_compilation_is_cached() -> None:
    assert compile_expression("Task", "Task.for") is compile_expression("Task", "Task.for")


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("Patient.nmae", "has no element 'nmae'"),
        ("Patient.name.select(given)", "unsupported function select()"),
        ("Patient.name.given[0]", "unexpected character"),
        ("Patient.gender as Period", "can never be a Period"),
        ("Patient.name.where(resolve() is Patient)", "resolve() is only supported on Reference"),
        ("Patient.name is HumanName", "'is' is only supported"),
        ("Patient.name.given.substring(1)", "unsupported function substring() with arguments"),
        ("Patient.name.", "unexpected end"),
    ],
)
def test_unsupported_or_wrong_expressions_fail_at_compile_time(expression: str, message: str) -> None:
    with pytest.raises(FhirPathError) as info:
        compile_expression("Patient", expression)
    assert message in str(info.value)
    assert "Patient" in str(info.value)


def test_split_reference() -> None:
    assert split_reference("Patient/123") == ("Patient", "123", False)
    assert split_reference("Patient/123/_history/4") == ("Patient", "123", False)
    assert split_reference("https://fhir.example.org/r4/Coverage/c-1") == ("Coverage", "c-1", True)
    assert split_reference("urn:uuid:6c1b4a8e-58a3-4d4a-9f0b-1d2f3c4b5a6e") is None
    assert split_reference("#p1") is None
    assert split_reference("Patient?identifier=x") is None


def test_reference_type_falls_back_to_declared_type() -> None:
    assert reference_type({"reference": "Organization/o1"}) == "Organization"
    assert reference_type({"identifier": {"value": "x"}, "type": "Practitioner"}) == "Practitioner"
    assert reference_type({"type": "http://hl7.org/fhir/StructureDefinition/Patient"}) == "Patient"
    assert reference_type("Patient/1") is None
