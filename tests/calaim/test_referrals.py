"""Referral intake (gateway/calaim/referrals.py, routing.py): the Task, routing by POF and service per
plan.json, duplicates answered with the open referral; the ``calaim.referral`` payload, which no outbox
queue is written for (no consumer reads it: gateway/calaim/events.py), and the Pending status event, written
for the county's RRI when the referral is the county's."""

from __future__ import annotations

from fastapi.testclient import TestClient

from gateway.calaim.referrals import referral_event_payload
from gateway.fhir.context import Context
from tests.calaim.support import (
    COUNTY,
    add_member,
    assert_emitted_valid,
    events,
    expressions,
    plain_request,
    refer,
    referral,
    referral_status,
    task_of,
)
from tests.conftest import post


def test_a_referral_is_routed_and_gets_its_task(client: TestClient, ctx: Context) -> None:
    add_member(client, network="hn-altamed")
    created = refer(client, "ecm", pofs=("1a",))
    # POF 1a is served by every HN: the member's own HN (AltaMed) takes it.
    assert created["performer"] == [{"reference": "Organization/hn-altamed", "display": "AltaMed Health Services"}]
    task = task_of(client, created["id"])
    assert (task["status"], task["intent"], task["owner"]["reference"]) == (
        "requested",
        "order",
        "Organization/hn-altamed",
    )
    assert task["for"] == {"reference": "Patient/m-1"}
    assert referral_status(task)[0] == "pending"
    assert task["businessStatus"]["text"] == "Pending"
    for resource in (created, task):
        assert_emitted_valid(resource)
    assert events(ctx, "calaim.referral") == []  # no consumer: no outbox row
    event = referral_event_payload(created, created["id"], task["id"], service="ecm")
    assert event["referral"] == f"ServiceRequest/{created['id']}"
    assert (event["provider"], event["service"], event["pofs"]) == ("Organization/hn-altamed", "ecm", ["1a"])
    assert event["task"] == f"Task/{task['id']}"
    assert events(ctx, "calaim.referral-status") == []  # not a county referral: the county's RRI skips it
    county = refer(client, "housing-transition-navigation", requester=COUNTY)
    (pending,) = events(ctx, "calaim.referral-status")
    assert (pending["referral"], pending["referralStatus"]) == (f"ServiceRequest/{county['id']}", "pending")
    assert pending["resource"] == f"Task/{task_of(client, county['id'])['id']}" and pending["version"] == 1


def test_routing_by_pof_service_and_member(client: TestClient) -> None:
    add_member(client, "1", pofs=("3",), network="hn-noble")
    add_member(client, "2", pofs=(), network="hn-noble")
    add_member(client, "3", pofs=("6",), network=None)
    # POF 3 goes to the county whatever the HN; the member's POF is used when the referral names none.
    assert refer(client, "ecm", "m-1")["performer"][0]["reference"] == "Organization/county-hca-bhs"
    assert refer(client, "ecm", "m-3")["performer"][0]["reference"] == "Organization/ecm-libertana"
    # POF 1b with an HN contracted for it; Community Supports go to the first contracted provider.
    assert refer(client, "ecm", "m-2", pofs=("1b",))["performer"][0]["reference"] == "Organization/hn-noble"
    meals = refer(client, "medically-tailored-meals", "m-2")
    assert meals["performer"][0]["reference"] == "Organization/cs-cap-oc"
    # A referrer may name a contracted provider.
    named = refer(client, "housing-tenancy-sustaining", "m-2", performer="cs-jamboree-housing")
    assert named["performer"][0]["reference"] == "Organization/cs-jamboree-housing"


def test_routing_refusals(client: TestClient) -> None:
    add_member(client, "1", pofs=())
    no_pof = post(client, "ServiceRequest", referral("ecm", "m-1"))
    assert no_pof.status_code == 422
    assert expressions(no_pof) == ["ServiceRequest.extension"]
    assert "Population of Focus" in no_pof.json()["issue"][0]["diagnostics"]
    uncontracted = post(client, "ServiceRequest", referral("sobering-centers", "m-1", performer="cs-cap-oc"))
    assert uncontracted.status_code == 422
    assert expressions(uncontracted) == ["ServiceRequest.performer[0]"]
    assert client.get("/fhir/Task?_summary=count").json()["total"] == 0


def test_a_duplicate_open_referral_is_answered_with_the_existing_one(client: TestClient, ctx: Context) -> None:
    add_member(client)
    first = refer(client, "ecm", pofs=("1a",))
    again = post(client, "ServiceRequest", referral("ecm", "m-1", pofs=("2",)))
    assert again.status_code == 200 and again.json()["id"] == first["id"]
    other_service = refer(client, "housing-transition-navigation")
    assert other_service["id"] != first["id"]
    assert client.get("/fhir/Task?_summary=count").json()["total"] == 2
    # Once the referral is closed, a new one for the same service is a new referral.
    closed = {**first, "status": "revoked"}
    assert client.put(f"/fhir/ServiceRequest/{first['id']}", json=closed).status_code == 200
    assert refer(client, "ecm", pofs=("1a",))["id"] != first["id"]


def test_an_update_keeps_the_open_referral_unique(client: TestClient) -> None:
    add_member(client)
    first = refer(client, "ecm", pofs=("1a",))
    edited = {**first, "note": [{"text": "member prefers mornings"}]}
    assert client.put(f"/fhir/ServiceRequest/{first['id']}", json=edited).status_code == 200
    assert post(client, "ServiceRequest", referral("ecm", "m-1", pofs=("1a",))).json()["id"] == first["id"]
    # A historic (closed) referral is stored as sent: no routing, no Task.
    historic = post(client, "ServiceRequest", referral("ecm", "m-1", status="completed"))
    assert historic.status_code == 201 and "performer" not in historic.json()
    reopened = client.put(f"/fhir/ServiceRequest/{historic.json()['id']}", json={**historic.json(), "status": "active"})
    assert reopened.status_code == 409
    assert expressions(reopened) == ["ServiceRequest.status"]


def test_plain_service_requests_are_left_alone(client: TestClient) -> None:
    add_member(client)
    plain = plain_request()
    assert post(client, "ServiceRequest", plain).status_code == 201
    assert post(client, "ServiceRequest", plain).status_code == 201
    assert client.get("/fhir/Task?_summary=count").json()["total"] == 0
