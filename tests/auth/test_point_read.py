"""The narrowed point read (issue 5): ``Access.read_sql`` folds the caller's visibility into the read's own
SELECT. It must let through exactly the rows the separate check (``Access.visibility_sql``) lets through,
return them as the plain read does, and answer a hidden resource exactly like a missing one (404, same
OperationOutcome), on SQLite and PostgreSQL (docs/access-control.md)."""

from __future__ import annotations

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from gateway.auth.grant import Grant
from gateway.fhir import guard
from gateway.fhir.context import Context
from gateway.store.schema import resource
from tests.access.support import READ_GRANTS, World, as_grant, two_members_one_deleted


@pytest.fixture
def world(client: TestClient, ctx: Context) -> World:
    return two_members_one_deleted(client, ctx)


GRANTS = READ_GRANTS


def _rows(ctx: Context) -> list[tuple[str, str]]:
    with ctx.repo.connect() as conn:
        return [(t, i) for t, i in conn.execute(select(resource.c.res_type, resource.c.res_id))]


@pytest.mark.parametrize("caller", GRANTS, ids=lambda g: f"{g.scope}@{g.organization}/{g.patient}")
def test_read_sql_lets_through_what_visibility_sql_does(world: World, caller: Grant) -> None:
    ctx = world.ctx
    access = guard.access_for(ctx, caller)
    dialect = ctx.repo.engine.dialect
    rows = _rows(ctx)
    assert len(rows) > 20
    for res_type, res_id in rows:
        plain = ctx.repo.read(res_type, res_id)
        assert plain is not None
        read_sql = access.read_sql(res_type, dialect=dialect)
        check_sql = access.visibility_sql(res_type, "r", dialect=dialect)
        assert (read_sql is None) == (check_sql is None), (res_type, res_id)
        if read_sql is None:
            continue
        assert check_sql is not None
        visible = ctx.repo.first(check_sql.sql, check_sql.params(res_id)) is not None
        narrowed = read_sql.stored(ctx.repo.first(read_sql.sql, read_sql.params(res_id)))
        assert (narrowed is not None) == visible, (caller.scope, caller.organization, res_type, res_id)
        if narrowed is not None:
            assert narrowed == plain, "the narrowed read returns the row the plain read does"


@pytest.mark.parametrize("caller", GRANTS[1:7], ids=lambda g: f"{g.scope}@{g.organization}/{g.patient}")
def test_hidden_answers_exactly_like_missing(world: World, caller: Grant) -> None:
    ctx = world.ctx
    hidden = 0
    for res_type, res_id in _rows(ctx):
        if res_type == "Organization":
            continue
        answer = as_grant(ctx, caller, "GET", f"{res_type}/{res_id}")
        if answer.status == 200:
            assert orjson.loads(answer.body or b"{}")["id"] == res_id
            continue
        missing = as_grant(ctx, caller, "GET", f"{res_type}/{res_id[:-1]}Z")
        if answer.status == 410:  # a deleted row the caller sees: as without narrowing
            assert as_grant(ctx, None, "GET", f"{res_type}/{res_id}").status == 410
            continue
        hidden += 1
        assert answer.status == missing.status == 404
        assert (answer.body or b"").replace(res_id.encode(), b"ID") == (missing.body or b"").replace(
            f"{res_id[:-1]}Z".encode(), b"ID"
        )
    assert hidden, "each of these callers has resources it may not see"


def test_read_sql_is_compiled_once_per_grant(world: World) -> None:
    ctx = world.ctx
    access = guard.access_for(ctx, GRANTS[1])
    first = access.read_sql("Condition", dialect=ctx.repo.engine.dialect)
    assert first is not None and "hn-" not in first.sql, "the organization is bound, not inline"
    assert len(first.params("x")) == first.sql.count("?" if ctx.repo.sqlite else "%s")
    assert access.read_sql("Condition", dialect=ctx.repo.engine.dialect) is first
    assert guard.access_for(ctx, GRANTS[0]).read_sql("Condition", dialect=ctx.repo.engine.dialect) is None
