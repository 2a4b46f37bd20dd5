"""Content negotiation for the FHIR REST API (https://hl7.org/fhir/R4/http.html#mime-type).

The gateway speaks JSON only: ``application/fhir+json`` (and ``application/json``). An Accept header
or ``_format`` that admits no JSON is a 406; a body in another media type is a 415.
"""

from __future__ import annotations

from gateway.errors import NotAcceptable, UnsupportedMediaType

JSON_TYPES = frozenset({"application/fhir+json", "application/json", "application/json+fhir"})
ACCEPTABLE = JSON_TYPES | {"*/*", "application/*", "application/json-patch+json"}
FORMAT_ALIASES = frozenset({"json", "application/fhir+json", "application/json", "application/json+fhir"})
JSON_PATCH = "application/json-patch+json"
FORM = "application/x-www-form-urlencoded"


def media_type(header: str | None) -> str:
    """The bare media type of a Content-Type header (parameters such as charset dropped)."""
    return (header or "").split(";", 1)[0].strip().lower()


def check_accept(accept: str | None, format_param: str | None) -> None:
    """406 unless the client accepts FHIR JSON (``_format`` overrides Accept, http.html#mime-type)."""
    if format_param is not None:
        if format_param.strip().lower() not in FORMAT_ALIASES:
            raise NotAcceptable(f"_format={format_param[:40]} is not served; this server speaks application/fhir+json")
        return
    if not accept:
        return
    for part in accept.split(","):
        kind, _, params = part.partition(";")
        if kind.strip().lower() in ACCEPTABLE and "q=0" not in params.replace(" ", "").split(";"):
            return
    raise NotAcceptable(f"Accept: {accept[:80]} admits no format this server speaks (application/fhir+json)")


def check_content_type(route_name: str, content_type: str | None, has_body: bool) -> None:
    """415 when a body's media type does not fit the interaction."""
    if not has_body:
        return
    kind = media_type(content_type)
    if route_name in ("patch", "conditional-patch"):
        if kind != JSON_PATCH:
            raise UnsupportedMediaType(
                f"PATCH takes {JSON_PATCH} (FHIRPath Patch is not supported), not {kind or 'none'}"
            )
        return
    if route_name in ("search-type-post", "search-system-post"):
        if kind != FORM:
            raise UnsupportedMediaType(f"POST _search takes {FORM}, not {kind or 'none'}")
        return
    if kind not in JSON_TYPES:
        raise UnsupportedMediaType(f"Content-Type {kind or 'none'} is not supported; send application/fhir+json")
