"""Narrowing SQL is one text per scope shape (issue 5): grants bind their organization and launch patient
as parameters instead of carrying them inline, so the statements a pinned SQLite connection prepares do not
grow with the number of grants (``gateway.search.bound``, ``gateway.auth.shapes``; docs/access-control.md
"How narrowing is built"), on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from gateway.auth.grant import Grant
from gateway.fhir import guard
from gateway.fhir.context import Context
from tests.access.support import PROVIDER_X, PROVIDER_Y, World, as_grant, body_of, grant, two_members

APPS = 150
"""Patient apps taking turns: more than sqlite3's 128 cached statements per connection."""


@pytest.fixture
def world(client: TestClient, ctx: Context) -> Iterator[World]:
    yield two_members(client, ctx)


def _apps() -> list[tuple[Grant, str | None]]:
    """Patient grants in turn, with the member whose data each sees: a's apps at provider X, b's at Y, and
    b's apps at X (X does not see b: nothing)."""
    launches = [(PROVIDER_X, "m-a", "a"), (PROVIDER_Y, "m-b", "b"), (PROVIDER_X, "m-b", None)]
    return [
        (grant("patient/*.rs", organization=org, patient=patient, name=f"app-{i}"), sees)
        for i in range(APPS)
        for org, patient, sees in [launches[i % 3]]
    ]


def test_grants_of_one_shape_share_their_point_statements(world: World) -> None:
    ctx = world.ctx
    dialect = ctx.repo.engine.dialect
    apps = [guard.access_for(ctx, g) for g, _ in _apps()]
    providers = [guard.access_for(ctx, grant("user/*.rs", organization=o, name=o)) for o in (PROVIDER_X, PROVIDER_Y)]
    for accesses in (apps, providers):
        reads = {a.read_sql("Condition", dialect=dialect) for a in accesses}
        checks = {a.visibility_sql("Patient", "r", dialect=dialect) for a in accesses}
        assert None not in reads and None not in checks
        assert len({p.sql for p in reads if p is not None}) == 1
        assert len({p.sql for p in checks if p is not None}) == 1
        assert len({a.template() for a in accesses}) == 1, "one template per shape"
    assert apps[0].template() is not providers[0].template()
    point = apps[0].read_sql("Condition", dialect=dialect)
    assert point is not None and "m-a" not in point.sql and PROVIDER_X not in point.sql
    assert point.params("c-1").count("m-a") >= 1 and "c-1" in point.params("c-1")


def test_many_patient_grants_in_turn_see_their_own_through_bounded_statements(world: World) -> None:
    ctx = world.ctx
    members = {"a": world.a, "b": world.b}
    condition_of = {key: member.resources["Condition"][0] for key, member in members.items()}
    statements = ctx.search.statements
    for caller, sees in _apps():
        for key, condition in condition_of.items():
            status = as_grant(ctx, caller, "GET", f"Condition/{condition}").status
            assert status == (200 if key == sees else 404), (caller.patient, caller.organization, key)
        page = body_of(as_grant(ctx, caller, "GET", "Condition", query=[("_count", "5")]))
        found = sorted(e["resource"]["id"] for e in page.get("entry", []))
        assert found == (sorted(members[sees].resources["Condition"]) if sees else []), caller.token_id
        count = body_of(as_grant(ctx, caller, "GET", "Condition", query=[("_summary", "count")]))
        assert count["total"] == len(found)
    # One compiled narrowing (and candidate set) per shape and statement, not per grant.
    assert len(statements.narrowings) <= 4
    assert len(statements.candidates) <= 4


def test_ids_are_bound_never_spliced(world: World) -> None:
    """A launch patient or organization that looks like SQL is a value like any other."""
    ctx = world.ctx
    condition = world.a.resources["Condition"][0]
    for patient, org in [("m-a' OR '1'='1", PROVIDER_X), ("m-a", "x') OR ('1'='1")]:
        caller = grant("patient/*.rs", organization=org, patient=patient, name="odd")
        assert as_grant(ctx, caller, "GET", f"Condition/{condition}").status == 404
        page = body_of(as_grant(ctx, caller, "GET", "Condition", query=[("_count", "5")]))
        assert not page.get("entry")
