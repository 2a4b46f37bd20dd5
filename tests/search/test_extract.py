"""Search-index extraction (https://hl7.org/fhir/R4/search.html#ptypes) on R4 resources."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

import pytest

from gateway.fhir.resource_types import SERVED_TYPES
from gateway.search.dates import MAX_MICROS, MIN_MICROS, parse_range
from gateway.search.extract import COLUMNS, extract, plan_for
from gateway.search.extractors import implicit_range
from gateway.search.normalize import fold
from gateway.search.registry import INDEXED_TYPES, Registry, default_registry
from gateway.store.schema import INDEX_TABLES

Rows = dict[str, list[dict[str, Any]]]


def rows(result: Rows, kind: str, param: str) -> list[tuple[Any, ...]]:
    """The value columns of ``param``'s rows, as tuples in column order."""
    return [tuple(r[c] for c in COLUMNS[kind]) for r in result[kind] if r["param"] == param]


def params(result: Rows) -> set[str]:
    return {r["param"] for kind_rows in result.values() for r in kind_rows}


# The R4 example Patient (https://hl7.org/fhir/R4/patient-example.json.html), abridged, with meta added.
PATIENT: dict[str, Any] = {
    "resourceType": "Patient",
    "id": "example",
    "meta": {
        "versionId": "3",
        "lastUpdated": "2024-05-01T12:00:00Z",
        "source": "http://hn.example.org/feeds/daily#a1",
        "profile": ["http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient|3.1.1"],
        "security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}],
        "tag": [{"system": "http://example.org/tags", "code": "calaim", "display": "CalAIM Member"}],
    },
    "identifier": [
        {
            "use": "usual",
            "type": {
                "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}],
                "text": "Medical Record",
            },
            "system": "urn:oid:1.2.36.146.595.217.0.1",
            "value": "12345",
        }
    ],
    "active": True,
    "name": [
        {"use": "official", "family": "Chalmers", "given": ["Peter", "James"]},
        {"use": "usual", "given": ["Jim"]},
        {"use": "maiden", "family": "Windsor", "given": ["Peter", "James"], "period": {"end": "2002"}},
    ],
    "telecom": [
        {"use": "home"},
        {"system": "phone", "value": "(03) 5555 6473", "use": "work", "rank": 1},
        {"system": "email", "value": "peter@example.org"},
    ],
    "gender": "male",
    "birthDate": "1974-12-25",
    "deceasedBoolean": False,
    "address": [
        {
            "use": "home",
            "text": "534 Erewhon St PeasantVille, Rainbow, Vic  3999",
            "line": ["534 Erewhon St"],
            "city": "PleasantVille",
            "district": "Rainbow",
            "state": "Vic",
            "postalCode": "3999",
        }
    ],
    "communication": [
        {"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "es", "display": "Español"}], "text": "Spanish"}}
    ],
    "managingOrganization": {"reference": "Organization/1"},
}


def test_patient_tokens() -> None:
    result = extract(PATIENT)
    assert rows(result, "token", "identifier") == [("urn:oid:1.2.36.146.595.217.0.1", "12345", "medical record")]
    assert rows(result, "token", "gender") == [(None, "male", None)]
    assert rows(result, "token", "active") == [(None, "true", None)]
    assert rows(result, "token", "deceased") == [(None, "false", None)]
    # ContactPoint matches on its value; email/phone select by ContactPoint.system.
    assert rows(result, "token", "telecom") == [(None, "(03) 5555 6473", None), (None, "peter@example.org", None)]
    assert rows(result, "token", "email") == [(None, "peter@example.org", None)]
    assert rows(result, "token", "phone") == [(None, "(03) 5555 6473", None)]
    # One row per coding (display folded for :text), one for CodeableConcept.text.
    assert rows(result, "token", "language") == [("urn:ietf:bcp:47", "es", "espanol"), (None, None, "spanish")]
    assert rows(result, "token", "address-use") == [(None, "home", None)]


def test_patient_strings_are_folded_and_kept_exact() -> None:
    result = extract(PATIENT)
    assert rows(result, "string", "family") == [("chalmers", "Chalmers"), ("windsor", "Windsor")]
    assert rows(result, "string", "given") == [("peter", "Peter"), ("james", "James"), ("jim", "Jim")]
    # HumanName: every part is a row; duplicates across names collapse.
    assert rows(result, "string", "name") == [
        ("chalmers", "Chalmers"),
        ("peter", "Peter"),
        ("james", "James"),
        ("jim", "Jim"),
        ("windsor", "Windsor"),
    ]
    assert rows(result, "string", "phonetic") == rows(result, "string", "name")
    assert rows(result, "string", "address") == [
        ("534 erewhon st", "534 Erewhon St"),
        ("pleasantville", "PleasantVille"),
        ("rainbow", "Rainbow"),
        ("vic", "Vic"),
        ("3999", "3999"),
        ("534 erewhon st peasantville, rainbow, vic 3999", "534 Erewhon St PeasantVille, Rainbow, Vic  3999"),
    ]
    assert rows(result, "string", "address-city") == [("pleasantville", "PleasantVille")]
    accented = extract({"resourceType": "Patient", "name": [{"family": "Muñoz  Pérez"}]})
    assert rows(accented, "string", "family") == [("munoz perez", "Muñoz  Pérez")]


def test_patient_dates_references_and_meta() -> None:
    result = extract(PATIENT)
    assert rows(result, "date", "birthdate") == [(157161600000000, 157247999999999)]
    assert rows(result, "reference", "organization") == [("Organization", "1", None, None, None)]
    assert rows(result, "token", "_tag") == [("http://example.org/tags", "calaim", "calaim member")]
    assert rows(result, "token", "_security") == [
        ("http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "R", None)
    ]
    assert rows(result, "uri", "_profile") == [
        ("http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient|3.1.1",)
    ]
    assert rows(result, "uri", "_source") == [("http://hn.example.org/feeds/daily#a1",)]
    # _id and _lastUpdated live in the resource table, not in index rows.
    assert not params(result) & {"_id", "_lastUpdated"}
    assert set(result) == set(INDEXED_TYPES)
    assert all("rid" not in r and "res_type" not in r for kind_rows in result.values() for r in kind_rows)


def test_deceased_date_time() -> None:
    dead = extract({"resourceType": "Patient", "deceasedDateTime": "2015-02-14T13:42:00+10:00"})
    assert rows(dead, "token", "deceased") == [(None, "true", None)]
    assert rows(dead, "date", "death-date") == [parse_range("2015-02-14T13:42:00+10:00")]
    assert rows(extract({"resourceType": "Patient"}), "token", "deceased") == [(None, "false", None)]


# A CalAIM ECM referral, shaped as in the R4 ServiceRequest examples.
SERVICE_REQUEST: dict[str, Any] = {
    "resourceType": "ServiceRequest",
    "id": "ecm-referral-1",
    "identifier": [{"system": "https://calaim.example.org/referral-id", "value": "R-2024-0001"}],
    "instantiatesCanonical": ["http://example.org/fhir/PlanDefinition/ecm-referral|1.2"],
    "instantiatesUri": ["https://www.dhcs.ca.gov/CalAIM/ECM"],
    "basedOn": [{"reference": "CarePlan/cp-1/_history/3"}],
    "requisition": {"system": "https://calaim.example.org/requisition", "value": "REQ-77"},
    "status": "active",
    "intent": "order",
    "category": [
        {"coding": [{"system": "http://snomed.info/sct", "code": "306206005", "display": "Referral to service"}]}
    ],
    "priority": "routine",
    "code": {
        "coding": [
            {"system": "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets", "code": "G9008"},
            {"system": "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets", "code": "G9008"},
        ],
        "text": "Enhanced Care Management",
    },
    "orderDetail": [{"text": "Population of focus 1a"}],
    "subject": {"reference": "urn:uuid:6c1b4a8e-58a3-4d4a-9f0b-1d2f3c4b5a6e", "type": "Patient"},
    "encounter": {"reference": "#enc"},
    "occurrencePeriod": {"start": "2024-07-01"},
    "authoredOn": "2024-06-15T09:30:00-07:00",
    "requester": {"reference": "https://ehr.example.org/fhir/Practitioner/pr-9"},
    "performerType": {"text": "ECM provider"},
    "performer": [{"identifier": {"system": "http://hl7.org/fhir/sid/us-npi", "value": "1234567893"}}],
    "replaces": [{"identifier": {"system": "https://calaim.example.org/referral-id", "value": "R-2023-0099"}}],
}


def test_service_request() -> None:
    result = extract(SERVICE_REQUEST)
    hcpcs = "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
    assert rows(result, "token", "code") == [(hcpcs, "G9008", None), (None, None, "enhanced care management")]
    assert rows(result, "token", "category") == [("http://snomed.info/sct", "306206005", "referral to service")]
    assert rows(result, "token", "status") == [(None, "active", None)]
    assert rows(result, "token", "requisition") == [("https://calaim.example.org/requisition", "REQ-77", None)]
    # orderDetail.text is a string: a token of its own (code only), as the R4 expression says.
    assert rows(result, "token", "order-detail") == [(None, "Population of focus 1a", None)]
    assert rows(result, "token", "performer-type") == [(None, None, "ecm provider")]
    assert rows(result, "date", "authored") == [parse_range("2024-06-15T09:30:00-07:00")]
    assert rows(result, "date", "occurrence") == [(parse_range("2024-07-01")[0], MAX_MICROS)]
    assert rows(result, "uri", "instantiates-uri") == [("https://www.dhcs.ca.gov/CalAIM/ECM",)]
    # References: version stripped; absolute URL kept and parsed; urn:uuid as url only; #contained skipped.
    assert rows(result, "reference", "based-on") == [("CarePlan", "cp-1", None, None, None)]
    assert rows(result, "reference", "requester") == [
        ("Practitioner", "pr-9", "https://ehr.example.org/fhir/Practitioner/pr-9", None, None)
    ]
    assert rows(result, "reference", "subject") == [
        (None, None, "urn:uuid:6c1b4a8e-58a3-4d4a-9f0b-1d2f3c4b5a6e", None, None)
    ]
    assert rows(result, "reference", "patient") == rows(result, "reference", "subject")
    assert rows(result, "reference", "encounter") == []
    assert rows(result, "reference", "instantiates-canonical") == [
        (None, None, "http://example.org/fhir/PlanDefinition/ecm-referral", None, None)
    ]
    # Identifier-only references: typed from the parameter's targets only when there is exactly one.
    assert rows(result, "reference", "replaces") == [
        ("ServiceRequest", None, None, "https://calaim.example.org/referral-id", "R-2023-0099")
    ]
    assert rows(result, "reference", "performer") == [
        (None, None, None, "http://hl7.org/fhir/sid/us-npi", "1234567893")
    ]


# The closed-loop Task that tracks the referral (R4 Task examples, shaped for CalAIM).
TASK: dict[str, Any] = {
    "resourceType": "Task",
    "id": "ecm-referral-1-task",
    "identifier": [{"system": "https://calaim.example.org/task-id", "value": "T-1"}],
    "groupIdentifier": {"system": "https://calaim.example.org/referral-id", "value": "R-2024-0001"},
    "basedOn": [{"reference": "ServiceRequest/ecm-referral-1"}],
    "partOf": [{"reference": "Task/parent"}],
    "status": "in-progress",
    "businessStatus": {"text": "Outreach attempted"},
    "intent": "order",
    "priority": "urgent",
    "code": {"coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code", "code": "fulfill"}]},
    "focus": {"reference": "ServiceRequest/ecm-referral-1"},
    "for": {"reference": "Patient/example", "display": "Peter Chalmers"},
    "executionPeriod": {"start": "2024-07-01T08:00:00Z", "end": "2024-07-31"},
    "authoredOn": "2024-06-15",
    "lastModified": "2024-07-02T10:15:00.123Z",
    "requester": {"reference": "Organization/calaim-plan"},
    "performerType": [{"coding": [{"system": "http://hl7.org/fhir/task-performer-type", "code": "performer"}]}],
    "owner": {"reference": "Organization/ecm-provider"},
}


