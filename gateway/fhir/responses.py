"""Building FHIR responses from stored versions: headers of https://hl7.org/fhir/R4/http.html#ops
and the ``Prefer: return=`` choice (minimal, representation, OperationOutcome)."""

from __future__ import annotations

from gateway import jsonutil
from gateway.errors import BadRequest, Issue, operation_outcome
from gateway.fhir.request import FhirRequest, FhirResponse, http_date
from gateway.store.repository import StoredResource

PREFER_RETURN = ("minimal", "representation", "OperationOutcome")


def version_headers(request: FhirRequest, stored: StoredResource, *, location: bool = False) -> dict[str, str]:
    """ETag and Last-Modified, and Location (the new version's URL) after a write."""
    headers = {"ETag": stored.etag, "Last-Modified": http_date(stored.last_updated)}
    if location:
        headers["Location"] = f"{request.base_url}/{stored.res_type}/{stored.res_id}/_history/{stored.version_id}"
    return headers


def prefer_return(request: FhirRequest) -> str:
    """The requested ``Prefer: return=`` (default representation)."""
    value = request.prefer("return") or "representation"
    if value not in PREFER_RETURN:
        raise BadRequest(f"Unsupported Prefer return={value[:40]}; expected one of {', '.join(PREFER_RETURN)}")
    return value


def write_response(request: FhirRequest, stored: StoredResource, status: int, message: str) -> FhirResponse:
    """The answer to create/update/patch: status, Location/ETag/Last-Modified, body per Prefer."""
    headers = version_headers(request, stored, location=True)
    choice = prefer_return(request)
    if choice == "minimal":
        return FhirResponse(status, None, headers, stored=stored)
    if choice == "OperationOutcome":
        outcome = operation_outcome([Issue(code="informational", diagnostics=message, severity="information")])
        return FhirResponse(status, jsonutil.dumps(outcome), headers, stored=stored)
    return FhirResponse(status, stored.body, headers, stored=stored)


def outcome_response(status: int, message: str, *, headers: dict[str, str] | None = None) -> FhirResponse:
    """A response whose body is an informational OperationOutcome."""
    outcome = operation_outcome([Issue(code="informational", diagnostics=message, severity="information")])
    return FhirResponse(status, jsonutil.dumps(outcome), headers or {})
