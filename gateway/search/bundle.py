"""The searchset Bundle, assembled around the stored resource bytes (DESIGN.md choice 1).

https://hl7.org/fhir/R4/bundle.html#searchset and https://hl7.org/fhir/R4/search.html#return:
``entry.fullUrl`` is ``{base}/{type}/{id}``; ``entry.search.mode`` is ``match``, ``include`` or
``outcome``; the links are ``self`` (the search as understood: only the parameters that took effect,
https://hl7.org/fhir/R4/search.html#selflink), ``first`` and, when more follows, ``next``.
"""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import quote, urlencode

from gateway.errors import Issue, operation_outcome
from gateway.fhir.bundle_json import bundle_bytes, entry_bytes
from gateway.jsonutil import dumps
from gateway.search.dates import instant_now
from gateway.types import QueryParams


def search_url(base_url: str, resource_type: str | None, params: QueryParams) -> str:
    """``[base]/[type]?params`` (or ``[base]?params`` for a system search)."""
    path = base_url.rstrip("/") + (f"/{resource_type}" if resource_type else "")
    if not params:
        return path
    return path + "?" + urlencode(params, quote_via=quote, safe=":,/")


def match_entry(base_url: str, res_type: str, res_id: str, body: bytes, mode: str) -> bytes:
    """One entry with the resource's bytes spliced in unchanged."""
    fields = {"fullUrl": f"{base_url.rstrip('/')}/{res_type}/{res_id}", "search": {"mode": mode}}
    return entry_bytes(fields, body)


def outcome_entry(issues: list[Issue]) -> bytes:
    """An OperationOutcome entry (search mode ``outcome``) with warnings about the search itself."""
    fields = {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "search": {"mode": "outcome"}}
    return entry_bytes(fields, dumps(operation_outcome(issues)))


def searchset(
    *,
    links: list[tuple[str, str]],
    total: int | None,
    entries: list[bytes],
) -> bytes:
    """The Bundle bytes: envelope serialized once, entries as given."""
    extra: dict[str, Any] = {"id": str(uuid.uuid4()), "meta": {"lastUpdated": instant_now()[0]}}
    if total is not None:
        extra["total"] = total
    extra["link"] = [{"relation": relation, "url": url} for relation, url in links]
    return bundle_bytes("searchset", entries, extra=extra)