def test_task() -> None:
    result = extract(TASK)
    assert rows(result, "reference", "patient") == [("Patient", "example", None, None, None)]
    assert rows(result, "reference", "subject") == [("Patient", "example", None, None, None)]
    assert rows(result, "reference", "focus") == [("ServiceRequest", "ecm-referral-1", None, None, None)]
    assert rows(result, "reference", "owner") == [("Organization", "ecm-provider", None, None, None)]
    assert rows(result, "token", "group-identifier") == [
        ("https://calaim.example.org/referral-id", "R-2024-0001", None)
    ]
    assert rows(result, "token", "business-status") == [(None, None, "outreach attempted")]
    assert rows(result, "token", "performer") == [("http://hl7.org/fhir/task-performer-type", "performer", None)]
    assert rows(result, "date", "period") == [(parse_range("2024-07-01T08:00:00Z")[0], parse_range("2024-07-31")[1])]
    assert rows(result, "date", "modified") == [parse_range("2024-07-02T10:15:00.123Z")]
    # A Task for a Group is a subject but not a patient.
    group_task = extract({**TASK, "for": {"reference": "Group/g1"}})
    assert rows(group_task, "reference", "patient") == []
    assert rows(group_task, "reference", "subject") == [("Group", "g1", None, None, None)]


