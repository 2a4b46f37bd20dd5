"""The CalAIM guide's profiles (profiles/calaim/) as the gateway checks them: gateway/fhir/profiles.py.

examples/calaim-profile-examples.json holds one synthetic resource per CalAIM profile, claiming it in
``meta.profile``; each must pass ``validate_resource`` (base R4 and the profile), and each broken copy
must fail with the issue code and expression named here.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.fhir.profiles import CALAIM_DIR, default_profiles, validate_against_profile
from gateway.fhir.resource_types import SERVED_TYPE_SET
from gateway.fhir.validation import validate_resource
from gateway.types import JSONObject

IG = "https://fhir.calaim-gateway.org"
SD = f"{IG}/StructureDefinition"
EXAMPLES_FILE = Path(__file__).parent / "examples" / "calaim-profile-examples.json"
EXAMPLES: dict[str, JSONObject] = {
    entry["resource"]["meta"]["profile"][0].rsplit("/", 1)[1]: entry["resource"]
    for entry in json.loads(EXAMPLES_FILE.read_text())["entry"]
}
PROFILE_FILES = sorted(CALAIM_DIR.glob("structuredefinition-*.json"))


def example(profile: str) -> JSONObject:
    """A deep copy of the example claiming ``profile`` (``calaim-member``, ...)."""
    return copy.deepcopy(EXAMPLES[profile])


@pytest.mark.parametrize("path", PROFILE_FILES, ids=lambda p: p.stem)
def test_every_calaim_structure_definition_compiles(path: Path) -> None:
    url = json.loads(path.read_text())["url"]
    compiled = default_profiles().compile(url)
    assert compiled.url == url


def test_every_calaim_profile_has_an_example_of_a_served_type() -> None:
    profiles = default_profiles()
    resource_profiles = {url.rsplit("/", 1)[1] for t in SERVED_TYPE_SET for url in profiles.profiles_for(t)}
    assert resource_profiles == set(EXAMPLES)
    assert len(resource_profiles) == 11


@pytest.mark.parametrize("profile", sorted(EXAMPLES))
def test_each_example_conforms(profile: str) -> None:
    resource = example(profile)
    assert validate_resource(resource) == []
    assert validate_against_profile(resource, f"{SD}/{profile}") == []


Mutation = Callable[[JSONObject], Any]
CIN = f"{IG}/sid/medi-cal-cin"
HCPCS = "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
CASES: list[tuple[str, str, Mutation, list[tuple[str, str]]]] = [
    ("member without CIN", "calaim-member", lambda r: r["identifier"].pop(0),
     [("required", f"Patient.identifier.where(system = '{CIN}')")]),
    ("member CIN without value", "calaim-member", lambda r: r["identifier"][0].pop("value"),
     [("required", "Patient.identifier[0].value")]),
    ("member POF outside the value set", "calaim-member",
     lambda r: r["extension"][0]["valueCoding"].update(code="11"),
     [("code-invalid", "Patient.extension[0].valueCoding")]),
    ("coverage with two payors", "calaim-coverage",
     lambda r: r["payor"].append({"reference": "Organization/other"}), [("structure", "Coverage.payor")]),
    ("coverage health network not an Organization", "calaim-coverage",
     lambda r: r["extension"][0]["valueReference"].update(reference="Patient/p1"),
     [("value", "Coverage.extension[0].valueReference")]),
    ("referral for a service outside CalAIM", "calaim-referral",
     lambda r: r["code"]["coding"][0].update(code="dental"), [("code-invalid", "ServiceRequest.code")]),
    ("referral intent other than order", "calaim-referral", lambda r: r.update(intent="plan"),
     [("value", "ServiceRequest.intent")]),
    ("referral without authoredOn", "calaim-referral", lambda r: r.pop("authoredOn"),
     [("required", "ServiceRequest.authoredOn")]),
    ("task status without its date", "calaim-referral-task", lambda r: r["extension"][0]["extension"].pop(1),
     [("required", "Task.extension[0].extension"), ("required", "Task.extension[0].extension('date')")]),
    ("task status outside the DHCS values", "calaim-referral-task",
     lambda r: r["extension"][0]["extension"][0]["valueCoding"].update(code="lost"),
     [("code-invalid", "Task.extension[0].extension[0].valueCoding")]),
    ("task without referral status", "calaim-referral-task", lambda r: r.pop("extension"),
     [("required", f"Task.extension('{SD}/ext-referral-status')")]),
    ("request modifier outside DHCS", "calaim-authorization-request",
     lambda r: r["item"][0]["modifier"][0]["coding"][0].update(code="U9"),
     [("code-invalid", "CoverageEligibilityRequest.item[0].modifier[0]")]),
    ("authorization without decision", "calaim-authorization", lambda r: r["extension"].pop(0),
     [("required", f"CoverageEligibilityResponse.extension('{SD}/ext-authorization-decision')")]),
    ("authorization decision outside X12 306 subset", "calaim-authorization",
     lambda r: r["extension"][0]["valueCodeableConcept"]["coding"][0].update(code="A5"),
     [("code-invalid", "CoverageEligibilityResponse.extension[0].valueCodeableConcept")]),
    ("authorization HCPCS outside DHCS", "calaim-authorization",
     lambda r: r["insurance"][0]["item"][0]["productOrService"]["coding"][0].update(code="99213"),
     [("code-invalid", "CoverageEligibilityResponse.insurance[0].item[0].productOrService")]),
    ("authorization item without category", "calaim-authorization",
     lambda r: r["insurance"][0]["item"][0].pop("category"),
     [("required", "CoverageEligibilityResponse.insurance[0].item[0].category")]),
    ("authorization units not an unsignedInt", "calaim-authorization",
     lambda r: r["insurance"][0]["item"][0]["extension"][0].update(valueUnsignedInt=None, valueDecimal=1.5)
     or r["insurance"][0]["item"][0]["extension"][0].pop("valueUnsignedInt"),
     [("structure", "CoverageEligibilityResponse.insurance[0].item[0].extension[0].valueDecimal"),
      ("required", "CoverageEligibilityResponse.insurance[0].item[0].extension[0].value[x]")]),
    ("authorization without number", "calaim-authorization", lambda r: r.pop("preAuthRef"),
     [("required", "CoverageEligibilityResponse.preAuthRef")]),
    ("care plan not ECM", "calaim-care-plan", lambda r: r["category"][0]["coding"][0].update(code="respite-services"),
     [("required", "CarePlan.category")]),
    ("care team without lead care manager", "calaim-care-team",
     lambda r: r["participant"][0]["role"][0]["coding"][0].update(code="care-team-member"),
     [("required", "CareTeam.participant")]),
    ("enrollment without period", "calaim-enrollment", lambda r: r.pop("period"),
     [("required", "EpisodeOfCare.period")]),
    ("procedure without units", "calaim-service-procedure", lambda r: r.pop("extension"),
     [("required", f"Procedure.extension('{SD}/ext-service-units')")]),
    ("encounter for a Group", "calaim-service-encounter", lambda r: r["subject"].update(reference="Group/g1"),
     [("value", "Encounter.subject")]),
]  # fmt: skip


@pytest.mark.parametrize(("profile", "mutate", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_broken_example_fails_where_it_breaks(
    profile: str, mutate: Mutation, expected: list[tuple[str, str]]
) -> None:
    resource = example(profile)
    mutate(resource)
    issues = validate_against_profile(resource, f"{SD}/{profile}")
    assert [(i.code, i.expression[0]) for i in issues] == expected
    assert all(f"profile {SD}/{profile}" in i.diagnostics for i in issues)
    # validate_resource (the write path) reports them for the claimed profile, after any base R4 issue
    assert validate_resource(resource)[-len(issues) :] == issues


def test_supported_profiles_per_type() -> None:
    profiles = default_profiles()
    assert profiles.profiles_for("Patient") == [f"{SD}/calaim-member"]
    assert profiles.profiles_for("CoverageEligibilityResponse") == [f"{SD}/calaim-authorization"]
    assert profiles.profiles_for("Extension") == []  # extension definitions are not resource profiles
    assert profiles.profiles_for("Organization") == []
