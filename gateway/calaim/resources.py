"""FHIR JSON helpers of the CalAIM workflow: the IG's canonical URLs, extensions, codings, references,
dates, and reads and writes of the store inside the ambient transaction.

The URLs are the IG's names (docs/calaim-ig.md), not policy: policy is read from the IG and plan data by
``gateway.calaim.policy``. Writes go through ``gateway.fhir.core.dispatch``, so every resource the workflow
writes is validated (R4 and the profiles it claims) and passes the write hooks like a REST write.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson
from sqlalchemy import Connection

from gateway.calaim.config import IG_BASE
from gateway.errors import FhirError, InternalError, Issue
from gateway.fhir.context import Context
from gateway.fhir.core import dispatch
from gateway.fhir.request import FhirRequest
from gateway.search.dates import instant_now
from gateway.store.repository import StoredResource, current_version
from gateway.types import JSONObject, QueryParams


def _sd(name: str) -> str:
    return f"{IG_BASE}/StructureDefinition/{name}"


PROFILE_REFERRAL = _sd("calaim-referral")
PROFILE_TASK = _sd("calaim-referral-task")
PROFILE_AUTH_REQUEST = _sd("calaim-authorization-request")
PROFILE_AUTHORIZATION = _sd("calaim-authorization")
PROFILE_PROCEDURE = _sd("calaim-service-procedure")
PROFILE_ENCOUNTER = _sd("calaim-service-encounter")

EXT_POF = _sd("ext-pof")
EXT_HEALTH_NETWORK = _sd("ext-health-network")
EXT_TRUSTED = _sd("ext-trusted-presumptive-provider")
EXT_REFERRAL_STATUS = _sd("ext-referral-status")
EXT_CLOSURE_REASON = _sd("ext-loop-closure-reason")
EXT_DECISION = _sd("ext-authorization-decision")
EXT_RESPONSIBLE_PARTY = _sd("ext-responsible-party")
EXT_KIND = _sd("ext-authorization-kind")
EXT_ANSWERS_REFERRAL = _sd("ext-answers-referral")
EXT_NOA_OWNER = _sd("ext-notice-of-action-owner")
EXT_UNITS = _sd("ext-authorized-units")
EXT_SERVICE_UNITS = _sd("ext-service-units")

REFERRAL_STATUS_SYSTEM = f"{IG_BASE}/CodeSystem/referral-status"
CLOSURE_REASON_SYSTEM = f"{IG_BASE}/CodeSystem/loop-closure-reason"
KIND_SYSTEM = f"{IG_BASE}/CodeSystem/authorization-kind"
AUTHORIZATION_NUMBER_SYSTEM = f"{IG_BASE}/sid/authorization-number"
DECISION_REQUEST_SYSTEM = f"{IG_BASE}/sid/decision-request-id"
REFERRAL_ID_SYSTEM = f"{IG_BASE}/sid/referral-id"
TASK_STATUS_SYSTEM = "http://hl7.org/fhir/task-status"
TASK_CODE_SYSTEM = "http://hl7.org/fhir/CodeSystem/task-code"

OPEN_REQUEST_STATUSES = ("draft", "active", "on-hold")
"""ServiceRequest statuses of a referral still open (https://hl7.org/fhir/R4/valueset-request-status.html)."""


# ----------------------------------------------------------------------------- profiles, extensions


def claims(resource: JSONObject | None, profile: str) -> bool:
    """Whether ``resource`` claims ``profile`` in ``meta.profile``."""
    meta = (resource or {}).get("meta")
    return isinstance(meta, dict) and profile in (meta.get("profile") or ())


def add_profile(resource: JSONObject, profile: str) -> None:
    """Claim ``profile`` (in place), keeping the other claims."""
    meta = resource.setdefault("meta", {})
    claimed = list(meta.get("profile") or ())
    if profile not in claimed:
        meta["profile"] = [*claimed, profile]


def extensions(element: JSONObject | None, url: str) -> list[JSONObject]:
    """The extensions of ``element`` with ``url``."""
    return [e for e in (element or {}).get("extension", ()) if isinstance(e, dict) and e.get("url") == url]


def extension_value(element: JSONObject | None, url: str, key: str) -> Any:
    """``value[x]`` (``key`` names it: ``valueCoding``, ...) of the first extension ``url``, or None."""
    found = extensions(element, url)
    return found[0].get(key) if found else None


def set_extension(element: JSONObject, extension: JSONObject) -> None:
    """Replace every extension with ``extension["url"]`` on ``element`` (in place) by ``extension``."""
    remove_extension(element, str(extension["url"]))
    element["extension"] = [*element.get("extension", ()), extension]


def remove_extension(element: JSONObject, url: str) -> None:
    """Drop every extension ``url`` of ``element`` (in place)."""
    kept = [e for e in element.get("extension", ()) if not (isinstance(e, dict) and e.get("url") == url)]
    if kept:
        element["extension"] = kept
    else:
        element.pop("extension", None)


def coding(system: str, code: str, display: str | None = None) -> JSONObject:
    """A Coding (https://hl7.org/fhir/R4/datatypes.html#Coding)."""
    out: JSONObject = {"system": system, "code": code}
    if display:
        out["display"] = display
    return out


def codes_of(concept: Any, system: str) -> list[str]:
    """The codes of ``system`` in a CodeableConcept."""
    if not isinstance(concept, dict):
        return []
    return [str(c["code"]) for c in concept.get("coding", ()) if c.get("system") == system and c.get("code")]


def first_code(concepts: Any, system: str) -> str | None:
    """The first code of ``system`` in a CodeableConcept or a list of them."""
    for concept in concepts if isinstance(concepts, list) else [concepts]:
        found = codes_of(concept, system)
        if found:
            return found[0]
    return None


def reference(res_type: str, res_id: str, display: str | None = None) -> JSONObject:
    """A literal Reference ``{res_type}/{res_id}``."""
    out: JSONObject = {"reference": f"{res_type}/{res_id}"}
    if display:
        out["display"] = display
    return out


def ref_id(ref: Any, res_type: str) -> str | None:
    """The id of a literal reference to ``res_type`` (relative, or absolute ending in ``Type/id``), else None."""
    text = ref.get("reference") if isinstance(ref, dict) else ref
    if not isinstance(text, str):
        return None
    head, slash, tail = text.partition("/")
    if slash and "/" not in tail:  # the usual relative ``Type/id``: no splitting (a per-row hot path)
        return tail if head == res_type and tail else None
    parts = text.split("/_history/")[0].rstrip("/").split("/")
    if len(parts) >= 2 and parts[-2] == res_type and parts[-1]:
        return parts[-1]
    return None


# ----------------------------------------------------------------------------- dates


def now_instant() -> str:
    """The current instant as FHIR text (UTC, milliseconds)."""
    return instant_now()[0]


def today() -> date:
    """Today's date on the server's clock (run the gateway in the plan's time zone: TZ=America/Los_Angeles)."""
    return date.today()  # the plan's calendar day, by the host's local zone


def add_months(day: date, months: int) -> date:
    """``day`` moved by ``months`` calendar months (clamped to the month's last day)."""
    index = day.month - 1 + months
    year, month = day.year + index // 12, index % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def period_end(start: date, months: int) -> date:
    """The last day of a period of ``months`` months starting on ``start`` (2024-05-02 + 12 → 2025-05-01)."""
    return add_months(start, months) - timedelta(days=1)


def to_date(value: Any) -> date | None:
    """The calendar date of a FHIR date or dateTime (as written, before any time zone shift)."""
    if not isinstance(value, str) or len(value) < 10:
        return None
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        return None


# ----------------------------------------------------------------------------- store


def body_of(stored: StoredResource) -> JSONObject:
    """The JSON of a stored (not deleted) version."""
    if stored.body is None:
        raise InternalError(f"{stored.res_type}/{stored.res_id} has no body")
    resource: JSONObject = orjson.loads(stored.body)
    return resource


def load(conn: Connection, res_type: str, res_id: str) -> tuple[StoredResource, JSONObject] | None:
    """The current version of a resource and its JSON; None if unknown or deleted."""
    stored = current_version(conn, res_type, res_id)
    if stored is None or stored.deleted:
        return None
    return stored, body_of(stored)


def conn_of(ctx: Context) -> Connection:
    """The connection of the ambient write transaction, with buffered rows flushed (so searches see them)."""
    if ctx.tx is None:
        raise InternalError("the CalAIM workflow needs a write transaction")
    ctx.tx.flush()
    return ctx.tx.conn


def find(ctx: Context, conn: Connection, res_type: str, params: QueryParams, *, limit: int) -> list[JSONObject]:
    """The first ``limit`` resources matching ``params`` (oldest first), as JSON."""
    out: list[JSONObject] = []
    for match in ctx.search.find(conn, resource_type=res_type, params=params, limit=limit):
        found = load(conn, res_type, match.res_id)
        if found is not None:
            out.append(found[1])
    return out


def iter_search(ctx: Context, conn: Connection, res_type: str, params: QueryParams) -> Iterator[JSONObject]:
    """Every resource matching ``params``, page by page (keyset paging: any size, one snapshot per page)."""
    query: QueryParams = [*params, ("_count", str(ctx.settings.max_page_size))]
    while True:
        bundle = orjson.loads(ctx.search.search(conn, resource_type=res_type, params=query, base_url="", strict=True))
        for entry in bundle.get("entry", ()):
            if entry.get("search", {}).get("mode") == "match":
                yield entry["resource"]
        following = [link["url"] for link in bundle.get("link", ()) if link.get("relation") == "next"]
        if not following:
            return
        query = parse_qsl(urlsplit(following[0]).query, keep_blank_values=True)


def write(ctx: Context, method: str, path: str, resource: JSONObject) -> StoredResource:
    """Create (POST ``Type``) or update (PUT ``Type/id``) through the FHIR core in ``ctx``'s transaction."""
    response = dispatch(ctx, FhirRequest(method, path, resource=resource, base_url=ctx.settings.public_base_url or ""))
    if response.stored is None:
        raise InternalError(f"{method} {path} stored nothing")
    return response.stored


def refuse(error: type[FhirError], code: str, text: str, expression: str = "") -> FhirError:
    """A ``FhirError`` with one issue (``expression``: where in the request the problem is)."""
    return error(message=text, issues=[Issue(code, text, expression=(expression,) if expression else ())])