COVERAGE: dict[str, Any] = {
    "resourceType": "Coverage",
    "id": "medi-cal-1",
    "identifier": [{"system": "urn:oid:2.16.840.1.113883.4.1.99.1", "value": "91000001A"}],
    "status": "active",
    "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "SUBSIDIZ"}]},
    "subscriber": {"reference": "Patient/example"},
    "beneficiary": {"reference": "Patient/example"},
    "dependent": "01",
    "relationship": {"coding": [{"code": "self"}]},
    "period": {"start": "2024-01-01"},
    "payor": [{"reference": "Organization/calaim-plan"}],
    "class": [
        {
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/coverage-class", "code": "plan"}]},
            "value": "Medi-Cal MCP",
        },
        {
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/coverage-class", "code": "group"}]},
            "value": "HN-CCN",
        },
    ],
    "order": 1,
}


def test_coverage() -> None:
    result = extract(COVERAGE)
    assert rows(result, "reference", "beneficiary") == [("Patient", "example", None, None, None)]
    assert rows(result, "reference", "patient") == rows(result, "reference", "beneficiary")
    assert rows(result, "reference", "payor") == [("Organization", "calaim-plan", None, None, None)]
    assert rows(result, "string", "class-value") == [("medi-cal mcp", "Medi-Cal MCP"), ("hn-ccn", "HN-CCN")]
    assert rows(result, "string", "dependent") == [("01", "01")]
    coverage_class = "http://terminology.hl7.org/CodeSystem/coverage-class"
    assert rows(result, "token", "class-type") == [(coverage_class, "plan", None), (coverage_class, "group", None)]
    assert rows(result, "token", "identifier") == [("urn:oid:2.16.840.1.113883.4.1.99.1", "91000001A", None)]


