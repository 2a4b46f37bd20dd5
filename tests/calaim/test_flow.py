"""End to end over HTTP: referral (in a transaction Bundle) → Task → decision → CoverageEligibilityResponse
→ eligibility check → documented services → threshold report; every resource the gateway emitted
validates against the R4 JSON schema and its CalAIM profile."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from gateway.calaim import events as calaim_events
from gateway.calaim.config import SERVICE_SYSTEM
from gateway.fhir.context import Context
from gateway.store.schema import outbox
from tests.calaim.support import (
    ECM_LINE,
    SD,
    add_member,
    assert_emitted_valid,
    decide,
    decision,
    events,
    referral,
    referral_status,
    task_of,
)
from tests.calaim.test_activity import encounter, procedure
from tests.conftest import post, put


def test_referral_to_payment_threshold(client: TestClient, ctx: Context) -> None:
    add_member(client, pofs=("1a",), network="hn-choc")
    # 1. A hospital refers the member in a transaction Bundle: the intake hook runs inside it.
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"request": {"method": "POST", "url": "ServiceRequest"}, "resource": referral("ecm", "m-1")}],
    }
    answer = post(client, "", bundle)
    assert answer.status_code == 200, answer.text
    referral_id = answer.json()["entry"][0]["resource"]["id"]
    stored = client.get(f"/fhir/ServiceRequest/{referral_id}").json()
    assert stored["performer"][0]["reference"] == "Organization/hn-choc"
    # 2. Its Task is waiting for the provider.
    task = task_of(client, referral_id)
    assert (task["status"], referral_status(task)[0]) == ("requested", "pending")
    # 3. Plan staff decide: the authorization comes back at once.
    auth = decide(client, referral_id, decision("A1", ECM_LINE, periodStart="2024-06-01")).json()
    request = client.get(f"/fhir/{auth['request']['reference']}").json()
    # 4. The provider's EHR checks the authorization before the first visit.
    check = {
        "resourceType": "CoverageEligibilityRequest",
        "status": "active",
        "purpose": ["auth-requirements"],
        "patient": {"reference": "Patient/m-1"},
        "servicedDate": "2024-06-03",
        "created": "2024-06-02",
        "insurer": {"reference": "Organization/calop"},
        "item": [{"category": {"coding": [{"system": SERVICE_SYSTEM, "code": "ecm"}]}}],
    }
    eligibility = post(client, "CoverageEligibilityRequest/$submit", check).json()
    assert (eligibility["preAuthRef"], eligibility["insurance"][0]["inforce"]) == (auth["preAuthRef"], True)
    # 5. The provider works the referral from its own system and documents the contacts.
    task = task_of(client, referral_id)
    outreach = {
        "coding": [{"system": f"{SD.rsplit('/', 1)[0]}/CodeSystem/referral-status", "code": "outreach-initiated"}]
    }
    task = put(client, f"Task/{task['id']}", {**task, "status": "in-progress", "businessStatus": outreach}).json()
    records = [
        post(client, "Procedure", procedure(referral_id, "2024-06-03", 2)).json(),
        post(client, "Encounter", encounter(referral_id, "2024-06-10", 2)).json(),
        post(client, "Procedure", procedure(referral_id, "2024-06-24", 2)).json(),
    ]
    # 6. The month's report: 6 units, the payment threshold is met.
    report = client.get("/fhir/$ecm-activity", params={"month": "2024-06"}).json()
    parts = {p["name"]: p for p in report["parameter"][0]["part"]}
    assert (parts["units"]["valueInteger"], parts["thresholdMet"]["valueBoolean"]) == (6, True)
    assert parts["organization"]["valueReference"]["reference"] == "Organization/hn-choc"
    emitted: list[dict[str, Any]] = [stored, task, auth, request, eligibility, *records, report]
    emitted.append(client.get(f"/fhir/{eligibility['request']['reference']}").json())
    for resource in emitted:
        assert_emitted_valid(resource)
    topics = {topic: len(events(ctx, topic)) for topic in ("calaim.referral", "calaim.authorization", "calaim.service")}
    # The services reach the HN's activity log through $ecm-activity (above), not the outbox; the intake
    # event has no consumer; the authorization goes to the HN reconciliation file.
    assert topics == {"calaim.referral": 0, "calaim.authorization": 1, "calaim.service": 0}
    # A hospital's referral is not the county's: no status event for the county's RRI (its statuses, with
    # their dates, are the Task's versions).
    assert events(ctx, "calaim.referral-status") == []
    history = client.get(f"/fhir/Task/{task['id']}/_history").json()
    statuses = [referral_status(e["resource"])[0] for e in reversed(history["entry"])]
    assert statuses == ["pending", "accepted", "outreach-initiated"]
    # Every queue the flow wrote has a reader (tests/calaim/test_event_readers.py).
    with ctx.repo.connect() as conn:
        written = {row.topic for row in conn.execute(select(outbox.c.topic).distinct())}
    assert written and written <= set(calaim_events.queues())
