"""Access enforcement around every interaction of a caller with a ``Grant`` (SMART App Launch 2.x;
issue 5 "Enforcement in the FHIR core").

``run`` is the one entry of the web front door and of ``dispatch`` (so each batch/transaction entry
is checked like a request of its own):

- the route and type decide the permission (``c``, ``r``, ``u``, ``d``, ``s`` of SMART v2 scopes); a
  caller without a scope granting it gets 403;
- reads, vreads, instance history and the targets of updates and deletes must be visible to the caller
  (``gateway.auth.access``); a hidden resource answers 404 exactly like a missing one, so ids cannot be
  probed (a read checks it in its own SELECT: ``Access.read_sql``, one statement);
- searches, history and conditional interactions run with the caller's narrowing in their SQL;
- a write runs in a transaction that is rolled back unless the written version is visible to the
  caller afterwards (a provider cannot write into another provider's members or referrals); Patients
  created through ``user/``/``system/`` scopes are exempt, since a member becomes visible only through
  the referral that follows;
- every guarded interaction is audited (``gateway.fhir.audit``), successful or not.
"""

from __future__ import annotations

import time

from sqlalchemy import select

from gateway.auth.access import AUDIT_EVENT, Access
from gateway.auth.grant import Grant
from gateway.errors import FhirError, Forbidden, NotFound
from gateway.fhir import interactions
from gateway.fhir.context import Context
from gateway.fhir.request import FhirRequest, FhirResponse
from gateway.fhir.resource_types import SERVED_TYPES
from gateway.fhir.router import Route
from gateway.store.schema import resource

READS = {"read": "r", "vread": "r", "history-instance": "r"}
TYPE_SEARCHES = {"search-type", "search-type-post", "history-type"}
SYSTEM_SEARCHES = {"search-system", "search-system-post", "history-system"}
WRITES = {
    "create": "c",
    "update": "u",
    "patch": "u",
    "delete": "d",
    "conditional-update": "u",
    "conditional-patch": "u",
    "conditional-delete": "d",
}
OPERATIONS = {"operation-system", "operation-type", "operation-instance"}
OPEN_ROUTES = {"capabilities"}
MAX_CACHED_ACCESS = 10_000


def run(ctx: Context, route: Route, request: FhirRequest, params: dict[str, str]) -> FhirResponse:
    """Run ``route`` for ``request``, enforcing ``request.grant`` (``None``: the gateway itself)."""
    grant = request.grant
    if grant is None or route.name in OPEN_ROUTES:
        return route.handler(ctx, request, params)
    access = ctx.access_cache.get(grant) or access_for(ctx, grant)
    started = time.time()
    # The hottest guarded request (issue 5), a read outside a transaction: the scope check and the read's
    # narrowed SELECT are one look-up (``Access.readable``), handed to the read instead of a context copy
    # carrying the access; the checks and answers are those of ``_guarded`` (tests/auth/test_read_path.py).
    plain_read = route.handler is interactions.read and ctx.tx is None and params["type"] != AUDIT_EVENT
    try:
        if plain_read:
            response = interactions.read(ctx, request, params, access.readable(params["type"], ctx.repo.engine.dialect))
        else:
            response = _guarded(ctx, access, route, request, params)
    except FhirError as error:
        _audit(ctx, grant, route, request, params, error.status, started)
        raise
    _audit(ctx, grant, route, request, params, response.status, started)
    return response


def access_for(ctx: Context, grant: Grant) -> Access:
    """The ``Access`` of ``grant`` (cached per grant: built once per token, not per request)."""
    cache = ctx.access_cache
    found = cache.get(grant)
    if found is None:
        if len(cache) >= MAX_CACHED_ACCESS:
            cache.clear()
        found = cache[grant] = Access(grant, ctx.registry, ctx.organization_roles)
    return found


def _guarded(ctx: Context, access: Access, route: Route, request: FhirRequest, params: dict[str, str]) -> FhirResponse:
    name, res_type = route.name, params.get("type", "")
    scoped = ctx.with_access(access)
    if res_type == AUDIT_EVENT and ctx.audit is not None and ctx.tx is None:
        _audit_catch_up(ctx, access, "r" if name in READS else "s")
    if name == "batch-transaction":
        return route.handler(ctx, request, params)  # each entry is dispatched with the grant
    if name in READS:
        access.require(res_type, READS[name])
        if name != "read" or ctx.tx is not None:  # a read outside a transaction narrows its own SELECT
            _require_visible(scoped, res_type, params["id"], "r")
        return route.handler(scoped, request, params)
    if name in TYPE_SEARCHES:
        access.require(res_type, "s")
        return route.handler(scoped, request, params)
    if name in SYSTEM_SEARCHES:
        if not any(access.permits(t, "s") for t in SERVED_TYPES):
            raise Forbidden("The access token's scopes allow no search")
        return route.handler(scoped, request, params)
    if name in WRITES:
        return _write(scoped, access, route, request, params, WRITES[name])
    if name in OPERATIONS:
        return _operation(scoped, access, route, request, params)
    raise Forbidden(f"The interaction {name} is not available to access tokens")


