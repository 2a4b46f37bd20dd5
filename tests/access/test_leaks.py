"""Leak tests (issue 5): a grant for member A or provider X never sees member B's or provider Y's data,
through read, search, paging, _include/_revinclude, chains, _has, history, batch or counts; and the
scope checks of every interaction. Runs in the core with real stores (both dialects); tests/smart runs
the same interactions over HTTP with real tokens."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from gateway.fhir.context import Context
from tests.access.support import (
    NETWORK_A,
    PROVIDER_X,
    PROVIDER_Y,
    World,
    all_pages,
    as_grant,
    body_of,
    grant,
    two_members,
)

DIRECTORY = ("Organization",)


@pytest.fixture
def world(client: TestClient, ctx: Context) -> Iterator[World]:
    yield two_members(client, ctx)


CALLERS = {
    "provider X": lambda w: (grant("user/*.rs", organization=PROVIDER_X), w.a, w.b),
    "provider Y (system)": lambda w: (grant("system/*.rs", organization=PROVIDER_Y), w.b, w.a),
    "health network of A": lambda w: (grant("user/*.rs", organization=NETWORK_A), w.a, w.b),
    "patient A via provider X": lambda w: (grant("patient/*.rs", organization=PROVIDER_X, patient="m-a"), w.a, w.b),
}


@pytest.mark.parametrize("caller", sorted(CALLERS))
def test_reads_and_searches_show_only_own_members(world: World, caller: str) -> None:
    who, mine, theirs = CALLERS[caller](world)
    ctx = world.ctx
    for res_type, ids in theirs.resources.items():
        for res_id in ids:
            assert as_grant(ctx, who, "GET", f"{res_type}/{res_id}").status == 404, (res_type, caller)
            assert as_grant(ctx, who, "GET", f"{res_type}/{res_id}/_history").status == 404
            assert as_grant(ctx, who, "GET", f"{res_type}/{res_id}/_history/1").status == 404
    assert as_grant(ctx, who, "GET", f"Patient/{theirs.patient}").status == 404
    for res_type, ids in mine.resources.items():
        for res_id in ids:
            assert as_grant(ctx, who, "GET", f"{res_type}/{res_id}").status == 200, (res_type, caller)
        found = set(all_pages(ctx, who, res_type, [("_count", "1")]))
        assert {f"{res_type}/{i}" for i in ids} <= found, (res_type, caller)
        assert not found & theirs.refs(), (res_type, caller)
        count = body_of(as_grant(ctx, who, "GET", res_type, query=[("_summary", "count")]))["total"]
        assert count == len(found)
    patients = set(all_pages(ctx, who, "Patient", [("_count", "1")]))
    assert patients == {f"Patient/{mine.patient}"}


@pytest.mark.parametrize("caller", sorted(CALLERS))
def test_includes_chains_has_and_history_never_reach_hidden_rows(world: World, caller: str) -> None:
    who, mine, theirs = CALLERS[caller](world)
    ctx = world.ctx
    probes = [
        ("ServiceRequest", [("_include", "ServiceRequest:subject"), ("_include", "ServiceRequest:performer")]),
        ("Patient", [("_revinclude", "Condition:subject"), ("_revinclude", "Task:patient")]),
        ("Condition", [("subject.family", "Memberb")]),
        ("Condition", [("subject.family", "Membera")]),
        ("Patient", [("_has:Condition:subject:_id", theirs.resources["Condition"][0])]),
        ("Condition", [("_id", theirs.resources["Condition"][0])]),
        ("", [("_type", "Condition,Patient,Encounter")]),
    ]
    for path, query in probes:
        found = set(all_pages(ctx, who, path, [*query, ("_count", "2")]))
        assert not found & theirs.refs(), (path, query, caller)
    family = f"Member{mine.patient.removeprefix('m-')}"  # tests.calaim.support.add_member
    assert set(all_pages(ctx, who, "Condition", [("subject.family", family)])) == {
        f"Condition/{i}" for i in mine.resources["Condition"]
    }
    for path in ("_history", "Condition/_history", "Patient/_history"):
        found = set(all_pages(ctx, who, path, [("_count", "3")]))
        assert found, path
        assert not found & theirs.refs(), (path, caller)


def test_batch_entries_are_checked_one_by_one(world: World) -> None:
    who = grant("user/*.rs", organization=PROVIDER_X)
    entries = [
        {"request": {"method": "GET", "url": f"Condition/{world.a.resources['Condition'][0]}"}},
        {"request": {"method": "GET", "url": f"Condition/{world.b.resources['Condition'][0]}"}},
        {"request": {"method": "GET", "url": "Condition?_count=50"}},
    ]
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": entries}
    response = body_of(as_grant(world.ctx, who, "POST", "", body=bundle))
    statuses = [e["response"]["status"][:3] for e in response["entry"]]
    assert statuses == ["200", "404", "200"]
    listed = response["entry"][2]["resource"].get("entry", [])
    assert [e["resource"]["id"] for e in listed] == world.a.resources["Condition"]


def test_writes_stay_inside_what_the_caller_sees(world: World) -> None:
    ctx, a, b = world.ctx, world.a, world.b
    writer = grant("user/*.cruds", organization=PROVIDER_X)
    condition = {"resourceType": "Condition", "subject": {"reference": f"Patient/{b.patient}"}, "code": {"text": "x"}}
    assert as_grant(ctx, writer, "POST", "Condition", body=condition).status == 403
    before = body_of(as_grant(ctx, None, "GET", "Condition", query=[("_summary", "count")]))["total"]
    condition["subject"] = {"reference": f"Patient/{a.patient}"}
    assert as_grant(ctx, writer, "POST", "Condition", body=condition).status == 201
    assert body_of(as_grant(ctx, None, "GET", "Condition", query=[("_summary", "count")]))["total"] == before + 1
    hidden = b.resources["Condition"][0]
    update = {**condition, "id": hidden, "subject": {"reference": f"Patient/{a.patient}"}}
    assert as_grant(ctx, writer, "PUT", f"Condition/{hidden}", body=update).status == 404
    assert as_grant(ctx, writer, "DELETE", f"Condition/{hidden}").status == 404
    assert as_grant(ctx, None, "GET", f"Condition/{hidden}").status == 200  # untouched
    mine = a.resources["Condition"][0]
    moved = {**condition, "id": mine, "subject": {"reference": f"Patient/{b.patient}"}}
    assert as_grant(ctx, writer, "PUT", f"Condition/{mine}", body=moved).status == 403  # cannot hand data over
    new_member = {"resourceType": "Patient", "name": [{"family": "Newmember"}]}
    assert as_grant(ctx, writer, "POST", "Patient", body=new_member).status == 201


def test_transaction_rolls_back_when_one_entry_leaves_the_callers_view(world: World) -> None:
    ctx, a, b = world.ctx, world.a, world.b
    writer = grant("user/*.cruds", organization=PROVIDER_X)
    entries = [
        {
            "resource": {
                "resourceType": "Goal",
                "lifecycleStatus": "active",
                "description": {"text": "ok"},
                "subject": {"reference": f"Patient/{a.patient}"},
            },
            "request": {"method": "POST", "url": "Goal"},
        },
        {
            "resource": {
                "resourceType": "Goal",
                "lifecycleStatus": "active",
                "description": {"text": "no"},
                "subject": {"reference": f"Patient/{b.patient}"},
            },
            "request": {"method": "POST", "url": "Goal"},
        },
    ]
    before = body_of(as_grant(ctx, None, "GET", "Goal", query=[("_summary", "count")]))["total"]
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    assert as_grant(ctx, writer, "POST", "", body=bundle).status == 403
    assert body_of(as_grant(ctx, None, "GET", "Goal", query=[("_summary", "count")]))["total"] == before


def test_scopes_decide_each_interaction(world: World) -> None:
    ctx, a = world.ctx, world.a
    condition_id = a.resources["Condition"][0]
    patients_only = grant("user/Patient.rs", organization=PROVIDER_X)
    assert as_grant(ctx, patients_only, "GET", f"Patient/{a.patient}").status == 200
    assert as_grant(ctx, patients_only, "GET", f"Condition/{condition_id}").status == 403
    assert as_grant(ctx, patients_only, "GET", "Condition").status == 403
    reader = grant("user/*.read", organization=PROVIDER_X)  # SMART v1
    assert as_grant(ctx, reader, "GET", f"Condition/{condition_id}").status == 200
    body = {"resourceType": "Condition", "subject": {"reference": f"Patient/{a.patient}"}, "code": {"text": "x"}}
    assert as_grant(ctx, reader, "POST", "Condition", body=body).status == 403
    assert as_grant(ctx, reader, "DELETE", f"Condition/{condition_id}").status == 403
    read_only_v2 = grant("user/Condition.r", organization=PROVIDER_X)  # read, not search
    assert as_grant(ctx, read_only_v2, "GET", f"Condition/{condition_id}").status == 200
    assert as_grant(ctx, read_only_v2, "GET", "Condition").status == 403
    nothing = grant("openid fhirUser", organization=PROVIDER_X)
    assert as_grant(ctx, nothing, "GET", "Patient").status == 403
    assert as_grant(ctx, nothing, "GET", "metadata").status == 200
    no_org = grant("user/*.rs", organization=None)
    assert all_pages(ctx, no_org, "Patient", []) == []
    plan_reader = grant("user/*.rs", organization="calop")
    assert (
        as_grant(
            ctx,
            plan_reader,
            "POST",
            f"ServiceRequest/{a.resources['ServiceRequest'][0]}/$decide",
            body={"resourceType": "Parameters"},
        ).status
        == 403
    )
    plan_updater = grant("user/*.rus", organization="calop")  # update, not create
    brand_new = {"resourceType": "Organization", "id": "org-new", "name": "New"}
    assert as_grant(ctx, plan_updater, "PUT", "Organization/org-new", body=brand_new).status == 403
    plan_creator = grant("user/*.crus", organization="calop")
    assert as_grant(ctx, plan_creator, "PUT", "Organization/org-new", body=brand_new).status == 201
    assert as_grant(ctx, plan_updater, "PUT", "Organization/org-new", body={**brand_new, "name": "N2"}).status == 200
    provider_writer = grant("user/*.cruds", organization=PROVIDER_X)
    assert (
        as_grant(
            ctx,
            provider_writer,
            "POST",
            f"ServiceRequest/{a.resources['ServiceRequest'][0]}/$decide",
            body={"resourceType": "Parameters"},
        ).status
        == 403
    )


def test_granular_scopes_add_their_criteria(world: World, client: TestClient) -> None:
    ctx, a = world.ctx, world.a
    planned = {
        "resourceType": "Encounter",
        "status": "planned",
        "class": {"code": "AMB"},
        "subject": {"reference": f"Patient/{a.patient}"},
    }
    planned_id = as_grant(ctx, None, "POST", "Encounter", body=planned)
    assert planned_id.status == 201
    hidden = body_of(planned_id)["id"]
    finished_only = grant("patient/Encounter.rs?status=finished", organization=PROVIDER_X, patient=a.patient)
    found = set(all_pages(ctx, finished_only, "Encounter", []))
    assert found == {f"Encounter/{i}" for i in a.resources["Encounter"]}
    assert as_grant(ctx, finished_only, "GET", f"Encounter/{hidden}").status == 404


def test_audit_events_are_for_plan_auditors_only(world: World) -> None:
    ctx = world.ctx
    provider = grant("user/*.rs", organization=PROVIDER_X, name="nurse")
    as_grant(ctx, provider, "GET", f"Patient/{world.a.patient}")
    as_grant(ctx, provider, "GET", f"Patient/{world.b.patient}")
    assert ctx.audit is not None
    ctx.audit.flush()
    auditor = grant("user/AuditEvent.rs", organization="calop", name="auditor")
    events = body_of(as_grant(ctx, auditor, "GET", "AuditEvent", query=[("_count", "100")]))
    recorded = [e["resource"] for e in events.get("entry", [])]
    mine = [e for e in recorded if e["agent"][0]["altId"] == "nurse"]
    assert sorted((e["entity"][0]["what"]["reference"], e["outcome"]) for e in mine) == [
        (f"Patient/{world.a.patient}", "0"),
        (f"Patient/{world.b.patient}", "4"),
    ]
    assert all(e["subtype"][0]["code"] == "read" for e in mine)
    plan_everything = grant("user/*.cruds", organization="calop")
    assert as_grant(ctx, plan_everything, "GET", "AuditEvent").status == 403
    assert as_grant(ctx, provider, "GET", "AuditEvent").status == 403
    mixed = all_pages(ctx, plan_everything, "", [("_type", "AuditEvent,Patient")])
    assert mixed != []
    assert not [r for r in mixed if r.startswith("AuditEvent/")]
    assert not [r for r in all_pages(ctx, plan_everything, "_history", []) if r.startswith("AuditEvent/")]
    audit_writer = grant("user/AuditEvent.cruds", organization="calop")
    forged = {
        "resourceType": "AuditEvent",
        "type": {"code": "rest"},
        "recorded": "2024-01-01T00:00:00Z",
        "agent": [{"requestor": True}],
        "source": {"observer": {"display": "x"}},
    }
    assert as_grant(ctx, audit_writer, "POST", "AuditEvent", body=forged).status == 403
