"""Search interactions: ``GET [type]?``, ``POST [type]/_search``, and the system-level forms
(https://hl7.org/fhir/R4/http.html#search, https://hl7.org/fhir/R4/search.html#Introduction)."""

from __future__ import annotations

from urllib.parse import parse_qsl

from gateway.errors import BadRequest, UnsupportedMediaType
from gateway.fhir.context import Context
from gateway.fhir.request import FhirRequest, FhirResponse
from gateway.fhir.resource_types import SERVED_TYPES
from gateway.types import QueryParams

FORM = "application/x-www-form-urlencoded"
MAX_PARAMETERS = 100
MAX_VALUE_LENGTH = 4096
MAX_OR_VALUES = 500


def search_params(request: FhirRequest) -> QueryParams:
    """URL parameters, plus the form body of ``POST _search`` (search.html: both are combined)."""
    params = list(request.query)
    if request.method == "POST":
        content_type = (request.header("content-type") or "").split(";")[0].strip().lower()
        if request.body and content_type != FORM:
            raise UnsupportedMediaType(f"POST _search takes {FORM}, not {content_type or 'no content type'}")
        if request.body:
            params.extend(parse_qsl(request.body.decode("utf-8", errors="replace"), keep_blank_values=True))
    _check_bounds(params)
    return params


def _check_bounds(params: QueryParams) -> None:
    """Bound the work one search can ask for: parameter count, value length, OR-list length."""
    if len(params) > MAX_PARAMETERS:
        raise BadRequest(f"A search may use at most {MAX_PARAMETERS} parameters")
    for name, value in params:
        if len(value) > MAX_VALUE_LENGTH or value.count(",") >= MAX_OR_VALUES:
            raise BadRequest(
                f"The value of {name[:64]} is too long "
                f"(at most {MAX_VALUE_LENGTH} characters, {MAX_OR_VALUES} alternatives)"
            )


def search_type(ctx: Context, request: FhirRequest, params: dict[str, str]) -> FhirResponse:
    """search of one type: ``GET [type]?params`` and ``POST [type]/_search``."""
    return _search(ctx, request, params["type"])


def search_system(ctx: Context, request: FhirRequest, params: dict[str, str]) -> FhirResponse:
    """search across types: ``GET [base]?_type=...`` and ``POST [base]/_search``."""
    return _search(ctx, request, None)


def _search(ctx: Context, request: FhirRequest, resource_type: str | None) -> FhirResponse:
    query = search_params(request)
    strict = request.prefer("handling") == "strict"
    with ctx.reading() as conn:
        body = ctx.search.search(
            conn,
            resource_type=resource_type,
            params=query,
            base_url=request.base_url,
            strict=strict,
            narrowing=ctx.narrowing(SERVED_TYPES, "rs"),
        )
    return FhirResponse(200, body)
