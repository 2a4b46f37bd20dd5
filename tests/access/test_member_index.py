"""Membership as index data (``idx_member``, gateway/search/membership.py; issue 5): a reassignment of a
referral's performer, a Task's owner or a Coverage's health network moves visibility at once, by PUT, PATCH,
transaction and delete; no row of ``idx_member`` outlives the version that made it; and migration 0012's
backfill gives the rows (and so the visibility) the repository writes. Real stores, both dialects."""

from __future__ import annotations

from typing import Any

import pytest
from alembic import command
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, select

from gateway.auth.grant import Grant
from gateway.fhir.context import Context
from gateway.search.membership import member_pairs
from gateway.store.migrate import _config
from gateway.store.schema import idx_member
from tests.access.support import (
    NETWORK_A,
    NETWORK_B,
    PROVIDER_X,
    PROVIDER_Y,
    World,
    as_grant,
    body_of,
    grant,
    two_members,
)
from tests.calaim.support import add_member, plain_request
from tests.conftest import FHIR_JSON, post, put

PATCH = "application/json-patch+json"
ECM_ONLY = "ecm-libertana"
"""An ECM provider that is not a health network (the hn-* organizations are both)."""


def _provider(org: str) -> Grant:
    return grant("user/*.rs", organization=org, name=f"staff-{org}")


def _sees(ctx: Context, org: str, patient: str, condition: str) -> bool:
    """Whether ``org``'s staff see the member (its Patient and a Condition of it), consistently through a
    read, a search and a count."""
    who = _provider(org)
    read_patient = as_grant(ctx, who, "GET", f"Patient/{patient}").status
    read_condition = as_grant(ctx, who, "GET", f"Condition/{condition}").status
    assert {read_patient, read_condition} <= {200, 404}
    search = as_grant(ctx, who, "GET", "Condition", query=[("_count", "50")])
    ids = {e["resource"]["id"] for e in body_of(search).get("entry", [])}
    count = body_of(
        as_grant(ctx, who, "GET", "Condition", query=[("subject", f"Patient/{patient}"), ("_summary", "count")])
    )
    seen: set[bool] = {read_patient == 200, read_condition == 200, condition in ids, count["total"] > 0}
    assert len(seen) == 1, f"read, search and count disagree for {org}: {seen}"
    return seen.pop()


def _members(ctx: Context) -> list[tuple[str, str, str]]:
    with ctx.repo.connect() as conn:
        rows = conn.execute(select(idx_member.c.res_type, idx_member.c.organization, idx_member.c.patient))
        return sorted((t, o, p) for t, o, p in rows)


def _member_c(client: TestClient) -> tuple[str, str]:
    """A member with no route yet (a Coverage without a health network) and one Condition."""
    patient = add_member(client, "c", network=None)
    created = post(client, "Condition", {"resourceType": "Condition", "subject": {"reference": f"Patient/{patient}"}})
    assert created.status_code == 201, created.text
    return patient, created.json()["id"]


def test_member_pairs_follow_the_routes() -> None:
    refs = [
        ("subject", "Patient", "p1"),
        ("performer", "Organization", "x"),
        ("requester", "Organization", "x"),
        ("requester", "Practitioner", "doc"),
        ("performer", None, None),
    ]
    assert member_pairs("ServiceRequest", refs) == [("x", "p1")]
    assert member_pairs("Task", [("patient", "Patient", "p"), ("owner", "Organization", "o")]) == [("o", "p")]
    assert member_pairs("Task", [("subject", "Patient", "p"), ("owner", "Organization", "o")]) == []
    cover = [("beneficiary", "Patient", "p"), ("health-network", "Organization", "hn"), ("payor", "Organization", "c")]
    assert member_pairs("Coverage", cover) == [("hn", "p")]
    assert member_pairs("Condition", [("subject", "Patient", "p"), ("asserter", "Organization", "o")]) == []
    two = [("subject", "Patient", "a"), ("subject", "Patient", "b"), ("performer", "Organization", "x")]
    assert member_pairs("ServiceRequest", two) == [("x", "a"), ("x", "b")]


