"""Resource validation on write (https://hl7.org/fhir/R4/validation.html): gateway/fhir/validation.py.

The valid examples are synthetic CalAIM resources of every served type (examples/calaim-examples.json),
written against the R4 definitions: neither fhir.resources nor the definitions package ships R4
example resources. Each failure case mutates one of them and names the issue code and expression.
"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.errors import Issue, Unprocessable
from gateway.fhir import validation
from gateway.fhir.element_tables import ELEMENTS_FILE
from gateway.fhir.resource_types import SERVED_TYPES
from gateway.fhir.validation import ensure_valid, unexpandable_value_sets, validate_resource
from gateway.types import JSONObject

EXAMPLES_FILE = Path(__file__).parent / "examples" / "calaim-examples.json"
EXAMPLES: list[JSONObject] = [entry["resource"] for entry in json.loads(EXAMPLES_FILE.read_text())["entry"]]


def example(resource_type: str) -> JSONObject:
    """A deep copy of the first example of ``resource_type``."""
    return copy.deepcopy(next(r for r in EXAMPLES if r["resourceType"] == resource_type))


def errors(resource: JSONObject, *, with_model: bool = True) -> list[Issue]:
    """The error issues of ``validate_resource``.

    Warnings are left out because the example Patient claims US Core in ``meta.profile``, a profile this
    server does not know, which ``validate_resource`` reports as a warning (not an error: R4 lets a
    server accept it); tests/fhir/test_profiles.py covers that warning.
    """
    return [i for i in validate_resource(resource, with_model=with_model) if i.severity != "warning"]


def found(resource: JSONObject) -> list[tuple[str, str]]:
    """(code, expression) of every error issue."""
    return [(issue.code, issue.expression[0] if issue.expression else "") for issue in errors(resource)]


def test_examples_cover_every_served_type() -> None:
    assert {r["resourceType"] for r in EXAMPLES} == set(SERVED_TYPES)


@pytest.mark.parametrize("resource", EXAMPLES, ids=lambda r: f"{r['resourceType']}/{r['id']}")
def test_valid_examples_pass(resource: JSONObject) -> None:
    assert errors(resource) == []
    assert errors(resource, with_model=False) == []
    ensure_valid(resource, resource_type=resource["resourceType"])


def test_validation_does_not_change_the_resource() -> None:
    resource = example("Patient")
    before = copy.deepcopy(resource)
    validate_resource(resource)
    assert resource == before


Mutation = Callable[[JSONObject], Any]

CASES: list[tuple[str, str, Mutation, str, str]] = [
    # (id, type, mutation, issue code, expression)
    ("unknown element", "Patient", lambda r: r.update(bogus=1), "structure", "Patient.bogus"),
    ("unknown nested", "Patient", lambda r: r["name"][0].update(nick="x"), "structure", "Patient.name[0].nick"),
    (
        "R4B-only Extension type",
        "Patient",
        lambda r: r["extension"].append({"url": "http://x", "valueRatioRange": {"denominator": {"value": 1}}}),
        "structure",
        "Patient.extension[2].valueRatioRange",
    ),
    ("vendor Meta element", "Patient", lambda r: r["meta"].update(project="p"), "structure", "Patient.meta.project"),
    ("unknown _twin", "Patient", lambda r: r.update(_bogus={"id": "x"}), "structure", "Patient._bogus"),
    ("missing required code", "ServiceRequest", lambda r: r.pop("status"), "required", "ServiceRequest.status"),
    ("missing required reference", "ServiceRequest", lambda r: r.pop("subject"), "required", "ServiceRequest.subject"),
    ("missing in backbone", "Coverage", lambda r: r["class"][0].pop("value"), "required", "Coverage.class[0].value"),
    (
        "missing boolean in backbone",
        "AuditEvent",
        lambda r: r["agent"][0].pop("requestor"),
        "required",
        "AuditEvent.agent[0].requestor",
    ),
    (
        "missing in datatype",
        "Patient",
        lambda r: r["extension"][1].pop("url"),
        "required",
        "Patient.extension[1].url",
    ),
    (
        "missing choice value",
        "AuditEvent",
        lambda r: r["entity"][0]["detail"][0].pop("valueString"),
        "required",
        "AuditEvent.entity[0].detail[0].value[x]",
    ),
    (
        "missing in contentReference",
        "Consent",
        lambda r: r["provision"]["provision"][0].update(actor=[{"reference": {"reference": "Patient/1"}}]),
        "required",
        "Consent.provision.provision[0].actor[0].role",
    ),
    ("max 1 given an array", "Patient", lambda r: r.update(gender=["female"]), "structure", "Patient.gender"),
    (
        "max 1 complex given an array",
        "ServiceRequest",
        lambda r: r.update(subject=[r["subject"]]),
        "structure",
        "ServiceRequest.subject",
    ),
    ("max * given an object", "Patient", lambda r: r.update(name=r["name"][0]), "structure", "Patient.name"),
    ("string for boolean", "Patient", lambda r: r.update(active="true"), "value", "Patient.active"),
    (
        "string for integer",
        "Patient",
        lambda r: r.update(multipleBirthInteger="1"),
        "value",
        "Patient.multipleBirthInteger",
    ),
    ("float for integer", "Coverage", lambda r: r.update(order=1.0), "value", "Coverage.order"),
    ("positiveInt zero", "Coverage", lambda r: r.update(order=0), "value", "Coverage.order"),
    ("number for string", "Patient", lambda r: r["name"][0].update(family=7), "value", "Patient.name[0].family"),
    ("date format", "Patient", lambda r: r.update(birthDate="1978-13-01"), "value", "Patient.birthDate"),
    ("no such day", "Patient", lambda r: r.update(birthDate="2023-02-29"), "value", "Patient.birthDate"),
    (
        "dateTime without zone",
        "ServiceRequest",
        lambda r: r.update(authoredOn="2024-05-01T10:00:00"),
        "value",
        "ServiceRequest.authoredOn",
    ),
    ("instant without time", "Provenance", lambda r: r.update(recorded="2024-05-01"), "value", "Provenance.recorded"),
    ("code with spaces", "Patient", lambda r: r.update(gender=" female"), "value", "Patient.gender"),
    (
        "uri with spaces",
        "Patient",
        lambda r: r["identifier"][1].update(system="a b"),
        "value",
        "Patient.identifier[1].system",
    ),
    ("bad id", "Patient", lambda r: r.update(id="mbr_000123"), "value", "Patient.id"),
    ("id too long", "Patient", lambda r: r.update(id="a" * 65), "value", "Patient.id"),
    ("required code", "Patient", lambda r: r.update(gender="F"), "code-invalid", "Patient.gender"),
    (
        "required code in datatype",
        "Patient",
        lambda r: r["name"][0].update(use="formal"),
        "code-invalid",
        "Patient.name[0].use",
    ),
    (
        "required code in backbone",
        "CarePlan",
        lambda r: r["activity"][0]["detail"].update(status="ongoing"),
        "code-invalid",
        "CarePlan.activity[0].detail.status",
    ),
    (
        "required code in a list",
        "CoverageEligibilityRequest",
        lambda r: r["purpose"].append("coverage"),
        "code-invalid",
        "CoverageEligibilityRequest.purpose[2]",
    ),
    (
        "required CodeableConcept",
        "Condition",
        lambda r: r["clinicalStatus"]["coding"][0].update(system="http://snomed.info/sct"),
        "code-invalid",
        "Condition.clinicalStatus",
    ),
    (
        "required CodeableConcept as text",
        "Condition",
        lambda r: r.update(clinicalStatus={"text": "active"}),
        "code-invalid",
        "Condition.clinicalStatus",
    ),
    (
        "two choice types",
        "Patient",
        lambda r: r.update(deceasedDateTime="2024-01-01"),
        "structure",
        "Patient.deceasedDateTime",
    ),
    ("empty string", "Patient", lambda r: r["name"][0].update(family=""), "value", "Patient.name[0].family"),
    ("empty object", "Patient", lambda r: r["name"].append({}), "structure", "Patient.name[2]"),
    ("empty array", "Patient", lambda r: r.update(telecom=[]), "structure", "Patient.telecom"),
    ("null", "Patient", lambda r: r.update(active=None), "structure", "Patient.active"),
    (
        "null array item",
        "Patient",
        lambda r: r["name"][1]["given"].append(None),
        "structure",
        "Patient.name[1].given[1]",
    ),
    (
        "reference to a wrong type",
        "ServiceRequest",
        lambda r: r["subject"].update(reference="Organization/hn-calopt"),
        "value",
        "ServiceRequest.subject.reference",
    ),
    (
        "contained non-R4 type",
        "Patient",
        lambda r: r.update(contained=[{"resourceType": "Citation", "status": "active"}]),
        "structure",
        "Patient.contained[0]",
    ),
    (
        "contained with contained",
        "Patient",
        lambda r: r.update(contained=[{"resourceType": "Organization", "contained": [{"resourceType": "Basic"}]}]),
        "structure",
        "Patient.contained[0].contained",
    ),
    (
        "contained element",
        "Patient",
        lambda r: r.update(contained=[{"resourceType": "Organization", "id": "o1", "name": 1}]),
        "value",
        "Patient.contained[0].name",
    ),
    ("narrative not xhtml", "Patient", lambda r: r["text"].update(div="hello"), "value", "Patient.text.div"),
]


@pytest.mark.parametrize(
    ("resource_type", "mutate", "code", "expression"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_each_failure_has_its_code_and_expression(
    resource_type: str, mutate: Mutation, code: str, expression: str
) -> None:
    resource = example(resource_type)
    mutate(resource)
    assert found(resource) == [(code, expression)]
    issue = validate_resource(resource)[0]
    assert issue.severity == "error"
    assert issue.diagnostics.startswith(f"{expression}: ")
    for jargon in ("Input should be", "Value error", "pydantic", "For further information", "type="):
        assert jargon not in issue.diagnostics


@pytest.mark.parametrize(
    ("resource_type", "mutate"),
    [
        ("Patient", lambda r: r["extension"].append({"url": "http://x", "valueMeta": {"versionId": "1"}})),
        ("Patient", lambda r: r.update(_active={"extension": [{"url": "http://x", "valueString": "y"}]})),
        ("Patient", lambda r: r["name"][1].update(given=[None], _given=[{"id": "g1"}])),
        ("Coverage", lambda r: r["costToBeneficiary"][0]["valueMoney"].update(currency="XXX")),
        ("ServiceRequest", lambda r: r["subject"].update(reference="urn:uuid:0f6f3e2a-1d2b-4c5d-9e8f-0a1b2c3d4e5f")),
        ("ServiceRequest", lambda r: r["subject"].update(reference="https://other.example/fhir/Patient/9")),
        ("Condition", lambda r: r.update(recordedDate="2024-02-29")),
    ],
    ids=[
        "R4 valueMeta",
        "extension-only primitive",
        "null paired with _given",
        "unexpandable currency",
        "urn:uuid ref",
        "absolute ref",
        "leap day",
    ],
)
def test_valid_r4_variants_pass(resource_type: str, mutate: Mutation) -> None:
    resource = example(resource_type)
    mutate(resource)
    assert found(resource) == []


def test_every_problem_is_reported() -> None:
    resource = example("ServiceRequest")
    del resource["status"]
    resource["intent"] = "wish"
    resource["priority"] = ["routine"]
    assert found(resource) == [
        ("code-invalid", "ServiceRequest.intent"),
        ("structure", "ServiceRequest.priority"),
        ("required", "ServiceRequest.status"),
    ]


def test_resource_type_checks() -> None:
    assert found({"name": []}) == [("required", "resourceType")]
    assert found({"resourceType": "Observation"}) == [("not-supported", "resourceType")]
    issues = validate_resource(example("Patient"), resource_type="Organization")
    # The second issue: the example claims US Core, which this server does not know (a warning).
    assert [(i.severity, i.code, i.expression) for i in issues] == [
        ("error", "invalid", ("resourceType",)),
        ("warning", "not-supported", ("Patient.meta.profile[0]",)),
    ]


def test_ensure_valid_raises_422_with_all_issues() -> None:
    resource = example("Patient")
    resource["gender"] = "F"
    resource["bogus"] = True
    with pytest.raises(Unprocessable) as caught:
        ensure_valid(resource, resource_type="Patient")
    assert caught.value.status == 422
    outcome = caught.value.outcome()
    assert [issue["expression"] for issue in outcome["issue"]] == [["Patient.gender"], ["Patient.bogus"]]


def test_r4b_model_errors_are_translated() -> None:
    resource = example("Patient")
    resource["birthDate"] = "1978-13-01"
    issues = validation.model_issues(resource, "Patient")
    assert issues is not None and len(issues) == 1
    assert issues[0].code == "value"
    assert issues[0].expression == ("Patient.birthDate",)
    assert "Value error" not in issues[0].diagnostics
    assert "'1978-13-01'" in issues[0].diagnostics


def test_elements_file_is_r4() -> None:
    data = orjson.loads(ELEMENTS_FILE.read_bytes())
    assert data["fhirVersion"] == "4.0.1"
    assert set(SERVED_TYPES) <= set(data["types"])
    assert "Meta.project" not in data["types"]["Meta"]
    bound = {e["binding"] for table in data["types"].values() for e in table.values() if "binding" in e}
    assert bound == set(data["valueSets"]) | set(data["unexpandable"])
    assert unexpandable_value_sets() == {
        "http://hl7.org/fhir/ValueSet/currencies",
        "http://hl7.org/fhir/ValueSet/mimetypes",
    }


def test_validating_a_thousand_resources() -> None:
    """The fast path at volume: 1,000 distinct valid resources, no false positives (no timing asserted)."""
    batch = []
    for i in range(1000):
        resource = copy.deepcopy(EXAMPLES[i % len(EXAMPLES)])
        resource["id"] = f"bulk-{i}"
        batch.append(resource)
    assert all(errors(resource) == [] for resource in batch)
    assert all(errors(resource, with_model=False) == [] for resource in batch)


def _mutations(rng: random.Random, count: int) -> list[JSONObject]:
    """``count`` copies of the examples, each with one element replaced, removed, wrapped or added."""
    values: list[Any] = ["", " x", "x", "2024-02-30", "2024-05-01T10:00:00", "10:00", 0, -1, 1.5, 2**33, True,
                         None, [], {}, ["a"], {"a": 1}, "urn:oid:1.2", "a" * 70, "ab_c", [None], [{}],
                         {"reference": "Patient/1"}, {"coding": [{"code": "x"}]}]  # fmt: skip
    out: list[JSONObject] = []
    while len(out) < count:
        resource = copy.deepcopy(rng.choice(EXAMPLES))
        holders: list[tuple[Any, Any]] = []
        stack: list[Any] = [resource]
        while stack:
            node = stack.pop()
            keys = list(node) if isinstance(node, dict) else list(range(len(node)))
            for key in keys:
                if node is not resource or key != "resourceType":
                    holders.append((node, key))
                if isinstance(node[key], dict | list):
                    stack.append(node[key])
        node, key = rng.choice(holders)
        action = rng.random()
        if action < 0.6:
            node[key] = rng.choice(values)
        elif action < 0.8:
            del node[key]
        elif action < 0.9:
            node[key] = [node[key]]
        elif isinstance(node[key], dict):
            node[key][rng.choice(["foo", "_foo", "valueMeta", "extension", "_id"])] = rng.choice(values)
        out.append(resource)
    return out


def test_the_r4_walk_finds_whatever_the_r4b_model_finds() -> None:
    """Evidence for ``with_model=False``: on random single mutations the R4B pass never adds a finding."""
    for resource in _mutations(random.Random(20240501), 1500):
        walk_issues = errors(resource, with_model=False)
        model_issues = validation.model_issues(resource, resource["resourceType"])
        assert walk_issues or not model_issues, (resource, model_issues)
