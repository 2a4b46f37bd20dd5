"""Closed loop (gateway/calaim/closed_loop.py): providers move the referral Task with plain update and
patch; illegal moves are refused (409 from the current state, 422 for the content), the DHCS status and
date are stamped, loop closure needs a reason except for sobering centers, each change is an event for the
county's RRI when the referral is the county's (none otherwise)."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from gateway.fhir.context import Context
from tests.calaim.support import (
    COUNTY,
    SD,
    add_member,
    assert_emitted_valid,
    decide,
    decision,
    events,
    expressions,
    line,
    refer,
    referral_status,
    task_of,
)
from tests.conftest import put

STATUS = "https://fhir.calaim-gateway.org/CodeSystem/referral-status"
REASON = {
    "url": f"{SD}/ext-loop-closure-reason",
    "valueCodeableConcept": {
        "coding": [
            {"system": "https://fhir.calaim-gateway.org/CodeSystem/loop-closure-reason", "code": "services-received"}
        ]
    },
}


def _move(client: TestClient, task: dict[str, Any], status: str, **changes: Any) -> Any:
    return put(client, f"Task/{task['id']}", {**task, "status": status, **changes})


def test_the_provider_moves_the_loop_to_closure(client: TestClient, ctx: Context) -> None:
    add_member(client)
    referral_id = refer(client, "ecm", pofs=("1a",), requester=COUNTY)["id"]
    task = task_of(client, referral_id)
    accepted = _move(client, task, "accepted")
    assert accepted.status_code == 200
    assert referral_status(accepted.json())[0] == "accepted"
    outreach = {"coding": [{"system": STATUS, "code": "outreach-initiated"}]}
    started = _move(client, accepted.json(), "in-progress", businessStatus=outreach).json()
    assert referral_status(started)[0] == "outreach-initiated"
    assert started["businessStatus"]["text"] == "Outreach initiated"
    # A later edit that does not move the Task keeps the status and the date of its last change.
    noted = _move(client, started, "in-progress", note=[{"text": "second attempt"}]).json()
    assert referral_status(noted) == referral_status(started)
    missing = _move(client, noted, "completed")
    assert missing.status_code == 422
    assert expressions(missing) == [f"Task.extension('{SD}/ext-loop-closure-reason')"]
    closed = _move(client, noted, "completed", extension=[*noted["extension"], REASON]).json()
    assert referral_status(closed)[0] == "loop-closed"
    assert client.get(f"/fhir/ServiceRequest/{referral_id}").json()["status"] == "completed"
    for resource in (accepted.json(), started, noted, closed):
        assert_emitted_valid(resource)
    changes = [
        (e["taskStatus"], e["referralStatus"], e["closureReason"]) for e in events(ctx, "calaim.referral-status")
    ]
    assert changes == [
        ("requested", "pending", None),
        ("accepted", "accepted", None),
        ("in-progress", "outreach-initiated", None),
        ("completed", "loop-closed", "services-received"),
    ]
    assert all(e["reportable"] for e in events(ctx, "calaim.referral-status"))


def test_illegal_moves(client: TestClient) -> None:
    add_member(client)
    referral_id = refer(client, "ecm", pofs=("1a",))["id"]
    task = task_of(client, referral_id)
    skipped = _move(client, task, "completed", extension=[*task["extension"], REASON])
    assert skipped.status_code == 409 and expressions(skipped) == ["Task.status"]
    declined = _move(client, task, "rejected").json()
    assert referral_status(declined)[0] == "declined"
    assert client.get(f"/fhir/ServiceRequest/{referral_id}").json()["status"] == "revoked"
    reopened = _move(client, declined, "in-progress")
    assert reopened.status_code == 409
    other = refer(client, "housing-transition-navigation")["id"]
    moved = _move(client, task_of(client, other), "requested", focus={"reference": f"ServiceRequest/{referral_id}"})
    assert moved.status_code == 422 and expressions(moved) == ["Task.focus"]
    wrong = {"coding": [{"system": STATUS, "code": "outreach-initiated"}]}
    disagreeing = _move(client, task_of(client, other), "requested", businessStatus=wrong)
    assert disagreeing.status_code == 422 and expressions(disagreeing) == ["Task.businessStatus"]


def test_a_new_task_starts_requested(client: TestClient) -> None:
    add_member(client)
    task = task_of(client, refer(client, "ecm", pofs=("1a",))["id"])
    new = {k: v for k, v in task.items() if k not in ("id", "meta")}
    new["meta"] = {"profile": [f"{SD}/calaim-referral-task"]}
    started = client.post("/fhir/Task", json={**new, "status": "in-progress"})
    assert started.status_code == 422 and expressions(started) == ["Task.status"]


def test_patch_and_a_put_without_meta(client: TestClient) -> None:
    add_member(client)
    referral_id = refer(client, "ecm", pofs=("1a",))["id"]
    task = task_of(client, referral_id)
    patched = client.patch(
        f"/fhir/Task/{task['id']}",
        content=b'[{"op":"replace","path":"/status","value":"accepted"}]',
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert patched.status_code == 200 and referral_status(patched.json())[0] == "accepted"
    bare = {k: v for k, v in patched.json().items() if k != "meta"}
    # A provider system that drops meta still moves a referral Task: the profile claim is kept.
    kept = _move(client, bare, "in-progress").json()
    assert kept["meta"]["profile"] == [f"{SD}/calaim-referral-task"]
    assert referral_status(kept)[0] == "accepted"


def test_sobering_centers_close_without_a_reason(client: TestClient, ctx: Context) -> None:
    add_member(client)
    referral_id = refer(client, "sobering-centers", requester=COUNTY)["id"]
    assert decide(client, referral_id, decision("A1", line("H0014", "U6"))).status_code == 200
    task = task_of(client, referral_id)
    closed = _move(client, task, "completed")
    assert closed.status_code == 200
    assert referral_status(closed.json())[0] == "loop-closed"
    last = events(ctx, "calaim.referral-status")[-1]
    assert (last["referralStatus"], last["reportable"]) == ("loop-closed", False)


def test_revoking_the_referral_cancels_its_task(client: TestClient, ctx: Context) -> None:
    add_member(client)
    add_member(client, "2")
    for patient, status in (("m-1", "revoked"), ("m-2", "entered-in-error")):
        referral = refer(client, "ecm", patient, pofs=("1a",), requester=COUNTY)
        accepted = _move(client, task_of(client, referral["id"]), "accepted")
        assert accepted.status_code == 200
        ended = put(client, f"ServiceRequest/{referral['id']}", {**referral, "status": status})
        assert ended.status_code == 200, ended.text
        task = task_of(client, referral["id"])
        assert (task["status"], referral_status(task)[0]) == ("cancelled", "loop-closed")
        (reason,) = [e for e in task["extension"] if e["url"] == f"{SD}/ext-loop-closure-reason"]
        assert reason["valueCodeableConcept"]["coding"][0]["code"] == "other"
        assert status in reason["valueCodeableConcept"]["text"] and status in task["statusReason"]["text"]
        assert referral_status(task)[1] is not None  # the date of the status update
        assert_emitted_valid(task)
        assert client.get(f"/fhir/ServiceRequest/{referral['id']}").json()["status"] == status
    changes = [
        (e["taskStatus"], e["referralStatus"], e["closureReason"]) for e in events(ctx, "calaim.referral-status")
    ]
    assert changes[-1] == ("cancelled", "loop-closed", "other") and changes.count(changes[-1]) == 2
    # An update of an already ended referral leaves the ended Task alone.
    again = client.get(f"/fhir/ServiceRequest/{referral['id']}").json()
    assert put(client, f"ServiceRequest/{referral['id']}", {**again, "note": [{"text": "x"}]}).status_code == 200
    assert task_of(client, referral["id"])["meta"]["versionId"] == task["meta"]["versionId"]


def test_a_referral_not_of_the_county_writes_no_status_event(client: TestClient, ctx: Context) -> None:
    """The only reader of ``calaim.referral-status`` is the county's RRI: another referral's Task moves
    write no outbox row (gateway/calaim/events.py), a county referral's every move one."""
    add_member(client)
    add_member(client, "2")
    plain = refer(client, "ecm", pofs=("1a",))["id"]
    county = refer(client, "ecm", "m-2", pofs=("1a",), requester=COUNTY)["id"]
    for referral_id in (plain, county):
        assert _move(client, task_of(client, referral_id), "accepted").status_code == 200
    moved = [(e["referral"], e["taskStatus"]) for e in events(ctx, "calaim.referral-status")]
    assert moved == [(f"ServiceRequest/{county}", "requested"), (f"ServiceRequest/{county}", "accepted")]
