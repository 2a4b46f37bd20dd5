"""The CalAIM implementation guide (profiles/calaim) and the Orange County configuration (profiles/orange-county).

Each file must be a valid R4 resource (the official JSON schema; served types also through the gateway's
own validator), follow docs/calaim-ig.md, and agree with ../shared/calaim/REFERENCE.md: the expected
tables below are copied from it by hand, so a change to the data that drifts from the reference fails here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]  # no stubs in the locked dev group
import pytest

from gateway.calaim.config import (
    HCPCS_SYSTEM,
    IG_BASE,
    MODIFIER_PROPERTY,
    POF_SYSTEM,
    SERVICE_SYSTEM,
    ImplementationGuide,
    PlanConfig,
    expand,
    load_ig,
    load_organizations,
    load_plan,
    organization_types,
    plan_problems,
    service_hcpcs,
)
from gateway.fhir.resource_types import SERVED_TYPE_SET
from gateway.fhir.validation import validate_resource
from gateway.search.extract import COLUMNS, extract
from gateway.search.extractors import extractor_for
from gateway.search.fhirpath import compile_expression
from gateway.search.fhirpath_model import ELEMENTS_FILE
from gateway.search.registry import default_registry

ROOT = Path(__file__).resolve().parents[2]
IG_DIR = ROOT / "profiles" / "calaim"
OC_DIR = ROOT / "profiles" / "orange-county"
SCHEMA_FILE = ROOT / "profiles" / "r4" / "fhir.schema.json"
IG_FILES = sorted(IG_DIR.glob("*.json"))
FHIR_FILES = [*IG_FILES, OC_DIR / "organizations.json"]
PUBLISHER = "CalAIM gateway project"
CORE = "http://hl7.org/fhir/StructureDefinition/"

PROFILES = {
    "calaim-member": "Patient",
    "calaim-coverage": "Coverage",
    "calaim-referral": "ServiceRequest",
    "calaim-referral-task": "Task",
    "calaim-authorization-request": "CoverageEligibilityRequest",
    "calaim-authorization": "CoverageEligibilityResponse",
    "calaim-care-plan": "CarePlan",
    "calaim-care-team": "CareTeam",
    "calaim-enrollment": "EpisodeOfCare",
    "calaim-service-procedure": "Procedure",
    "calaim-service-encounter": "Encounter",
}
"""docs/calaim-ig.md: profile name -> resource type."""

EXTENSIONS = {
    "ext-authorization-decision",
    "ext-responsible-party",
    "ext-authorization-kind",
    "ext-authorized-units",
    "ext-answers-referral",
    "ext-notice-of-action-owner",
    "ext-pof",
    "ext-health-network",
    "ext-trusted-presumptive-provider",
    "ext-service-units",
    "ext-referral-status",
    "ext-loop-closure-reason",
}

POFS = ["1a", "1b", "2", "3", "4", "5", "6", "7", "8", "9", "10"]

# REFERENCE.md section 3: service -> (plan offers from, {(HCPCS, modifier)}); ECM: G9008/G9012 with U1, U2, U8.
CS_TABLE: dict[str, tuple[str, set[tuple[str, str]]]] = {
    "housing-transition-navigation": ("2022-01-01", {("H0043", "U6"), ("H2016", "U6")}),
    "housing-deposits": ("2022-01-01", {("H0044", "U2")}),
    "housing-tenancy-sustaining": ("2022-01-01", {(c, "U6") for c in ("T2040", "T2041", "T2050", "T2051")}),
    "recuperative-care": ("2022-01-01", {("T2033", "U6")}),
    "short-term-post-hospitalization-housing": ("2022-07-01", {("H0043", "U3"), ("H0044", "U3")}),
    "day-habilitation": (
        "2022-07-01",
        {(c, "U6") for c in ("T2012", "T2014", "T2018", "T2020", "H2014", "H2024", "H2026", "H2038")},
    ),
    "personal-care-homemaker": ("2022-07-01", {("S5130", "U6"), ("T1019", "U6")}),
    "medically-tailored-meals": ("2022-07-01", {(c, "U6") for c in ("S5170", "S9470", "S9977")}),
    "sobering-centers": ("2022-07-01", {("H0014", "U6")}),
    "respite-services": ("2023-01-01", {(c, "U6") for c in ("H0045", "S5151", "S9125")}),
    "assisted-living-transition": ("2023-01-01", {("T2038", "U4"), ("H2022", "U5")}),
    "community-transition": ("2023-01-01", {("T2038", "U5")}),
    "environmental-accessibility-adaptations": ("2023-01-01", {("S5165", "U6")}),
    "asthma-remediation": ("2023-01-01", {("S5165", "U5")}),
}
ECM_HCPCS = {(c, m) for c in ("G9008", "G9012") for m in ("U1", "U2", "U8")}

HEALTH_NETWORKS = {
    "AltaMed Health Services",
    "AMVI Medical Group",
    "CalOptima Health Community Network",
    "CHOC Health Alliance",
    "Family Choice Medical Group",
    "Noble Mid-Orange County",
    "Optum Care Network-Arta",
    "Optum Care Network-Monarch",
    "Optum Care Network-Talbert",
    "Prospect Medical Group",
    "United Care Medical Group",
}
CS_PROVIDERS = {
    "American Family Housing",
    "Blue Sky Manor",
    "Community Action Partnership of Orange County",
    "Friendship Shelter",
    "Jamboree Housing",
    "Lutheran Social Services of Southern California",
    "Mercy House",
    "Volunteers of America Los Angeles",
}


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _url(name: str, kind: str) -> str:
    return f"{IG_BASE}/{kind}/{name}"


@pytest.fixture(scope="module")
def schema_validators() -> dict[str, jsonschema.Draft6Validator]:
    """One Draft 6 validator per resource type over the official R4 schema (built once per module)."""
    if not SCHEMA_FILE.is_file():
        pytest.skip(f"the R4 JSON schema is not at {SCHEMA_FILE}")
    definitions = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))["definitions"]
    types = {_load(path)["resourceType"] for path in FHIR_FILES}
    return {t: jsonschema.Draft6Validator({"$ref": f"#/definitions/{t}", "definitions": definitions}) for t in types}


@pytest.fixture(scope="module")
def ig() -> ImplementationGuide:
    load_ig.cache_clear()
    return load_ig()


@pytest.fixture(scope="module")
def plan() -> PlanConfig:
    load_plan.cache_clear()
    return load_plan()


@pytest.fixture(scope="module")
def organizations() -> dict[str, dict[str, Any]]:
    load_organizations.cache_clear()
    return {str(o["id"]): o for o in load_organizations()}


# ----------------------------------------------------------------------------- R4 validity


@pytest.mark.parametrize("path", FHIR_FILES, ids=lambda p: p.name)
def test_file_is_valid_r4_json(path: Path, schema_validators: dict[str, jsonschema.Draft6Validator]) -> None:
    resource = _load(path)
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message[:200]}"
        for e in schema_validators[resource["resourceType"]].iter_errors(resource)
    ]
    assert errors == []


def test_organizations_pass_the_gateway_validator(organizations: dict[str, dict[str, Any]]) -> None:
    assert "Organization" in SERVED_TYPE_SET
    for org in organizations.values():
        assert validate_resource(org, resource_type="Organization") == [], org["id"]


# ----------------------------------------------------------------------------- docs/calaim-ig.md conventions


@pytest.mark.parametrize("path", IG_FILES, ids=lambda p: p.name)
def test_names_and_urls_follow_the_conventions(path: Path) -> None:
    resource = _load(path)
    rtype, rid = resource["resourceType"], resource["id"]
    assert path.name == f"{rtype.lower()}-{rid}.json"
    assert resource["status"] == "active"
    assert resource["publisher"] == PUBLISHER
    if rtype == "NamingSystem":  # R4 NamingSystem has no url or version: its uniqueId is the identifier system
        assert [u["value"] for u in resource["uniqueId"]] == [f"{IG_BASE}/sid/{rid}"]
        return
    assert resource["url"] == _url(rid, rtype)
    assert resource["version"] == "0.1.0"
    if rtype == "StructureDefinition":
        assert resource["fhirVersion"] == "4.0.1"
        assert resource["derivation"] == "constraint"
        if resource["type"] == "Extension":
            assert rid in EXTENSIONS
        else:
            assert PROFILES[rid] == resource["type"]
            assert resource["baseDefinition"] == CORE + resource["type"]
    if rtype == "SearchParameter":
        assert resource["base"] == [rid.split("-", 1)[0]]
        assert rid == f"{resource['base'][0]}-{resource['code']}"


def test_the_ig_has_every_named_profile_extension_and_code_system(ig: ImplementationGuide) -> None:
    sds = ig.structure_definitions
    assert {url.rsplit("/", 1)[1] for url, sd in sds.items() if sd.type != "Extension"} == set(PROFILES)
    assert {url.rsplit("/", 1)[1] for url, sd in sds.items() if sd.type == "Extension"} == EXTENSIONS
    names = {"pof", "calaim-service", "referral-status", "loop-closure-reason", "responsible-party"}
    names |= {"authorization-kind", "care-team-role", "organization-type"}
    assert set(ig.code_systems) == {_url(n, "CodeSystem") for n in names}
    naming = {r["uniqueId"][0]["value"] for r in ig.of_type("NamingSystem").values()}
    assert naming == {
        f"{IG_BASE}/sid/{n}"
        for n in ("medi-cal-cin", "plan-member-id", "authorization-number", "referral-id", "decision-request-id")
    }
    operations = {r["code"]: r for r in ig.of_type("OperationDefinition").values()}
    assert set(operations) == {"decide", "submit", "ecm-activity"}
    assert operations["decide"]["resource"] == ["ServiceRequest"] and operations["decide"]["instance"]
    assert operations["submit"]["resource"] == ["CoverageEligibilityRequest"] and operations["submit"]["type"]
    assert operations["ecm-activity"]["system"] and not operations["ecm-activity"]["affectsState"]


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def test_no_dangling_ig_urls(ig: ImplementationGuide) -> None:
    """Every ``{ig}/...`` URL in the IG and the plan files names a resource of the IG (or an identifier system)."""
    systems = {r["uniqueId"][0]["value"] for r in ig.of_type("NamingSystem").values()}
    documents: list[Any] = [*ig.resources.values(), _load(OC_DIR / "organizations.json"), _load(OC_DIR / "plan.json")]
    dangling = set()
    for text in (s for doc in documents for s in _strings(doc)):
        for word in text.split():
            if word.startswith(IG_BASE + "/"):
                url = word.split("#", 1)[0].rstrip(".,;:)'")
                if url not in ig.resources and url not in systems:
                    dangling.add(url)
    assert dangling == set()


# ----------------------------------------------------------------------------- terminology


def test_every_value_set_expands(ig: ImplementationGuide) -> None:
    for url, value_set in ig.value_sets.items():
        pairs = ig.expand(url)
        assert pairs, url
        for include in value_set.compose.include:
            if include.system is not None and include.system in ig.code_systems and include.concept:
                assert {c.code for c in include.concept} <= ig.codes(include.system), url
    assert expand(_url("authorization-decision", "ValueSet")) == {
        ("https://codesystem.x12.org/005010/306", c) for c in ("A1", "A2", "A3", "A4", "A6", "C")
    }


def test_code_systems(ig: ImplementationGuide) -> None:
    for url, code_system in ig.code_systems.items():
        raw = ig.resources[url]
        codes = [c.code for c in code_system.concept]
        assert len(codes) == len(set(codes)) == raw["count"], url
        assert raw["content"] == "complete" and raw["valueSet"] == url.replace("/CodeSystem/", "/ValueSet/")
        assert all(c.display for c in code_system.concept), url
    assert [c.code for c in ig.code_systems[POF_SYSTEM].concept] == POFS
    services = ig.code_systems[SERVICE_SYSTEM].concepts()
    assert set(services) == {"ecm", *CS_TABLE}
    assert services["ecm"].prop("category") == "ecm" and services["ecm"].prop("housing") is None
    for code in CS_TABLE:
        assert services[code].prop("category") == "community-support"
        assert isinstance(services[code].prop("housing"), bool), code
    assert services["housing-deposits"].prop("housing") is True
    assert services["sobering-centers"].prop("housing") is False
    assert {c.code for c in ig.code_systems[_url("referral-status", "CodeSystem")].concept} == {
        "pending",
        "accepted",
        "declined",
        "outreach-initiated",
        "loop-closed",
    }
    reasons = {c.code for c in ig.code_systems[_url("loop-closure-reason", "CodeSystem")].concept}
    assert {"services-received", "member-declined", "unable-to-contact", "not-eligible"} <= reasons
    assert {"member-moved", "deceased", "other"} <= reasons
    assert ig.codes(_url("responsible-party", "CodeSystem")) == {"hn", "plan"}
    kinds = {"initial", "reauthorization", "presumptive", "modification", "termination"}
    assert ig.codes(_url("authorization-kind", "CodeSystem")) == kinds
    assert "lead-care-manager" in ig.codes(_url("care-team-role", "CodeSystem"))


def test_the_concept_map_is_exactly_the_dhcs_table(ig: ImplementationGuide) -> None:
    expected = {service: pairs for service, (_, pairs) in CS_TABLE.items()} | {"ecm": ECM_HCPCS}
    assert {service: set(service_hcpcs(service)) for service in expected} == expected
    assert service_hcpcs("not-a-service") == frozenset()
    concept_map = ig.concept_maps[_url("service-hcpcs", "ConceptMap")]
    assert {e.code for g in concept_map.group for e in g.element} == set(expected)
    for target in (t for g in concept_map.group for e in g.element for t in e.target):
        assert [p.prop for p in target.product] == [MODIFIER_PROPERTY] and not target.depends_on
    codes = {code for pairs in expected.values() for code, _ in pairs}
    modifiers = {modifier for pairs in expected.values() for _, modifier in pairs}
    assert ig.expand(_url("calaim-hcpcs", "ValueSet")) == {(HCPCS_SYSTEM, c) for c in codes}
    assert ig.expand(_url("calaim-hcpcs-modifier", "ValueSet")) == {(HCPCS_SYSTEM, m) for m in modifiers}
    assert modifiers == {"U1", "U2", "U3", "U4", "U5", "U6", "U8"}
    for service, pairs in expected.items():
        assert ig.expand(_url(f"hcpcs-{service}", "ValueSet")) == {(HCPCS_SYSTEM, c) for c, _ in pairs}, service


# ----------------------------------------------------------------------------- StructureDefinitions


def _r4_tables() -> dict[str, dict[str, dict[str, Any]]]:
    tables: dict[str, dict[str, dict[str, Any]]] = json.loads(ELEMENTS_FILE.read_text(encoding="utf-8"))["types"]
    return tables


def _base_element(tables: dict[str, dict[str, dict[str, Any]]], path: str) -> dict[str, Any]:
    """The R4 definition of a differential path, following datatypes (``Patient.identifier.system``)."""
    parts = path.split(".")
    type_name = prefix = parts[0]
    for i, part in enumerate(parts[1:], start=1):
        key = f"{prefix}.{part}"
        entry = tables[type_name].get(key)
        assert entry is not None, f"{path}: R4 has no {key}"
        if i == len(parts) - 1:
            return entry
        if "ref" in entry:
            prefix = str(entry["ref"])
        elif set(entry["types"]) <= {"BackboneElement", "Element"}:
            prefix = key
        else:
            type_name = prefix = entry["types"][0]
    return {"min": 0, "max": "*", "types": [parts[0]]}


def _max(value: str) -> float:
    return float("inf") if value == "*" else float(value)


def test_structure_definitions_constrain_real_r4_elements(ig: ImplementationGuide) -> None:
    tables = _r4_tables()
    ext_urls = {url for url, sd in ig.structure_definitions.items() if sd.type == "Extension"}
    for url, sd in ig.structure_definitions.items():
        elements = sd.differential.element
        assert elements[0].path == sd.type, url
        assert len({e.id for e in elements}) == len(elements), url
        for element in elements:
            where = f"{url} {element.id}"
            assert element.path == ".".join(part.split(":")[0] for part in element.id.split(".")), where
            assert (element.slice_name is not None) == element.id.split(".")[-1].endswith(f":{element.slice_name}"), (
                where
            )
            base = _base_element(tables, element.path)
            low = base["min"] if element.min is None else element.min
            high = base["max"] if element.max is None else element.max
            assert _max(high) <= _max(base["max"]) and low <= _max(high), where
            if element.slice_name is None:
                assert low >= base["min"], where
            for type_ref in element.type:
                assert type_ref.code in base["types"], where
                for profile in type_ref.profile:
                    assert profile in ext_urls, where
                for target in type_ref.target_profile:
                    assert target.startswith(CORE), where
            if element.binding is not None:
                assert element.binding.value_set in ig.value_sets, where
                assert ig.expand(str(element.binding.value_set)), where
            for found in (element.fixed(), element.pattern()):
                if found is not None and found[0] in ("Coding", "CodeableConcept"):
                    codings = found[1].get("coding", [found[1]])
                    for coding in codings:
                        if coding["system"].startswith(IG_BASE):
                            assert ig.concept(coding["system"], coding["code"]) is not None, where


def test_extension_contexts_and_values(ig: ImplementationGuide) -> None:
    tables = _r4_tables()
    for url, sd in ig.structure_definitions.items():
        if sd.type != "Extension":
            continue
        assert sd.context, url
        for context in sd.context:
            assert context["type"] == "element"
            _base_element(tables, str(context["expression"]) + ".extension")
        by_id = {e.id: e for e in sd.differential.element}
        assert by_id["Extension.url"].fixed() == ("Uri", url)
        value = by_id["Extension.value[x]"]
        if url.endswith("ext-referral-status"):
            assert value.max == "0"
            assert by_id["Extension.extension:status.value[x]"].binding is not None
        else:
            assert value.min == 1 and len(value.type) == 1, url
    # The authorization needs these extension slices with these cardinalities (the workflow relies on them).
    authorization = ig.structure_definitions[_url("calaim-authorization", "StructureDefinition")]
    slices = {e.slice_name: (e.min, e.max) for e in authorization.differential.element if e.slice_name}
    assert slices["decision"] == slices["responsibleParty"] == slices["authorizationKind"] == (1, "1")
    assert slices["answersReferral"] == (1, "1") and slices["authorizedUnits"] == (0, "1")
    member = ig.structure_definitions[_url("calaim-member", "StructureDefinition")]
    cin = {e.id: e for e in member.differential.element}["Patient.identifier:cin.system"]
    assert cin.fixed() == ("Uri", f"{IG_BASE}/sid/medi-cal-cin")


# ----------------------------------------------------------------------------- SearchParameters


SAMPLES: list[tuple[dict[str, Any], str, str, tuple[Any, ...]]] = [
    (
        {
            "resourceType": "Patient",
            "extension": [
                {"url": _url("ext-pof", "StructureDefinition"), "valueCoding": {"system": POF_SYSTEM, "code": "4"}}
            ],
        },
        "pof",
        "token",
        (POF_SYSTEM, "4", None),
    ),
    (
        {
            "resourceType": "Task",
            "extension": [
                {
                    "url": _url("ext-referral-status", "StructureDefinition"),
                    "extension": [
                        {
                            "url": "status",
                            "valueCoding": {"system": _url("referral-status", "CodeSystem"), "code": "accepted"},
                        },
                        {"url": "date", "valueDateTime": "2025-08-01"},
                    ],
                }
            ],
        },
        "referral-status",
        "token",
        (_url("referral-status", "CodeSystem"), "accepted", None),
    ),
    (
        {
            "resourceType": "Coverage",
            "extension": [
                {
                    "url": _url("ext-health-network", "StructureDefinition"),
                    "valueReference": {"reference": "Organization/hn-choc"},
                }
            ],
        },
        "health-network",
        "reference",
        ("Organization", "hn-choc", None, None, None),
    ),
]


def test_search_parameters_compile_and_are_registered() -> None:
    default_registry.cache_clear()
    try:
        registry = default_registry()
        found = sorted(IG_DIR.glob("searchparameter-*.json"))
        assert len(found) >= 7
        for path in found:
            sp = _load(path)
            (base,) = sp["base"]
            compiled = compile_expression(base, sp["expression"])
            assert extractor_for(sp["type"], compiled.types, tuple(sp.get("target", ()))) is not None, sp["id"]
            param = registry.get(base, sp["code"])
            assert param is not None and param.url == sp["url"] and param.type == sp["type"], sp["id"]
        for resource, code, kind, row in SAMPLES:
            rows = [tuple(r[c] for c in COLUMNS[kind]) for r in extract(resource, registry)[kind] if r["param"] == code]
            assert rows == [row], code
    finally:
        default_registry.cache_clear()


# ----------------------------------------------------------------------------- Orange County configuration


def test_plan_uses_only_known_codes_and_organizations(
    ig: ImplementationGuide, plan: PlanConfig, organizations: dict[str, dict[str, Any]]
) -> None:
    assert plan_problems(plan, tuple(organizations.values()), ig) == []


def test_organizations(organizations: dict[str, dict[str, Any]]) -> None:
    by_type: dict[str, set[str]] = {}
    for org in organizations.values():
        for code in organization_types(org):
            by_type.setdefault(code, set()).add(str(org["name"]))
        assert {c["code"] for c in org["meta"]["tag"]} == {"HTEST"}, org["id"]  # synthetic identifiers
        npis = [i["value"] for i in org["identifier"] if i["system"] == "http://hl7.org/fhir/sid/us-npi"]
        assert len(npis) == 1 and npis[0].startswith("1999999"), org["id"]
    assert by_type["plan"] == {"CalOptima Health"}
    assert by_type["health-network"] == HEALTH_NETWORKS
    assert by_type["cs-provider"] == CS_PROVIDERS
    assert {"Libertana Home Health"} | HEALTH_NETWORKS <= by_type["ecm-provider"]
    assert any("Health Care Agency" in name for name in by_type["county"] & by_type["ecm-provider"])
    assert len(organizations) == len({str(o["name"]) for o in organizations.values()})


def test_every_pof_and_community_support_has_a_contracted_provider(plan: PlanConfig) -> None:
    for pof in POFS:
        assert plan.ecm_providers_for(pof), pof
    for service in CS_TABLE:
        assert plan.cs_providers_for(service), service
    assert plan.ecm_providers_for("3") == ("county-hca-bhs",)
    assert plan.ecm_providers_for("6") == ("ecm-libertana",)
    assert len([o for o in plan.ecm_providers_for("1a") if o.startswith("hn-")]) == len(HEALTH_NETWORKS)


def test_presumptive_pof_has_a_trusted_provider(plan: PlanConfig, organizations: dict[str, dict[str, Any]]) -> None:
    trusted_url = _url("ext-trusted-presumptive-provider", "StructureDefinition")

    def trusted(oid: str) -> bool:
        return any(e["url"] == trusted_url and e["valueBoolean"] for e in organizations[oid].get("extension", []))

    assert plan.presumptive.required_for_pofs == ("4",)
    for pof in plan.presumptive.required_for_pofs:
        assert any(trusted(oid) for oid in plan.ecm_providers_for(pof)), pof
    for service in plan.presumptive.encouraged_for_services:
        assert any(trusted(oid) for oid in plan.cs_providers_for(service)), service


def test_plan_policy_matches_the_reference(plan: PlanConfig) -> None:
    assert {c.service: c.offered_from.isoformat() for c in plan.community_supports} == {
        service: offered for service, (offered, _) in CS_TABLE.items()
    }
    assert plan.responsible_party.for_created(date(2022, 12, 31)) == "hn"
    assert plan.responsible_party.for_created(date(2023, 1, 1)) == "plan"
    current = plan.ecm_period(date(2023, 7, 1))
    assert current is not None and (current.initial_months, current.reauthorization_months) == (12, 6)
    earlier = plan.ecm_period(date(2023, 6, 30))
    assert earlier is not None and earlier.reauthorization_months == 6 and earlier.months_are_maximum
    assert plan.ecm_period(date(2021, 12, 31)) is None
    assert (plan.ecm.payment.unit_minutes, plan.ecm.payment.monthly_unit_threshold) == (15, 6)
    assert plan.closed_loop.effective_from == date(2025, 7, 1)
    assert plan.closed_loop.monitored_from == date(2026, 7, 1)
    assert plan.closed_loop.exempt_services == ("sobering-centers",)
    deposits = {o.service: o.not_implied_by for o in plan.own_authorization}
    assert "housing-transition-navigation" in deposits["housing-deposits"]
    assert set(plan.presumptive.encouraged_for_services) == {
        "recuperative-care",
        "short-term-post-hospitalization-housing",
    }
    support = plan.community_support("recuperative-care")
    assert support is not None and support.authorization_months > 0
    assert plan.community_support("ecm") is None


def test_plan_refuses_unknown_keys_and_overlapping_periods(tmp_path: Path) -> None:
    data = _load(OC_DIR / "plan.json")
    data["ecm"]["payment"]["monthlyUnitTreshold"] = 6
    (tmp_path / "plan.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="monthlyUnitTreshold"):
        load_plan(tmp_path)
    del data["ecm"]["payment"]["monthlyUnitTreshold"]
    data["ecm"]["authorizationPeriods"][0]["effectiveTo"] = "2023-07-01"
    (tmp_path / "plan.json").write_text(json.dumps(data))
    load_plan.cache_clear()
    with pytest.raises(ValueError, match="overlap"):
        load_plan(tmp_path)
    load_plan.cache_clear()