ELIGIBILITY_RESPONSE: dict[str, Any] = {
    "resourceType": "CoverageEligibilityResponse",
    "id": "auth-1",
    "identifier": [{"system": "https://calaim.example.org/auth-id", "value": "A-2024-0001"}],
    "status": "active",
    "purpose": ["auth-requirements"],
    "patient": {"reference": "Patient/example"},
    "created": "2024-06-20",
    "requestor": {"reference": "PractitionerRole/ecm-1"},
    "request": {"reference": "CoverageEligibilityRequest/auth-req-1"},
    "outcome": "complete",
    "disposition": "Approved for 12 months",
    "insurer": {"reference": "Organization/calaim-plan"},
    "insurance": [
        {
            "coverage": {"reference": "Coverage/medi-cal-1"},
            "item": [
                {
                    "productOrService": {"coding": [{"code": "G9008"}]},
                    "benefit": [
                        {
                            "type": {"coding": [{"code": "benefit"}]},
                            "allowedMoney": {"value": 1250.50, "currency": "USD"},
                        }
                    ],
                }
            ],
        }
    ],
}


def test_coverage_eligibility_response() -> None:
    result = extract(ELIGIBILITY_RESPONSE)
    assert rows(result, "reference", "request") == [("CoverageEligibilityRequest", "auth-req-1", None, None, None)]
    assert rows(result, "reference", "requestor") == [("PractitionerRole", "ecm-1", None, None, None)]
    assert rows(result, "reference", "insurer") == [("Organization", "calaim-plan", None, None, None)]
    assert rows(result, "token", "outcome") == [(None, "complete", None)]
    assert rows(result, "string", "disposition") == [("approved for 12 months", "Approved for 12 months")]
    assert rows(result, "date", "created") == [parse_range("2024-06-20")]


