"""Instance and type interactions: read, vread, create, update, patch, delete, and their conditional
forms (https://hl7.org/fhir/R4/http.html). Each is a short function registered in ``routes.py``."""

from __future__ import annotations

from types import EllipsisType
from typing import Any

import jsonpatch

from gateway import jsonutil
from gateway.auth.shapes import PointSql
from gateway.errors import BadRequest, Conflict, Gone, NotFound, PreconditionFailed, Unprocessable
from gateway.fhir import conditional
from gateway.fhir.context import Context
from gateway.fhir.request import FhirRequest, FhirResponse
from gateway.fhir.responses import outcome_response, version_headers, write_response
from gateway.fhir.validation import ensure_valid, raise_errors
from gateway.store.repository import StoredResource, WriteTransaction, current_version
from gateway.types import JSONObject


def request_resource(ctx: Context, request: FhirRequest, res_type: str) -> JSONObject:
    """The request body as a resource of ``res_type`` (400 when malformed or of another type)."""
    if request.resource is not None:
        resource = request.resource
    elif request.body:
        resource = jsonutil.loads_resource(request.body, max_depth=ctx.settings.max_json_depth)
    else:
        raise BadRequest("The request needs a resource in its body")
    actual = resource.get("resourceType")
    if actual != res_type:
        raise BadRequest(f"The body is a {str(actual)[:64]}, but the URL names {res_type}")
    return resource


def parse_if_match(request: FhirRequest) -> int | None:
    """The version an If-Match header demands (https://hl7.org/fhir/R4/http.html#concurrency)."""
    raw = request.header("if-match")
    if raw is None:
        return None
    tag = raw.strip()
    tag = tag.removeprefix("W/").strip('"')
    if not tag.isdigit():
        raise BadRequest(f'If-Match must be an ETag like W/"3", got {raw[:40]!r}')
    return int(tag)


def check_if_match(expected: int | None, current: StoredResource | None) -> None:
    """412 when the current version is not the one If-Match named."""
    if expected is None:
        return
    if current is None or current.deleted or current.version_id != expected:
        have = "no current version" if current is None or current.deleted else f"version {current.version_id}"
        raise PreconditionFailed(f'If-Match W/"{expected}" does not match: the resource has {have}')


def _visible(stored: StoredResource | None, res_type: str, res_id: str) -> StoredResource:
    if stored is None:
        raise NotFound(f"{res_type}/{res_id} is not known")
    if stored.deleted:
        raise Gone(f"{res_type}/{res_id} was deleted", headers=version_headers_only(stored))
    return stored


def version_headers_only(stored: StoredResource) -> dict[str, str]:
    return {"ETag": stored.etag}


# --- read -------------------------------------------------------------------------------------


def read(
    ctx: Context, request: FhirRequest, params: dict[str, str], point: PointSql | EllipsisType | None = ...
) -> FhirResponse:
    """read: https://hl7.org/fhir/R4/http.html#read (304 for a matching If-None-Match).

    For a caller with narrowed access (``ctx.access``), the visibility condition is part of the read's own
    SELECT (``Access.read_sql``): a hidden resource is not found, exactly like a missing one. ``point``: that
    SELECT (``None``: a plain read), given by the guard's read path (``gateway.fhir.guard.run``) instead of
    a context copy carrying the caller's access; outside a transaction only."""
    res_type, res_id = params["type"], params["id"]
    if ctx.tx is None:
        if point is ...:
            access = ctx.access
            point = access.read_sql(res_type, dialect=ctx.repo.engine.dialect) if access is not None else None
        found = (
            ctx.repo.read(res_type, res_id)
            if point is None
            else point.stored(ctx.repo.first(point.sql, point.params(res_id)))
        )
    else:
        ctx.tx.flush()
        found = current_version(ctx.tx.conn, res_type, res_id)
    stored = _visible(found, res_type, res_id)
    headers = version_headers(request, stored)
    matching = request.header("if-none-match")
    if matching is not None and matching in (headers["ETag"], f'"{stored.version_id}"'):
        return FhirResponse(304, None, headers)
    return FhirResponse(200, stored.body, headers, stored=stored)


def vread(ctx: Context, request: FhirRequest, params: dict[str, str]) -> FhirResponse:
    """vread: https://hl7.org/fhir/R4/http.html#vread (410 for a version that is a deletion)."""
    res_type, res_id, vid = params["type"], params["id"], params["vid"]
    if not vid.isdigit():
        raise NotFound(f"{res_type}/{res_id} has no version {vid[:20]}")
    stored = ctx.repo.vread(res_type, res_id, int(vid))
    if stored is None:
        raise NotFound(f"{res_type}/{res_id} has no version {vid}")
    if stored.deleted:
        raise Gone(f"Version {vid} of {res_type}/{res_id} is a deletion", headers=version_headers_only(stored))
    return FhirResponse(200, stored.body, version_headers(request, stored), stored=stored)