def test_referral_reassigned_by_put_patch_and_delete(client: TestClient, ctx: Context) -> None:
    patient, condition = _member_c(client)
    assert not _sees(ctx, PROVIDER_X, patient, condition)
    body = plain_request(patient) | {"performer": [{"reference": f"Organization/{PROVIDER_X}"}]}
    created = post(client, "ServiceRequest", body)
    assert created.status_code == 201, created.text
    sr = created.json()["id"]
    assert _sees(ctx, PROVIDER_X, patient, condition) and not _sees(ctx, PROVIDER_Y, patient, condition)
    assert _members(ctx).count(("ServiceRequest", PROVIDER_X, patient)) == 1

    moved = put(
        client, f"ServiceRequest/{sr}", body | {"id": sr, "performer": [{"reference": f"Organization/{PROVIDER_Y}"}]}
    )
    assert moved.status_code == 200, moved.text
    assert _sees(ctx, PROVIDER_Y, patient, condition) and not _sees(ctx, PROVIDER_X, patient, condition)

    patch = [{"op": "replace", "path": "/performer/0/reference", "value": f"Organization/{PROVIDER_X}"}]
    patched = client.patch(f"/fhir/ServiceRequest/{sr}", json=patch, headers={"Content-Type": PATCH})
    assert patched.status_code == 200, patched.text
    assert _sees(ctx, PROVIDER_X, patient, condition) and not _sees(ctx, PROVIDER_Y, patient, condition)

    assert client.delete(f"/fhir/ServiceRequest/{sr}").status_code in (200, 204)
    assert not _sees(ctx, PROVIDER_X, patient, condition) and not _sees(ctx, PROVIDER_Y, patient, condition)
    assert [m for m in _members(ctx) if m[2] == patient] == []


def test_task_owner_reassigned_by_transaction(client: TestClient, ctx: Context) -> None:
    patient, condition = _member_c(client)
    task: dict[str, Any] = {
        "resourceType": "Task",
        "id": "t-c",
        "status": "requested",
        "intent": "order",
        "for": {"reference": f"Patient/{patient}"},
        "owner": {"reference": f"Organization/{PROVIDER_X}"},
    }
    assert put(client, "Task/t-c", task).status_code == 201
    assert _sees(ctx, PROVIDER_X, patient, condition) and not _sees(ctx, PROVIDER_Y, patient, condition)

    moved = task | {"owner": {"reference": f"Organization/{PROVIDER_Y}"}}
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"resource": moved, "request": {"method": "PUT", "url": "Task/t-c"}}],
    }
    response = client.post("/fhir", json=bundle, headers={"Content-Type": FHIR_JSON})
    assert response.status_code == 200, response.text
    assert _sees(ctx, PROVIDER_Y, patient, condition) and not _sees(ctx, PROVIDER_X, patient, condition)

    gone = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"request": {"method": "DELETE", "url": "Task/t-c"}}],
    }
    response = client.post("/fhir", json=gone, headers={"Content-Type": FHIR_JSON})
    assert response.status_code == 200, response.text
    assert not _sees(ctx, PROVIDER_Y, patient, condition)
    assert [m for m in _members(ctx) if m[2] == patient] == []


def test_coverage_network_moves_visibility_for_networks_only(client: TestClient, ctx: Context) -> None:
    patient, condition = _member_c(client)
    add_member(client, "c", network=NETWORK_A)  # the same member, its Coverage now naming network A
    assert _sees(ctx, NETWORK_A, patient, condition) and not _sees(ctx, NETWORK_B, patient, condition)
    add_member(client, "c", network=ECM_ONLY)  # a provider named as network: only networks follow Coverage
    assert not _sees(ctx, ECM_ONLY, patient, condition) and not _sees(ctx, NETWORK_A, patient, condition)
    assert _members(ctx).count(("Coverage", ECM_ONLY, patient)) == 1
    add_member(client, "c", network=NETWORK_B)
    assert _sees(ctx, NETWORK_B, patient, condition) and not _sees(ctx, NETWORK_A, patient, condition)


