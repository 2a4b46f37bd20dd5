"""Validation against profiles (https://hl7.org/fhir/R4/profiling.html): gateway/fhir/profiles.py.

Runs on the small test guide in profiles_fixtures/ (base ``https://test.example/fhir``), written to
exercise each construct: identifier slices by system (fixed child and patternIdentifier), extension
slices with value type, binding and maxValue, a complex extension with closed slicing, a choice type
restriction, max 0, fixed and pattern values, Reference targetProfile, nested backbone cardinality,
an invariant and a profile derived from another. The real CalAIM guide: test_profiles_calaim.py.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import Issue
from gateway.fhir import validation
from gateway.fhir.profiles import ProfileError, ProfileSet, load_profile_set, validate_against_profile
from gateway.fhir.validation import validate_resource
from gateway.types import JSONObject

FIXTURES = Path(__file__).parent / "profiles_fixtures"
IG = "https://test.example/fhir"
SD = f"{IG}/StructureDefinition"
X12 = "https://codesystem.x12.org/005010/306"
HCPCS = "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
POF = f"{IG}/CodeSystem/test-pof"
CIN = f"{IG}/sid/medi-cal-cin"
PROFILES = load_profile_set(FIXTURES)


def member() -> JSONObject:
    return {
        "resourceType": "Patient",
        "id": "m1",
        "meta": {"profile": [f"{SD}/test-member"]},
        "extension": [{"url": f"{SD}/ext-test-pof", "valueCoding": {"system": POF, "code": "1a"}}],
        "identifier": [
            {"system": CIN, "value": "91000001A"},
            {"system": f"{IG}/sid/plan-member-id", "value": "P-1"},
            {"system": "urn:oid:2.16.840.1.113883.4.1", "value": "123"},
        ],
        "name": [{"family": "Doe", "given": ["Jane"]}],
        "birthDate": "1980-02-03",
        "deceasedBoolean": False,
    }


def referral() -> JSONObject:
    return {
        "resourceType": "ServiceRequest",
        "id": "r1",
        "meta": {"profile": [f"{SD}/test-referral"]},
        "extension": [
            {
                "url": f"{SD}/ext-test-closure",
                "extension": [
                    {"url": "reason", "valueCoding": {"system": POF, "code": "1b"}},
                    {"url": "date", "valueDate": "2024-05-01"},
                ],
            }
        ],
        "status": "active",
        "intent": "order",
        "category": [
            {"coding": [{"system": "http://snomed.info/sct", "code": "3457005", "display": "Referral"}], "text": "x"}
        ],
        "code": {"coding": [{"system": HCPCS, "code": "G9008"}]},
        "subject": {"reference": "Patient/m1"},
        "occurrencePeriod": {"start": "2024-05-01"},
        "requester": {"reference": "Organization/o1"},
    }


def authorization() -> JSONObject:
    item = {"productOrService": {"coding": [{"system": HCPCS, "code": "G9008"}]}}
    return {
        "resourceType": "CoverageEligibilityResponse",
        "id": "a1",
        "meta": {"profile": [f"{SD}/test-authorization"]},
        "extension": [
            {"url": f"{SD}/ext-test-decision", "valueCodeableConcept": {"coding": [{"system": X12, "code": "A1"}]}},
            {"url": f"{SD}/ext-test-units", "valuePositiveInt": 24},
        ],
        "status": "active",
        "purpose": ["auth-requirements"],
        "patient": {"reference": "Patient/m1"},
        "created": "2024-05-01",
        "request": {"reference": "CoverageEligibilityRequest/q1"},
        "outcome": "complete",
        "insurer": {"reference": "Organization/o1"},
        "preAuthRef": "AUTH-0001",
        "insurance": [
            {
                "coverage": {"reference": "Coverage/c1"},
                "benefitPeriod": {"start": "2024-05-01", "end": "2025-04-30"},
                "item": [item, copy.deepcopy(item)],
            }
        ],
    }


BUILDERS: dict[str, Callable[[], JSONObject]] = {
    "test-member": member,
    "test-referral": referral,
    "test-authorization": authorization,
}


def check(resource: JSONObject, profile: str) -> list[tuple[str, str]]:
    """(code, expression) of each issue of ``resource`` against the fixture profile ``profile``."""
    return [(i.code, i.expression[0] if i.expression else "") for i in validate_against_profile(
        resource, f"{SD}/{profile}", profiles=PROFILES
    )]  # fmt: skip


def test_every_fixture_profile_compiles() -> None:
    urls = PROFILES.all_profiles()
    assert len(urls) == 8
    for url in urls:
        assert PROFILES.compile(url) is PROFILES.compile(url)  # compiled once, then cached


@pytest.mark.parametrize("profile", sorted(BUILDERS))
def test_conforming_resources_pass(profile: str) -> None:
    resource = BUILDERS[profile]()
    assert check(resource, profile) == []
    assert validate_resource(resource, profiles=PROFILES) == []  # base R4 and the claimed profile


Mutation = Callable[[JSONObject], Any]
EXT_DECISION = f"{SD}/ext-test-decision"
CASES: list[tuple[str, str, Mutation, list[tuple[str, str]]]] = [
    # cardinality, identifier slices by system (fixed child / patternIdentifier), maxLength
    ("no CIN", "test-member", lambda r: r["identifier"].pop(0),
     [("required", f"Patient.identifier.where(system = '{CIN}')")]),
    ("two CINs", "test-member", lambda r: r["identifier"].append({"system": CIN, "value": "91000002B"}),
     [("structure", f"Patient.identifier.where(system = '{CIN}')")]),
    ("CIN without value", "test-member", lambda r: r["identifier"][0].pop("value"),
     [("required", "Patient.identifier[0].value")]),
    ("CIN too long", "test-member", lambda r: r["identifier"][0].update(value="9100000012"),
     [("value", "Patient.identifier[0].value")]),
    ("two plan ids (pattern slice)", "test-member",
     lambda r: r["identifier"].append({"system": f"{IG}/sid/plan-member-id", "value": "P-2"}),
     [("structure", f"Patient.identifier.where(system = '{IG}/sid/plan-member-id')")]),
    ("no identifier at all", "test-member", lambda r: r.pop("identifier"),
     [("required", "Patient.identifier"), ("required", f"Patient.identifier.where(system = '{CIN}')")]),
    ("no name", "test-member", lambda r: r.pop("name"), [("required", "Patient.name")]),
    ("max 0", "test-member", lambda r: r.update(photo=[{"url": "http://x.example/p.png"}]),
     [("structure", "Patient.photo")]),
    ("choice type not allowed", "test-member", lambda r: (r.pop("deceasedBoolean"), r.update(deceasedDateTime="2024")),
     [("structure", "Patient.deceasedDateTime")]),
    # extension slices: binding, value type, value required
    ("extension code outside its value set", "test-member",
     lambda r: r["extension"][0]["valueCoding"].update(code="9"),
     [("code-invalid", "Patient.extension[0].valueCoding")]),
    ("extension with the wrong value type", "test-member",
     lambda r: r["extension"][0].update(valueString="1a") or r["extension"][0].pop("valueCoding"),
     [("structure", "Patient.extension[0].valueString"), ("required", "Patient.extension[0].value[x]")]),
    # fixed, pattern, required binding, reference targets (profile and base type), choice restriction
    ("fixed code", "test-referral", lambda r: r.update(intent="plan"), [("value", "ServiceRequest.intent")]),
    ("pattern", "test-referral", lambda r: r["category"][0]["coding"][0].update(code="1"),
     [("value", "ServiceRequest.category[0]")]),
    ("required binding on CodeableConcept", "test-referral",
     lambda r: r["code"]["coding"][0].update(code="H9999"), [("code-invalid", "ServiceRequest.code")]),
    ("missing element with min 1", "test-referral", lambda r: r.pop("code"), [("required", "ServiceRequest.code")]),
    ("reference to a type the targetProfile excludes", "test-referral",
     lambda r: r["subject"].update(reference="Group/g1"), [("value", "ServiceRequest.subject")]),
    ("reference to a base type not listed", "test-referral",
     lambda r: r["requester"].update(reference="Practitioner/p1"), [("value", "ServiceRequest.requester")]),
    ("choice restricted to Period", "test-referral",
     lambda r: (r.pop("occurrencePeriod"), r.update(occurrenceDateTime="2024-05-01")),
     [("structure", "ServiceRequest.occurrenceDateTime")]),
    # a complex extension: closed slicing on its parts, part bindings, no value[x]
    ("complex extension part missing", "test-referral", lambda r: r["extension"][0]["extension"].pop(0),
     [("required", "ServiceRequest.extension[0].extension('reason')")]),
    ("complex extension unknown part (closed)", "test-referral",
     lambda r: r["extension"][0]["extension"].append({"url": "other", "valueString": "x"}),
     [("structure", "ServiceRequest.extension[0].extension[2]")]),
    ("complex extension part outside its value set", "test-referral",
     lambda r: r["extension"][0]["extension"][0]["valueCoding"].update(code="2"),
     [("code-invalid", "ServiceRequest.extension[0].extension[0].valueCoding")]),
    ("complex extension with a value", "test-referral", lambda r: r["extension"][0].update(valueString="x"),
     [("structure", "ServiceRequest.extension[0].value[x]")]),
    ("extension slice max 1", "test-referral", lambda r: r["extension"].append(copy.deepcopy(r["extension"][0])),
     [("structure", f"ServiceRequest.extension('{SD}/ext-test-closure')")]),
    # nested backbone elements: min/max counted per enclosing instance
    ("productOrService missing in the second item", "test-authorization",
     lambda r: r["insurance"][0]["item"][1].pop("productOrService"),
     [("required", "CoverageEligibilityResponse.insurance[0].item[1].productOrService")]),
    ("a second insurance without items", "test-authorization",
     lambda r: r["insurance"].append({"coverage": {"reference": "Coverage/c2"}, "benefitPeriod": {"start": "2024"}}),
     [("required", "CoverageEligibilityResponse.insurance[1].item")]),
    ("two codings where the profile allows one", "test-authorization",
     lambda r: r["insurance"][0]["item"][0]["productOrService"]["coding"].append({"system": HCPCS, "code": "G9012"}),
     [("structure", "CoverageEligibilityResponse.insurance[0].item[0].productOrService.coding")]),
    ("value set import minus exclude", "test-authorization",
     lambda r: r["insurance"][0]["item"][0]["productOrService"]["coding"][0].update(code="H0043"),
     [("code-invalid", "CoverageEligibilityResponse.insurance[0].item[0].productOrService")]),
    ("required extension missing", "test-authorization", lambda r: r["extension"].pop(0),
     [("required", f"CoverageEligibilityResponse.extension('{EXT_DECISION}')")]),
    ("extension CodeableConcept outside its value set", "test-authorization",
     lambda r: r["extension"][0]["valueCodeableConcept"]["coding"][0].update(code="Z9"),
     [("code-invalid", "CoverageEligibilityResponse.extension[0].valueCodeableConcept")]),
    ("maxValue of an extension value", "test-authorization", lambda r: r["extension"][1].update(valuePositiveInt=97),
     [("value", "CoverageEligibilityResponse.extension[1].valuePositiveInt")]),
    ("invariant", "test-authorization", lambda r: r.pop("preAuthRef"),
     [("invariant", "CoverageEligibilityResponse")]),
]  # fmt: skip


@pytest.mark.parametrize(("profile", "mutate", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_violation_has_its_code_and_expression(
    profile: str, mutate: Mutation, expected: list[tuple[str, str]]
) -> None:
    resource = BUILDERS[profile]()
    mutate(resource)
    assert check(resource, profile) == expected
    for issue in validate_against_profile(resource, f"{SD}/{profile}", profiles=PROFILES):
        assert issue.severity == "error"
        assert issue.diagnostics.startswith(f"{issue.expression[0]}: ")
        assert f"profile {SD}/{profile}" in issue.diagnostics


def test_issues_inside_an_extension_name_the_extension() -> None:
    resource = authorization()
    resource["extension"][0]["valueCodeableConcept"]["coding"][0]["code"] = "Z9"
    (issue,) = validate_against_profile(resource, f"{SD}/test-authorization", profiles=PROFILES)
    assert f"extension {EXT_DECISION} in profile {SD}/test-authorization" in issue.diagnostics
    assert f"{X12}|Z9 is not in the required value set {IG}/ValueSet/test-decision" in issue.diagnostics
    assert "(one of: A1, A2, A3, A4, A6, C)" in issue.diagnostics


def test_pattern_is_a_subset_match() -> None:
    resource = referral()
    resource["category"][0]["coding"].insert(0, {"system": "http://example.org/local", "code": "ref"})
    assert check(resource, "test-referral") == []


def test_invariant_passes_when_its_alternative_holds() -> None:
    resource = authorization()
    del resource["preAuthRef"]
    resource["outcome"] = "error"
    assert check(resource, "test-authorization") == []


def test_a_primitive_with_only_extensions_counts_as_present() -> None:
    resource = member()
    del resource["birthDate"]
    resource["_birthDate"] = {"extension": [{"url": "http://example.org/unknown", "valueString": "masked"}]}
    assert check(resource, "test-member") == []
    del resource["_birthDate"]
    assert check(resource, "test-member") == [("required", "Patient.birthDate")]


def test_derived_profile_checks_its_base_too() -> None:
    resource = member()
    resource["meta"]["profile"] = [f"{SD}/test-member-strict"]
    del resource["identifier"][0]
    issues = validate_against_profile(resource, f"{SD}/test-member-strict", profiles=PROFILES)
    assert [(i.code, i.expression[0]) for i in issues] == [
        ("required", f"Patient.identifier.where(system = '{CIN}')"),
        ("required", "Patient.telecom"),
    ]
    assert f"base {SD}/test-member" in issues[0].diagnostics


def test_wrong_resource_type_for_the_profile() -> None:
    assert check(member(), "test-referral") == [("invalid", "resourceType")]


def test_versioned_profile_url() -> None:
    resource = member()
    del resource["name"]
    assert validate_against_profile(resource, f"{SD}/test-member|0.1.0", profiles=PROFILES)
    (issue,) = validate_against_profile(resource, f"{SD}/test-member|9.9.9", profiles=PROFILES)
    assert issue.code == "not-supported" and "unknown profile" in issue.diagnostics


# --- meta.profile in validate_resource ------------------------------------------------------------


def test_claimed_profile_errors_come_from_validate_resource() -> None:
    resource = member()
    resource["identifier"].pop(0)
    issues = validate_resource(resource, profiles=PROFILES)
    assert [(i.severity, i.code, i.expression) for i in issues] == [
        ("error", "required", (f"Patient.identifier.where(system = '{CIN}')",))
    ]


def test_unknown_claimed_profile_is_a_warning_and_base_is_silent() -> None:
    resource = member()
    resource["meta"]["profile"] = [
        "http://hl7.org/fhir/StructureDefinition/Patient",
        "http://example.org/StructureDefinition/other",
    ]
    del resource["identifier"]  # no claimed profile of the set: nothing requires it
    issues = validate_resource(resource, profiles=PROFILES)
    assert [(i.severity, i.code, i.expression) for i in issues] == [
        ("warning", "not-supported", ("Patient.meta.profile[1]",))
    ]
    validation.ensure_valid(resource)  # a warning does not stop a write


def test_resources_without_meta_profile_skip_profile_work(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*_args: Any, **_kwargs: Any) -> list[Issue]:
        raise AssertionError("profile checks ran for a resource claiming no profile")

    monkeypatch.setattr(validation, "claimed_profile_issues", fail)
    resource = member()
    del resource["meta"]
    assert validate_resource(resource, profiles=PROFILES) == []


# --- profiles that cannot be interpreted: explicit errors, never a silent pass ----------------------


def _profile(elements: list[JSONObject], type_name: str = "Patient", **extra: Any) -> JSONObject:
    return {
        "resourceType": "StructureDefinition",
        "url": f"{IG}/StructureDefinition/broken",
        "name": "Broken",
        "status": "draft",
        "kind": "resource",
        "abstract": False,
        "type": type_name,
        "baseDefinition": f"http://hl7.org/fhir/StructureDefinition/{type_name}",
        "derivation": "constraint",
        "differential": {"element": elements},
        **extra,
    }


BROKEN: list[tuple[str, JSONObject, str]] = [
    ("unknown element", _profile([{"path": "Patient.nickname", "min": 1}]), "Patient has no element nickname"),
    ("unsupported key", _profile([{"path": "Patient.link", "contentReference": "#Patient.contact"}]),
     "contentReference is not supported"),
    ("type not in base", _profile([{"path": "Patient.deceased[x]", "type": [{"code": "string"}]}]),
     "type string is not allowed"),
    ("unknown value set", _profile([{"path": "Patient.gender", "binding": {"strength": "required",
                                                                          "valueSet": f"{IG}/ValueSet/nope"}}]),
     "ValueSet https://test.example/fhir/ValueSet/nope is unknown"),
    ("binding without a code", _profile([{"path": "Patient.birthDate", "binding": {"strength": "required",
                                                                                   "valueSet": "x"}}]),
     "no code to check"),
    ("slices without slicing", _profile([{"path": "Patient.identifier", "sliceName": "cin", "min": 1}]),
     "has slices but no slicing"),
    ("type discriminator", _profile([
        {"path": "Patient.identifier", "slicing": {"discriminator": [{"type": "type", "path": "$this"}]}}]),
     "discriminator type on $this is not supported"),
    ("slice without a discriminating value", _profile([
        {"path": "Patient.identifier", "slicing": {"discriminator": [{"type": "value", "path": "system"}]}},
        {"path": "Patient.identifier", "sliceName": "cin", "min": 1}]),
     "no fixed or pattern value at system"),
    ("unknown extension definition", _profile([
        {"path": "Patient.extension", "sliceName": "x",
         "type": [{"code": "Extension", "profile": [f"{IG}/StructureDefinition/ext-nope"]}]}]),
     "profile https://test.example/fhir/StructureDefinition/ext-nope of type Extension is unknown"),
    ("unknown target profile", _profile([
        {"path": "Patient.generalPractitioner",
         "type": [{"code": "Reference", "targetProfile": [f"{IG}/StructureDefinition/nope"]}]}]),
     "targetProfile https://test.example/fhir/StructureDefinition/nope is unknown"),
    ("reslicing", _profile([
        {"path": "Patient.identifier", "slicing": {"discriminator": [{"type": "value", "path": "system"}]}},
        {"id": "Patient.identifier:a/b", "path": "Patient.identifier", "sliceName": "a/b"}]),
     "reslicing"),
    ("invariant outside the FHIRPath subset", _profile([
        {"path": "Patient", "constraint": [{"key": "x-1", "severity": "error", "human": "h",
                                            "expression": "name.count() > 1"}]}]),
     "constraint x-1"),
    ("children of a many-typed element", _profile([{"path": "Patient.deceased[x].id", "min": 1}]),
     "has several types"),
    ("specialization", _profile([], derivation="specialization"), "derivation 'constraint'"),
    ("unknown base", _profile([], baseDefinition=f"{IG}/StructureDefinition/nope"), "is neither"),
]  # fmt: skip


@pytest.mark.parametrize(("definition", "reason"), [c[1:] for c in BROKEN], ids=[c[0] for c in BROKEN])
def test_profiles_that_cannot_be_interpreted_are_errors(definition: JSONObject, reason: str) -> None:
    profiles = ProfileSet([definition], source="test")
    url = definition["url"]
    with pytest.raises(ProfileError) as caught:
        profiles.compile(url)
    assert reason in str(caught.value)
    (issue,) = validate_against_profile(member(), url, profiles=profiles)
    assert (issue.severity, issue.code) == ("error", "not-supported")
    assert reason in issue.diagnostics
    with pytest.raises(ProfileError):
        profiles.compile(url)  # the failure is cached, not retried


def test_a_broken_extension_breaks_the_profile_using_it() -> None:
    extension = _profile(
        [{"path": "Extension.value[x]", "type": [{"code": "Coding"}], "binding": {"strength": "required",
                                                                                 "valueSet": "urn:nope"}}],
        type_name="Extension",
        url=f"{IG}/StructureDefinition/ext-broken",
        kind="complex-type",
    )  # fmt: skip
    profile = _profile(
        [
            {
                "path": "Patient.extension",
                "sliceName": "b",
                "type": [{"code": "Extension", "profile": [extension["url"]]}],
            }
        ]
    )
    with pytest.raises(ProfileError, match=r"uses .*ext-broken, which cannot be checked"):
        ProfileSet([extension, profile]).compile(profile["url"])


def test_unknown_profile() -> None:
    (issue,) = validate_against_profile(member(), f"{IG}/StructureDefinition/nope", profiles=PROFILES)
    assert issue.code == "not-supported" and "unknown profile" in issue.diagnostics


def test_duplicate_urls_are_refused() -> None:
    definition = _profile([])
    with pytest.raises(ProfileError, match="two StructureDefinitions"):
        ProfileSet([definition, definition])


# --- more slicing: pattern on $this, exists, ordered, type slices of a choice ------------------------


def test_pattern_slicing_on_this_and_closed_rules() -> None:
    coding = {"system": f"{IG}/CodeSystem/kind", "code": "ecm"}
    definition = _profile(
        [
            {"path": "Patient.maritalStatus"},
            {"path": "Patient.communication.language", "slicing": {
                "discriminator": [{"type": "pattern", "path": "$this"}], "rules": "closed"}},
            {"path": "Patient.communication.language", "sliceName": "ecm", "min": 1,
             "patternCodeableConcept": {"coding": [coding]}},
        ]
    )  # fmt: skip
    # language is 1..1 in R4: slicing a single element still assigns its one value to a slice
    profiles = ProfileSet([definition])
    ok = {"resourceType": "Patient", "communication": [{"language": {"coding": [coding], "text": "ECM"}}]}
    assert validate_against_profile(ok, definition["url"], profiles=profiles) == []
    bad = {"resourceType": "Patient", "communication": [{"language": {"coding": [{**coding, "code": "cs"}]}}]}
    found = [(i.code, i.expression[0]) for i in validate_against_profile(bad, definition["url"], profiles=profiles)]
    assert found == [
        ("structure", "Patient.communication[0].language"),
        ("required", "Patient.communication[0].language"),
    ]


def test_exists_discriminator_and_ordered_slices() -> None:
    definition = _profile(
        [
            {"path": "Patient.telecom", "slicing": {
                "discriminator": [{"type": "exists", "path": "period"}], "ordered": True}},
            {"path": "Patient.telecom", "sliceName": "current", "max": "1"},
            {"path": "Patient.telecom.period", "max": "0"},
            {"path": "Patient.telecom", "sliceName": "past"},
            {"path": "Patient.telecom.period", "min": 1},
        ]
    )  # fmt: skip
    profiles = ProfileSet([definition])
    current = {"system": "phone", "value": "555-0100"}
    past = {"system": "phone", "value": "555-0199", "period": {"end": "2020-01-01"}}
    ok = {"resourceType": "Patient", "telecom": [current, past, past]}
    assert validate_against_profile(ok, definition["url"], profiles=profiles) == []
    bad = {"resourceType": "Patient", "telecom": [past, current, current]}
    found = [(i.code, i.expression[0]) for i in validate_against_profile(bad, definition["url"], profiles=profiles)]
    assert found == [("structure", "Patient.telecom"), ("structure", "Patient.telecom")]


def test_type_slice_of_a_choice() -> None:
    definition = _profile(
        [
            {"path": "Patient.deceased[x]", "slicing": {"discriminator": [{"type": "type", "path": "$this"}]}},
            {"id": "Patient.deceased[x]:deceasedBoolean", "path": "Patient.deceased[x]",
             "sliceName": "deceasedBoolean", "fixedBoolean": False},
        ]
    )  # fmt: skip
    profiles = ProfileSet([definition])
    assert validate_against_profile({"resourceType": "Patient", "deceasedBoolean": False}, definition["url"],
                                    profiles=profiles) == []  # fmt: skip
    (issue,) = validate_against_profile(
        {"resourceType": "Patient", "deceasedBoolean": True}, definition["url"], profiles=profiles
    )
    assert (issue.code, issue.expression) == ("value", ("Patient.deceasedBoolean",))
    assert (
        validate_against_profile(
            {"resourceType": "Patient", "deceasedDateTime": "2024"}, definition["url"], profiles=profiles
        )
        == []
    )


def test_elements_without_ids_are_placed_by_path_and_slice_name() -> None:
    compiled = PROFILES.compile(f"{SD}/test-referral")  # written without ids
    closure = compiled.root.children["extension"].slices["closure"]
    assert closure.profiles == {"extension": (f"{SD}/ext-test-closure",)}
    assert compiled.root.children["intent"].fixed == "order"


def test_several_type_profiles_mean_any_of_them() -> None:
    def extension(name: str, value_type: str) -> JSONObject:
        url = f"{IG}/StructureDefinition/{name}"
        elements: list[JSONObject] = [
            {"path": "Extension.url", "fixedUri": url},
            {"path": "Extension.value[x]", "min": 1, "type": [{"code": value_type}]},
        ]
        return _profile(elements, type_name="Extension", url=url, kind="complex-type")

    one, other = extension("ext-one", "string"), extension("ext-other", "boolean")
    definition = _profile(
        [{"path": "Patient.extension", "type": [{"code": "Extension", "profile": [one["url"], other["url"]]}]}]
    )
    profiles = ProfileSet([one, other, definition])
    as_one = {"resourceType": "Patient", "extension": [{"url": one["url"], "valueString": "x"}]}
    assert validate_against_profile(as_one, definition["url"], profiles=profiles) == []
    neither = {"resourceType": "Patient", "extension": [{"url": one["url"], "valueInteger": 1}]}
    found = [(i.code, i.expression[0]) for i in validate_against_profile(neither, definition["url"], profiles=profiles)]
    assert found[0] == ("structure", "Patient.extension[0]")
    assert ("structure", "Patient.extension[0].valueInteger") in found