# --- create -----------------------------------------------------------------------------------


def _validate(request: FhirRequest, resource: JSONObject, res_type: str) -> None:
    """422 unless ``resource`` is valid (validation.html): judged already in a transaction's workers
    (``request.judgement``), or here (without the R4B model pass when it ran elsewhere)."""
    if request.judgement is not None:
        raise_errors(request.judgement.issues)
    else:
        ensure_valid(resource, resource_type=res_type, with_model=not request.model_checked)


def create(ctx: Context, request: FhirRequest, params: dict[str, str]) -> FhirResponse:
    """create and conditional create: https://hl7.org/fhir/R4/http.html#create, #ccreate."""
    res_type = params["type"]
    resource = request_resource(ctx, request, res_type)
    resource.pop("id", None)  # http.html#create: a server-assigned id replaces any id in the body
    _validate(request, resource, res_type)
    condition_text = request.header("if-none-exist")
    condition = conditional.parse_condition(condition_text) if condition_text else None
    assigned_id = request.assigned_id

    def unit() -> tuple[StoredResource, bool]:
        with ctx.writing() as tx:
            if condition is not None and not request.condition_resolved:
                existing = conditional.existing_for_create(ctx, tx, res_type, condition)
                if existing is not None:
                    return existing, False
            stored, created = ctx.store_create(
                tx, resource, res_id=assigned_id, method="POST", judgement=request.judgement
            )
            if condition is not None and created:
                conditional.claim(tx, res_type, condition, stored.rid)
            return stored, created

    stored, created = ctx.run_write(unit)
    if not created:
        return write_response(request, stored, 200, f"{res_type}/{stored.res_id} already matches the condition")
    return write_response(request, stored, 201, f"Created {res_type}/{stored.res_id}")


# --- update -----------------------------------------------------------------------------------


def update(ctx: Context, request: FhirRequest, params: dict[str, str]) -> FhirResponse:
    """update, including update-as-create: https://hl7.org/fhir/R4/http.html#update."""
    res_type, res_id = params["type"], params["id"]
    resource = request_resource(ctx, request, res_type)
    body_id = resource.get("id")
    if body_id is None:
        raise BadRequest("The resource in an update must carry its id")
    if body_id != res_id:
        raise BadRequest(f"The body's id {str(body_id)[:64]!r} differs from the URL's id {res_id!r}")
    _validate(request, resource, res_type)
    expected = parse_if_match(request)

    def unit() -> tuple[StoredResource, int]:
        with ctx.writing() as tx:
            return _write_version(ctx, tx, resource, tx.current(res_type, res_id), expected, method="PUT")

    stored, status = ctx.run_write(unit)
    return write_response(request, stored, status, f"Updated {res_type}/{res_id}")


def _write_version(
    ctx: Context,
    tx: WriteTransaction,
    resource: JSONObject,
    current: StoredResource | None,
    expected: int | None,
    *,
    method: str,
) -> tuple[StoredResource, int]:
    check_if_match(expected, current)
    if current is None:
        stored, created = ctx.store_create(tx, resource, res_id=resource["id"], method=method)
        return stored, 201 if created else 200
    status = 201 if current.deleted else 200
    return ctx.store_update(tx, resource, current, method=method), status


def conditional_update(ctx: Context, request: FhirRequest, params: dict[str, str]) -> FhirResponse:
    """conditional update: https://hl7.org/fhir/R4/http.html#cond-update (0 → create, 1 → update, >1 → 412)."""
    res_type = params["type"]
    condition = conditional.parse_condition_query(request.query)
    resource = request_resource(ctx, request, res_type)
    _validate(request, resource, res_type)
    expected = parse_if_match(request)

    def unit() -> tuple[StoredResource, int]:
        with ctx.writing() as tx:
            match = conditional.find_one(ctx, tx, res_type, condition)
            if match is None:
                body_id = resource.get("id")
                if body_id is not None and tx.current(res_type, body_id) is not None:
                    raise Conflict(f"{res_type}/{body_id} exists but does not match the condition")
                if expected is not None:
                    check_if_match(expected, None)
                stored, created = ctx.store_create(tx, resource, res_id=body_id, method="PUT")
                return stored, 201 if created else 200
            if resource.get("id", match.res_id) != match.res_id:
                raise BadRequest(f"The body's id differs from the id of the matching {res_type}/{match.res_id}")
            resource["id"] = match.res_id
            return _write_version(ctx, tx, resource, match, expected, method="PUT")

    stored, status = ctx.run_write(unit)
    return write_response(request, stored, status, f"Updated {res_type}/{stored.res_id}")


# --- patch ------------------------------------------------------------------------------------


