"""Service documentation and $ecm-activity (gateway/calaim/activity.py): units per member, provider and
month, the payment threshold of plan.json, units counted only on authorized days (REFERENCE.md §6)."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from gateway.calaim.config import HCPCS_SYSTEM, SERVICE_SYSTEM
from gateway.fhir.context import Context
from tests.calaim.support import (
    ECM_LINE,
    SD,
    add_member,
    assert_emitted_valid,
    decide,
    decision,
    events,
    expressions,
    refer,
)
from tests.conftest import post


def procedure(referral_id: str, day: str, units: int, patient: str = "m-1", **extra: Any) -> dict[str, Any]:
    """An ECM contact documented as a Procedure (calaim-service-procedure)."""
    return {
        "resourceType": "Procedure",
        "meta": {"profile": [f"{SD}/calaim-service-procedure"]},
        "extension": [{"url": f"{SD}/ext-service-units", "valueUnsignedInt": units}],
        "basedOn": [{"reference": f"ServiceRequest/{referral_id}"}],
        "status": "completed",
        "category": {"coding": [{"system": SERVICE_SYSTEM, "code": "ecm"}]},
        "code": {"coding": [{"system": HCPCS_SYSTEM, "code": "G9012"}]},
        "subject": {"reference": f"Patient/{patient}"},
        "performedDateTime": day,
        **extra,
    }


def encounter(referral_id: str, day: str, units: int, patient: str = "m-1") -> dict[str, Any]:
    """An ECM contact documented as an Encounter (calaim-service-encounter)."""
    return {
        "resourceType": "Encounter",
        "meta": {"profile": [f"{SD}/calaim-service-encounter"]},
        "extension": [{"url": f"{SD}/ext-service-units", "valueUnsignedInt": units}],
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "serviceType": {"coding": [{"system": SERVICE_SYSTEM, "code": "ecm"}]},
        "subject": {"reference": f"Patient/{patient}"},
        "basedOn": [{"reference": f"ServiceRequest/{referral_id}"}],
        "period": {"start": day, "end": day},
    }


def _activity(client: TestClient, **params: str) -> list[dict[str, Any]]:
    answer = client.get("/fhir/$ecm-activity", params=params)
    assert answer.status_code == 200, answer.text
    assert_emitted_valid(answer.json())
    rows = []
    for parameter in answer.json().get("parameter", []):
        parts = {p["name"]: next(v for k, v in p.items() if k.startswith("value")) for p in parameter["part"]}
        rows.append(parts)
    return rows


def test_units_per_member_provider_and_month(client: TestClient, ctx: Context) -> None:
    add_member(client, "1")
    add_member(client, "2", network="hn-noble")
    first = refer(client, "ecm", "m-1", pofs=("1a",))["id"]
    second = refer(client, "ecm", "m-2", pofs=("1a",))["id"]
    for referral_id in (first, second):
        assert decide(client, referral_id, decision("A1", ECM_LINE, periodStart="2024-06-10")).status_code == 200
    documented = post(client, "Procedure", procedure(first, "2024-06-12", 3))
    assert documented.status_code == 201
    # The provider comes from the referral when the record names none.
    assert documented.json()["performer"][0]["actor"]["reference"] == "Organization/hn-altamed"
    assert_emitted_valid(documented.json())
    contact = post(client, "Encounter", encounter(first, "2024-06-20", 2)).json()
    assert contact["serviceProvider"]["reference"] == "Organization/hn-altamed"
    assert_emitted_valid(contact)
    # A Procedure naming its Encounter is the same contact: the Encounter is not counted again.
    linked = procedure(first, "2024-06-20", 2, encounter={"reference": f"Encounter/{contact['id']}"})
    assert post(client, "Procedure", linked).status_code == 201
    assert post(client, "Procedure", procedure(first, "2024-06-05", 4)).status_code == 201  # before the authorization
    assert post(client, "Procedure", procedure(first, "2024-07-01", 5)).status_code == 201  # next month
    assert post(client, "Procedure", procedure(second, "2024-06-15", 6, patient="m-2")).status_code == 201
    rows = _activity(client, month="2024-06")
    assert [(r["patient"]["reference"], r["organization"]["reference"]) for r in rows] == [
        ("Patient/m-1", "Organization/hn-altamed"),
        ("Patient/m-2", "Organization/hn-noble"),
    ]
    assert (rows[0]["units"], rows[0]["unauthorizedUnits"], rows[0]["threshold"], rows[0]["thresholdMet"]) == (
        5,
        4,
        6,
        False,
    )
    assert (rows[1]["units"], rows[1]["thresholdMet"], rows[1]["month"]) == (6, True, "2024-06")
    assert "unauthorizedUnits" not in rows[1]
    assert [r["patient"]["reference"] for r in _activity(client, month="2024-06", patient="Patient/m-2")] == [
        "Patient/m-2"
    ]
    assert [r["units"] for r in _activity(client, month="2024-06", organization="hn-altamed")] == [5]
    assert _activity(client, month="2024-07", organization="Organization/hn-noble") == []
    # What the activity log reads: the stored records themselves, not outbox events (calaim.service has no
    # consumer, so the six records wrote no outbox row).
    counts = {
        t: client.get(f"/fhir/{t}", params={"_summary": "count"}).json()["total"] for t in ("Procedure", "Encounter")
    }
    assert counts == {"Procedure": 5, "Encounter": 1}
    assert events(ctx, "calaim.service") == []
    assert client.get("/fhir/$ecm-activity", params={"month": "2024-13"}).status_code == 400


def test_documentation_must_match_its_referral(client: TestClient) -> None:
    add_member(client, "1")
    add_member(client, "2")
    referral_id = refer(client, "ecm", "m-1", pofs=("1a",))["id"]
    other_member = post(client, "Procedure", procedure(referral_id, "2024-06-12", 3, patient="m-2"))
    assert other_member.status_code == 422 and expressions(other_member) == ["Procedure.basedOn[0]"]
    unlinked = procedure(referral_id, "2024-06-12", 3)
    del unlinked["basedOn"]
    missing = post(client, "Procedure", unlinked)
    assert missing.status_code == 422 and expressions(missing) == ["Procedure.basedOn"]
    meals = refer(client, "medically-tailored-meals", "m-1")["id"]
    wrong_service = post(client, "Procedure", procedure(meals, "2024-06-12", 3))
    assert wrong_service.status_code == 422 and expressions(wrong_service) == ["Procedure.basedOn[0]"]