GRANTS = [
    _provider(PROVIDER_X),
    _provider(PROVIDER_Y),
    _provider(NETWORK_A),
    _provider(NETWORK_B),
    grant("patient/*.rs", organization=PROVIDER_X, patient="m-a"),
    grant("patient/*.rs", organization=PROVIDER_Y, patient="m-a"),
]


def _visible(world: World) -> list[tuple[str, str, int]]:
    ctx = world.ctx
    out = []
    for who in GRANTS:
        for member in (world.a, world.b):
            for ref in sorted(member.refs()):
                out.append((f"{who.organization}/{who.patient}", ref, as_grant(ctx, who, "GET", ref).status))
    return out


def test_backfill_migration_gives_the_same_rows_and_visibility(
    client: TestClient, ctx: Context, database_url: str
) -> None:
    world = two_members(client, ctx)
    rows, visible = _members(ctx), _visible(world)
    assert ("ServiceRequest", PROVIDER_X, "m-a") in rows and ("Coverage", NETWORK_B, "m-b") in rows
    assert any(status == 404 for *_, status in visible) and any(status == 200 for *_, status in visible)
    engine = create_engine(database_url)
    try:
        with engine.begin() as conn:
            command.downgrade(_config(conn), "0011")
        with engine.begin() as conn:
            command.upgrade(_config(conn), "head")
    finally:
        engine.dispose()
    assert _members(ctx) == rows
    assert _visible(world) == visible


@pytest.mark.parametrize("network", [NETWORK_A])
def test_only_current_versions_have_rows(client: TestClient, ctx: Context, network: str) -> None:
    """Writing the same assignment again replaces the rows of the rid, never adds to them."""
    patient, _ = _member_c(client)
    for _ in range(3):
        add_member(client, "c", network=network)
    assert _members(ctx).count(("Coverage", network, patient)) == 1


def test_batched_repository_writes_keep_members(ctx: Context) -> None:
    """The repository paths of the batched writers (HL7 v2 intake: ``create_history``; HN files' CHG rows:
    ``update_many``; transaction entries judged by the model pool: ``create(index=...)``) write and replace
    ``idx_member`` rows like a single create or update."""
    from gateway.search.extract import extract_values

    def task(owner: str) -> dict[str, Any]:
        return {
            "resourceType": "Task",
            "status": "requested",
            "intent": "order",
            "for": {"reference": "Patient/m-z"},
            "owner": {"reference": f"Organization/{owner}"},
        }

    def coverage(network: str) -> dict[str, Any]:
        return {
            "resourceType": "Coverage",
            "status": "active",
            "beneficiary": {"reference": "Patient/m-z"},
            "payor": [{"reference": "Organization/calop"}],
            "extension": [
                {
                    "url": "https://fhir.calaim-gateway.org/StructureDefinition/ext-health-network",
                    "valueReference": {"reference": f"Organization/{network}"},
                }
            ],
        }

    with ctx.repo.write() as tx:
        history = tx.create_history([(task(PROVIDER_X), "POST"), (task(PROVIDER_Y), "PUT")])
        judged = coverage(NETWORK_A)
        created = tx.create(judged, index=extract_values(judged, ctx.registry))
    assert _members(ctx) == [("Coverage", NETWORK_A, "m-z"), ("Task", PROVIDER_Y, "m-z")]
    with ctx.repo.write() as tx:
        tx.update_many([(task(PROVIDER_X), history[-1]), (coverage(NETWORK_B), created)])
    assert _members(ctx) == [("Coverage", NETWORK_B, "m-z"), ("Task", PROVIDER_X, "m-z")]