def patch(ctx: Context, request: FhirRequest, params: dict[str, str]) -> FhirResponse:
    """patch with JSON Patch (RFC 6902): https://hl7.org/fhir/R4/http.html#patch."""
    res_type, res_id = params["type"], params["id"]
    operations = _patch_document(ctx, request)
    expected = parse_if_match(request)

    def unit() -> tuple[StoredResource, int]:
        with ctx.writing() as tx:
            current = _visible(tx.current(res_type, res_id), res_type, res_id)
            check_if_match(expected, current)
            patched = apply_patch(current, operations)
            return ctx.store_update(tx, patched, current, method="PATCH"), 200

    stored, status = ctx.run_write(unit)
    return write_response(request, stored, status, f"Patched {res_type}/{res_id}")


def conditional_patch(ctx: Context, request: FhirRequest, params: dict[str, str]) -> FhirResponse:
    """conditional patch: https://hl7.org/fhir/R4/http.html#patch (exactly one match required)."""
    res_type = params["type"]
    condition = conditional.parse_condition_query(request.query)
    operations = _patch_document(ctx, request)
    expected = parse_if_match(request)

    def unit() -> StoredResource:
        with ctx.writing() as tx:
            match = conditional.find_one(ctx, tx, res_type, condition)
            if match is None:
                raise NotFound(f"No {res_type} matches the condition")
            check_if_match(expected, match)
            return ctx.store_update(tx, apply_patch(match, operations), match, method="PATCH")

    stored = ctx.run_write(unit)
    return write_response(request, stored, 200, f"Patched {res_type}/{stored.res_id}")


def _patch_document(ctx: Context, request: FhirRequest) -> list[Any]:
    if request.resource is not None:
        raise BadRequest("A JSON Patch must be sent as a Binary in a Bundle entry; not supported here")
    if not request.body:
        raise BadRequest("PATCH needs a JSON Patch document")
    operations = jsonutil.loads_any(request.body, max_depth=ctx.settings.max_json_depth)
    if not isinstance(operations, list):
        raise BadRequest("A JSON Patch document is an array of operations (RFC 6902)")
    return operations


def apply_patch(current: StoredResource, operations: list[Any]) -> JSONObject:
    """Apply ``operations`` to the stored body; the result must keep type and id and stay valid."""
    assert current.body is not None
    original = jsonutil.loads_resource(current.body, max_depth=1000)
    try:
        patched = jsonpatch.apply_patch(original, operations)
    except jsonpatch.JsonPatchTestFailed as exc:
        raise Unprocessable(f"JSON Patch test failed: {exc}") from None
    except (
        jsonpatch.JsonPatchException,
        jsonpatch.JsonPointerException,
        TypeError,
        KeyError,
        ValueError,
    ) as exc:
        raise BadRequest(f"Invalid JSON Patch: {exc}") from None
    if not isinstance(patched, dict):
        raise Unprocessable("The patch did not produce a resource")
    if patched.get("resourceType") != current.res_type or patched.get("id") != current.res_id:
        raise Unprocessable("A patch may not change the resource type or id")
    ensure_valid(patched, resource_type=current.res_type)
    return patched


# --- delete -----------------------------------------------------------------------------------


def delete(ctx: Context, request: FhirRequest, params: dict[str, str]) -> FhirResponse:
    """delete: https://hl7.org/fhir/R4/http.html#delete (idempotent: deleting a deleted resource is 204)."""
    res_type, res_id = params["type"], params["id"]
    expected = parse_if_match(request)

    def unit() -> StoredResource | None:
        with ctx.writing() as tx:
            current = tx.current(res_type, res_id)
            if current is None:
                raise NotFound(f"{res_type}/{res_id} is not known")
            check_if_match(expected, current)
            return None if current.deleted else ctx.store_delete(tx, current)

    stored = ctx.run_write(unit)
    return _deleted_response(request, stored, f"Deleted {res_type}/{res_id}")


def conditional_delete(ctx: Context, request: FhirRequest, params: dict[str, str]) -> FhirResponse:
    """conditional delete: https://hl7.org/fhir/R4/http.html#cdelete (single match; several → 412)."""
    res_type = params["type"]
    condition = conditional.parse_condition_query(request.query)

    def unit() -> StoredResource | None:
        with ctx.writing() as tx:
            match = conditional.find_one(ctx, tx, res_type, condition)
            return ctx.store_delete(tx, match) if match is not None else None

    stored = ctx.run_write(unit)
    message = f"Deleted {res_type}/{stored.res_id}" if stored else f"No {res_type} matched; nothing deleted"
    return _deleted_response(request, stored, message)


def _deleted_response(request: FhirRequest, stored: StoredResource | None, message: str) -> FhirResponse:
    headers = {"ETag": stored.etag} if stored is not None else {}
    if request.prefer("return") == "OperationOutcome":
        response = outcome_response(200, message, headers=headers)
        response.stored = stored
        return response
    return FhirResponse(204, None, headers, stored=stored)
