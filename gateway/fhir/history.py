"""history interactions: instance, type and system (https://hl7.org/fhir/R4/http.html#history).

Newest first, paged by a keyset on the server-wide version sequence (``hseq``), so paging is stable
while new versions are written. ``_since`` filters by lastUpdated; ``_count`` bounds a page.
"""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import ColumnElement, select

from gateway.errors import BadRequest
from gateway.fhir.bundle_json import bundle_bytes, entry_bytes
from gateway.fhir.context import Context
from gateway.fhir.request import FhirRequest, FhirResponse
from gateway.fhir.resource_types import SERVED_TYPES
from gateway.search.dates import DateFormatError, instant_text, parse_range
from gateway.store.schema import resource, resource_version

HISTORY_PARAMS = frozenset({"_count", "_since", "_cursor", "_format", "_pretty"})


def instance_history(ctx: Context, request: FhirRequest, params: dict[str, str]) -> FhirResponse:
    """history of one resource: ``GET [type]/[id]/_history``."""
    conditions = [resource_version.c.res_type == params["type"], resource_version.c.res_id == params["id"]]
    return _history(ctx, request, conditions, f"{params['type']}/{params['id']}/_history", (params["type"],))


def type_history(ctx: Context, request: FhirRequest, params: dict[str, str]) -> FhirResponse:
    """history of a type: ``GET [type]/_history``."""
    condition = resource_version.c.res_type == params["type"]
    return _history(ctx, request, [condition], f"{params['type']}/_history", (params["type"],))


def system_history(ctx: Context, request: FhirRequest, params: dict[str, str]) -> FhirResponse:
    """history of the whole server: ``GET /_history``."""
    return _history(ctx, request, [], "_history", SERVED_TYPES)


def _history(
    ctx: Context, request: FhirRequest, conditions: list[ColumnElement[bool]], path: str, types: tuple[str, ...]
) -> FhirResponse:
    """The history Bundle of the versions meeting ``conditions`` (of resources of ``types``) that the caller
    may see."""
    args = _history_args(ctx, request)
    where = list(conditions)
    if args["since"] is not None:
        where.append(resource_version.c.last_updated >= args["since"])
    if args["cursor"] is not None:
        where.append(resource_version.c.hseq < args["cursor"])
    narrowing = ctx.narrowing(types, "rs")
    if narrowing is not None:
        where.append(resource_version.c.rid.in_(select(resource.c.rid).where(narrowing(resource, types))))
    count: int = args["count"]
    query = select(resource_version).where(*where).order_by(resource_version.c.hseq.desc()).limit(count + 1)
    with ctx.reading() as conn:
        rows = conn.execute(query).all()
    has_next = len(rows) > count
    rows = rows[:count]
    entries = [_entry(request.base_url, row) for row in rows]
    kept = [(k, v) for k, v in request.query if k != "_cursor"]
    links = [{"relation": "self", "url": _url(request.base_url, path, request.query)}]
    if has_next:
        token = base64.urlsafe_b64encode(str(rows[-1].hseq).encode()).decode().rstrip("=")
        links.append({"relation": "next", "url": _url(request.base_url, path, [*kept, ("_cursor", token)])})
    extra: dict[str, Any] = {"link": links}
    if not has_next and args["cursor"] is None:
        extra["total"] = len(rows)
    return FhirResponse(200, bundle_bytes("history", entries, extra=extra))


def _entry(base_url: str, row: Any) -> bytes:
    url = f"{row.res_type}/{row.res_id}"
    method = row.method
    status = {"POST": "201 Created", "DELETE": "204 No Content"}.get(row.method, "200 OK")
    fields = {
        "fullUrl": f"{base_url}/{url}",
        "request": {"method": method, "url": row.res_type if method == "POST" else url},
        "response": {
            "status": status,
            "etag": f'W/"{row.version_id}"',
            "lastModified": instant_text(row.last_updated),
        },
    }
    return entry_bytes(fields, None if row.deleted else row.body)


def _history_args(ctx: Context, request: FhirRequest) -> dict[str, Any]:
    args: dict[str, Any] = {"count": ctx.settings.default_page_size, "since": None, "cursor": None}
    for name, value in request.query:
        if name not in HISTORY_PARAMS:
            if request.prefer("handling") == "strict":
                raise BadRequest(f"Unknown history parameter {name[:64]}")
            continue
        try:
            if name == "_count":
                args["count"] = max(1, min(int(value), ctx.settings.max_page_size))
            elif name == "_since":
                args["since"] = parse_range(value)[0]
            elif name == "_cursor":
                padded = value + "=" * (-len(value) % 4)
                args["cursor"] = int(base64.urlsafe_b64decode(padded.encode()).decode())
        except (ValueError, DateFormatError):
            raise BadRequest(f"Invalid value for history parameter {name}: {value[:64]!r}") from None
    return args


def _url(base_url: str, path: str, query: list[tuple[str, str]]) -> str:
    return f"{base_url}/{path}" + (f"?{urlencode(query)}" if query else "")
