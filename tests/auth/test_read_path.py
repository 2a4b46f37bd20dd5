"""The guard's read path (issue 5): a token read outside a transaction checks its scope and gets its narrowed
SELECT in one look-up (``Access.readable``), handed to the read (``gateway.fhir.guard.run``). It must answer
and refuse exactly as the general path (``_guarded``) does, for every stored row, a missing id and a range of
grants, on SQLite and PostgreSQL (docs/access-control.md), and queue the audit record an AuditEvent needs
(docs/access-control.md "Audit": who, what, when, outcome, from where), spelled out here field by field."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, select

from gateway.auth.grant import Grant
from gateway.errors import FhirError, Forbidden
from gateway.fhir import guard
from gateway.fhir.audit import AuditTrail, RecordFields
from gateway.fhir.context import Context
from gateway.fhir.request import FhirRequest, FhirResponse
from gateway.fhir.routes import ROUTE_TABLE
from gateway.store.schema import resource
from tests.access.support import BASE, READ_GRANTS, World, two_members_one_deleted

READ = next(route for route in ROUTE_TABLE.routes if route.name == "read")
GRANTS = READ_GRANTS


@pytest.fixture
def world(client: TestClient, ctx: Context) -> World:
    return two_members_one_deleted(client, ctx)


@pytest.fixture
def trail(world: World) -> Iterator[AuditTrail]:
    """A real audit trail that keeps its records queued for the test (it writes them when closed)."""
    audit = AuditTrail(world.ctx.repo, flush_interval=60, batch=1_000_000, max_queued=2_000_000)
    yield audit
    audit.close()


def _answer(run: Callable[..., FhirResponse], *args: object) -> tuple[int, dict[str, str], bytes | None]:
    """Status, headers and body of a run; an error as the front door answers it (its OperationOutcome)."""
    try:
        response = run(*args)
    except FhirError as error:
        return error.status, error.headers, orjson.dumps(error.outcome())
    return response.status, response.headers, response.body


@pytest.mark.parametrize("caller", GRANTS, ids=lambda g: f"{g.scope}@{g.organization}/{g.patient}")
def test_the_read_path_answers_and_audits_as_the_general_path(world: World, trail: AuditTrail, caller: Grant) -> None:
    ctx = world.ctx._copy()
    ctx.audit = trail
    access = guard.access_for(ctx, caller)
    with ctx.repo.connect() as conn:
        rows = [(t, i) for t, i in conn.execute(select(resource.c.res_type, resource.c.res_id))]
    rows += [("Condition", "missing"), ("Patient", "m-a"), ("Patient", "m-a")]  # twice: remembered answers
    statuses = set()
    # Who (gateway.fhir.audit_events.Caller: client id, sub, token jti, fhirUser, organization, launch patient).
    who = (caller.client_id, caller.subject, caller.token_id, caller.fhir_user, caller.organization, caller.patient)
    for res_type, res_id in rows:
        if res_type == "AuditEvent":
            continue  # an auditor's AuditEvent read materializes the log first: the general path
        params = {"type": res_type, "id": res_id}
        request = FhirRequest("GET", f"{res_type}/{res_id}", base_url=BASE, grant=caller, client_address="10.0.0.9")
        before = len(trail.queued())
        earliest = time.time()
        fast = _answer(guard.run, ctx, READ, request, params)
        latest = time.time()
        general = _answer(guard._guarded, ctx, access, READ, request, params)
        assert fast == general, (caller.scope, caller.organization, res_type, res_id)
        queued = trail.queued()
        assert len(queued) == before + 1, "one record per access"
        record: RecordFields = queued[-1]
        # What (interaction, type, id; no operation, no query), the outcome (the status answered), when
        # (seconds since the epoch, taken during the call) and from where.
        expected = (who, "read", res_type, res_id, None, None, fast[0], record[7], "10.0.0.9")
        assert record == expected, (res_type, res_id)
        assert isinstance(record[7], float) and earliest <= record[7] <= latest
        # A plain tuple of strings, numbers and None (the collector untracks it: test_audit_record_gc.py).
        assert type(record) is tuple and type(record[0]) is tuple
        assert all(v is None or type(v) in (str, int, float) for v in (*record[0], *record[1:]))
        statuses.add(fast[0])
    assert statuses and statuses <= {200, 403, 404, 410}, statuses


def test_a_refused_type_is_refused_every_time(world: World) -> None:
    ctx = world.ctx
    access = guard.access_for(ctx, GRANTS[8])
    dialect = ctx.repo.engine.dialect
    for _ in range(2):
        with pytest.raises(Forbidden):
            access.readable("ServiceRequest", dialect)
    assert access.readable("Condition", dialect) is access.read_sql("Condition", dialect=dialect)
    assert access.readable("Condition", dialect) is access.readable("Condition", dialect)
    # Remembered by type, but for its dialect: another dialect gets its own statement, then this one its own.
    other = create_engine("postgresql+psycopg://" if dialect.name == "sqlite" else "sqlite://").dialect
    assert access.readable("Condition", other) == access.read_sql("Condition", dialect=other)
    assert access.readable("Condition", other) != access.readable("Condition", dialect)
    assert access.readable("Condition", dialect) is access.read_sql("Condition", dialect=dialect)
    assert guard.access_for(ctx, GRANTS[0]).readable("Condition", dialect) is None, "the plan: a plain read"