def test_project_parameters_of_number_and_quantity_types() -> None:
    registry = Registry()
    registry.add(
        {
            "resourceType": "SearchParameter",
            "code": "order",
            "base": ["Coverage"],
            "type": "number",
            "expression": "Coverage.order",
        }
    )
    registry.add(
        {
            "resourceType": "SearchParameter",
            "code": "allowed-money",
            "base": ["CoverageEligibilityResponse"],
            "type": "quantity",
            "expression": "CoverageEligibilityResponse.insurance.item.benefit.allowed.as(Money)",
        }
    )
    assert rows(extract(COVERAGE, registry), "number", "order") == [(0.5, 1.5)]
    money = rows(extract(ELIGIBILITY_RESPONSE, registry), "quantity", "allowed-money")
    assert money == [("urn:iso:std:iso:4217", "USD", None, 1250.45, 1250.55)]


def test_quantities_from_choice_types() -> None:
    condition = {
        "resourceType": "Condition",
        "onsetAge": {"value": 52, "unit": "yr", "system": "http://unitsofmeasure.org", "code": "a"},
    }
    assert rows(extract(condition), "quantity", "onset-age") == [("http://unitsofmeasure.org", "a", "yr", 51.5, 52.5)]
    ranged = {
        "resourceType": "Condition",
        "abatementRange": {"low": {"value": 60, "code": "a"}, "high": {"value": 65, "code": "a"}},
    }
    assert rows(extract(ranged), "quantity", "abatement-age") == [(None, "a", None, 59.5, 65.5)]
    open_range = {"resourceType": "Condition", "onsetRange": {"low": {"value": 60, "code": "a"}}}
    assert rows(extract(open_range), "quantity", "onset-age") == [(None, "a", None, 59.5, math.inf)]
    encounter = {"resourceType": "Encounter", "length": {"value": 90, "comparator": "<", "unit": "min", "code": "min"}}
    assert rows(extract(encounter), "quantity", "length") == [(None, "min", "min", -math.inf, 90.5)]


def test_implicit_precision_of_numbers() -> None:
    assert implicit_range(100) == (99.5, 100.5)
    assert implicit_range(Decimal("1.50")) == (1.495, 1.505)
    assert implicit_range(Decimal("1e2")) == (50.0, 150.0)
    assert implicit_range(1.5) == (1.45, 1.55)  # a float lost its trailing zeros
    assert implicit_range(True) is None
    assert implicit_range("1") is None