def _audit_catch_up(ctx: Context, access: Access, permission: str) -> None:
    """Before an auditor reads AuditEvents, materialize every access recorded so far (they are written
    late, off the request path: ``gateway.fhir.audit``); not inside a transaction, which holds the writer."""
    if ctx.audit is not None and access.permits(AUDIT_EVENT, permission):
        ctx.audit.catch_up()


def _write(
    ctx: Context, access: Access, route: Route, request: FhirRequest, params: dict[str, str], permission: str
) -> FhirResponse:
    res_type = params["type"]
    if res_type == AUDIT_EVENT:
        raise Forbidden("AuditEvents are written by the gateway only")
    access.require(res_type, permission)
    if "id" in params:
        _require_visible(ctx, res_type, params["id"], permission)
        if permission == "u" and not _exists(ctx, res_type, params["id"]):
            access.require(res_type, "c")  # update as create
    exempt = res_type == "Patient" and permission == "c" and access.grant.patient is None

    def unit() -> FhirResponse:
        with ctx.writing() as tx:
            inner = ctx.in_transaction(tx).with_access(access)
            response = route.handler(inner, request, params)
            stored = response.stored
            checked = stored is not None and not stored.deleted and not exempt
            if checked and stored is not None and not _visible(inner, stored.res_type, stored.res_id, permission):
                raise Forbidden(f"The written {res_type} would be outside what the access token may see")
            return response

    return ctx.run_write(unit)  # retried as a whole when it loses a uniqueness race


def _operation(
    ctx: Context, access: Access, route: Route, request: FhirRequest, params: dict[str, str]
) -> FhirResponse:
    op = params.get("op", "").removeprefix("$")
    res_type = params.get("type")
    if op == "validate" and res_type:
        if not any(access.permits(res_type, p) for p in "cruds"):
            raise Forbidden(f"The access token's scopes do not cover {res_type}")
        if "id" in params:
            _require_visible(ctx, res_type, params["id"], "r")
        return route.handler(ctx, request, params)
    if op == "submit" and res_type:
        access.require(res_type, "c")
        return route.handler(ctx, request, params)
    if not access.plan:
        raise Forbidden(f"The operation ${op} is for the plan's staff and systems")
    if res_type:
        access.require(res_type, "u" if "id" in params else "c")
    elif not access.permits("Patient", "s"):
        raise Forbidden(f"The operation ${op} needs a scope that allows searching")
    return route.handler(ctx, request, params)


def _visible(ctx: Context, res_type: str, res_id: str, permission: str) -> bool:
    if ctx.access is None:
        return True
    point = ctx.access.visibility_sql(res_type, permission, dialect=ctx.repo.engine.dialect)
    if point is None:
        return True
    if ctx.tx is None:
        return ctx.repo.first(point.sql, point.params(res_id)) is not None
    with ctx.reading() as conn:  # inside a transaction: see its own writes
        return conn.exec_driver_sql(point.sql, point.params(res_id)).first() is not None


def _require_visible(ctx: Context, res_type: str, res_id: str, permission: str) -> None:
    """404 when ``res_type/res_id`` exists but is hidden from the caller (a missing one is left to the
    handler, which answers it itself)."""
    if not _visible(ctx, res_type, res_id, permission) and _exists(ctx, res_type, res_id):
        raise NotFound(f"{res_type}/{res_id[:64]} is not known")


def _exists(ctx: Context, res_type: str, res_id: str) -> bool:
    """Whether a current (possibly deleted) row of ``res_type/res_id`` exists, as the caller's transaction sees it."""
    query = select(resource.c.rid).where(resource.c.res_type == res_type, resource.c.res_id == res_id)
    with ctx.reading() as conn:
        return conn.execute(query).first() is not None


def _audit(
    ctx: Context,
    grant: Grant,
    route: Route,
    request: FhirRequest,
    params: dict[str, str],
    status: int,
    started: float,
) -> None:
    if ctx.audit is None:
        return
    get = params.get
    # A plain tuple of strings, numbers and ``None`` (``AuditRecord``'s fields; the caller as the grant's
    # ``audit_caller``, an empty query as ``None``): the garbage collector untracks it at its first
    # collection, while a namedtuple, or a tuple holding the grant or a list, is walked by every older
    # collection for as long as it waits in the queue (~0.5 µs per read, docs/performance.md).
    record = (
        grant.audit_caller,
        route.name,
        get("type"),
        get("id"),
        get("op"),
        request.query or None,
        status,
        started,
        request.client_address,
    )
    ctx.audit.record(record)