def test_dates_from_periods_timings_and_choices() -> None:
    care_plan = {
        "resourceType": "CarePlan",
        "period": {"end": "2024-12-31"},
        "activity": [
            {
                "detail": {
                    "status": "scheduled",
                    "scheduledTiming": {
                        "event": ["2024-07-01", "not a date"],
                        "repeat": {"boundsPeriod": {"start": "2024-08-01", "end": "2024-08-31"}},
                    },
                }
            },
            {"detail": {"status": "scheduled", "scheduledString": "every other week"}},
            {"detail": {"status": "scheduled", "scheduledPeriod": {"start": "2025-01-01"}}},
        ],
    }
    result = extract(care_plan)
    assert rows(result, "date", "date") == [(MIN_MICROS, parse_range("2024-12-31")[1])]
    assert rows(result, "date", "activity-date") == [
        parse_range("2024-07-01"),
        (parse_range("2024-08-01")[0], parse_range("2024-08-31")[1]),
        (parse_range("2025-01-01")[0], MAX_MICROS),
    ]
    procedure = {"resourceType": "Procedure", "status": "completed", "performedAge": {"value": 3}}
    assert rows(extract(procedure), "date", "date") == []
    goal = {
        "resourceType": "Goal",
        "startDate": "2024-05",
        "target": [{"dueDate": "2024-11-30"}, {"dueDuration": {"value": 3}}],
    }
    assert rows(extract(goal), "date", "start-date") == [parse_range("2024-05")]
    assert rows(extract(goal), "date", "target-date") == [parse_range("2024-11-30")]


def test_rows_are_deduplicated_per_parameter() -> None:
    twice = {
        "resourceType": "Task",
        "code": {"coding": [{"system": "s", "code": "c"}, {"system": "s", "code": "c"}]},
        "identifier": [{"value": "1"}, {"value": "1"}],
    }
    result = extract(twice)
    assert rows(result, "token", "code") == [("s", "c", None)]
    assert rows(result, "token", "identifier") == [(None, "1", None)]


def test_every_served_type_has_a_plan_and_unknown_types_have_none() -> None:
    registry = default_registry()
    for resource_type in SERVED_TYPES:
        assert plan_for(resource_type, registry), resource_type
        # An empty resource has no index rows, except Patient's deceased (false when absent).
        expected = {"deceased"} if resource_type == "Patient" else set()
        assert params(extract({"resourceType": resource_type})) == expected, resource_type
    assert extract({"resourceType": "Basic", "code": {"text": "x"}}) == {kind: [] for kind in INDEXED_TYPES}


def test_plan_is_rebuilt_when_the_registry_changes() -> None:
    registry = Registry()
    registry.add(
        {
            "resourceType": "SearchParameter",
            "code": "status",
            "base": ["Task"],
            "type": "token",
            "expression": "Task.status",
        }
    )
    assert params(extract(TASK, registry)) == {"status"}
    registry.add(
        {
            "resourceType": "SearchParameter",
            "code": "intent",
            "base": ["Task"],
            "type": "token",
            "expression": "Task.intent",
        }
    )
    assert params(extract(TASK, registry)) == {"status", "intent"}


def test_columns_match_the_index_tables() -> None:
    """The extractors fill every column but the keys and those the database computes (``span_class``)."""
    for kind, table in INDEX_TABLES.items():
        written = [c for c in table.columns if c.name not in ("rid", "res_type", "param") and c.computed is None]
        assert COLUMNS[kind] == tuple(c.name for c in written)


@pytest.mark.parametrize(
    ("text", "folded"),
    [
        ("Peter  James", "peter james"),
        ("Chalmers\tO'Brien", "chalmers o'brien"),
        ("ÅNGSTRÖM", "angstrom"),
        ("Straße", "strasse"),
        ("Muñoz", "munoz"),
        ("ﬁle", "file"),
        ("", ""),
    ],
)
def test_fold_ascii_fast_path_and_unicode_path_agree(text: str, folded: str) -> None:
    assert fold(text) == folded


def test_nulls_of_primitive_arrays_are_skipped() -> None:
    # https://hl7.org/fhir/R4/json.html#primitive: null keeps the positions of given and _given aligned.
    patient = {
        "resourceType": "Patient",
        "name": [
            {"given": [None, "Jim"], "_given": [{"extension": [{"url": "http://x/e", "valueString": "y"}]}, None]}
        ],
    }
    assert rows(extract(patient), "string", "given") == [("jim", "Jim")]
