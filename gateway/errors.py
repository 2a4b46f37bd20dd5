"""The gateway's one error currency: ``FhirError`` and its subclasses, rendered as OperationOutcome.

Hierarchy (status code in brackets)::

    FhirError                      any failure with an HTTP status and OperationOutcome issues
    ├── BadRequest        [400]    malformed request, bad search parameter, unsupported modifier
    ├── Unauthorized      [401]    no valid credentials
    ├── Forbidden         [403]    credentials lack the scope
    ├── NotFound          [404]    unknown type, id or version
    ├── MethodNotAllowed  [405]    interaction not supported on this path
    ├── NotAcceptable     [406]    Accept header asks for a format not served
    ├── Conflict          [409]    version conflict, id clash, concurrent write
    ├── Gone              [410]    the resource was deleted
    ├── PreconditionFailed[412]    If-Match mismatch, conditional matched too many
    ├── PayloadTooLarge   [413]    body over the configured limit
    ├── UnsupportedMediaType [415] Content-Type not FHIR JSON
    ├── Unprocessable     [422]    resource fails validation (issues carry ``expression``)
    └── ServiceUnavailable[503]    database busy / timed out; carries Retry-After

Foreign exceptions (pydantic, sqlite/psycopg) are translated where they cross into the core, each in
one place; anything else becomes a 500 whose body says nothing about internals.
See https://hl7.org/fhir/R4/operationoutcome.html and https://hl7.org/fhir/R4/http.html#Status-Codes.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from typing import Any, ClassVar


@dataclass(frozen=True, slots=True)
class Issue:
    """One OperationOutcome.issue (https://hl7.org/fhir/R4/operationoutcome-definitions.html)."""

    code: str
    diagnostics: str
    severity: str = "error"
    expression: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"severity": self.severity, "code": self.code, "diagnostics": self.diagnostics}
        if self.expression:
            out["expression"] = list(self.expression)
        return out


def operation_outcome(issues: list[Issue] | tuple[Issue, ...]) -> dict[str, Any]:
    """An OperationOutcome resource holding ``issues``."""
    return {"resourceType": "OperationOutcome", "issue": [issue.to_json() for issue in issues]}


@dataclass
class FhirError(Exception):
    """A failure answered with ``status`` and an OperationOutcome of ``issues``."""

    message: str = "Error"
    issues: list[Issue] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)

    status: ClassVar[int] = 500
    issue_code: ClassVar[str] = "exception"

    def __post_init__(self) -> None:
        if not self.issues:
            self.issues = [Issue(code=self.issue_code, diagnostics=self.message)]
        Exception.__init__(self, self.message)

    def outcome(self) -> dict[str, Any]:
        """The OperationOutcome body of this error."""
        return operation_outcome(self.issues)


class BadRequest(FhirError):
    status = 400
    issue_code = "invalid"


class Unauthorized(FhirError):
    status = 401
    issue_code = "login"


class Forbidden(FhirError):
    status = 403
    issue_code = "forbidden"


class NotFound(FhirError):
    status = 404
    issue_code = "not-found"


class MethodNotAllowed(FhirError):
    status = 405
    issue_code = "not-supported"


class NotAcceptable(FhirError):
    status = 406
    issue_code = "not-supported"


class Conflict(FhirError):
    status = 409
    issue_code = "conflict"


class Gone(FhirError):
    status = 410
    issue_code = "deleted"


class PreconditionFailed(FhirError):
    status = 412
    issue_code = "conflict"


class PayloadTooLarge(FhirError):
    status = 413
    issue_code = "too-costly"


class UnsupportedMediaType(FhirError):
    status = 415
    issue_code = "not-supported"


class Unprocessable(FhirError):
    status = 422
    issue_code = "invalid"


class ServiceUnavailable(FhirError):
    status = 503
    issue_code = "transient"


class InternalError(FhirError):
    status = 500
    issue_code = "exception"


def frames(exc: BaseException) -> str:
    """Where an unexpected exception came from (``file:line function``, innermost last six), without its
    message: messages can quote resource content, i.e. PHI, and logs carry none."""
    return " <- ".join(
        f"{frame.filename.rsplit('/', 1)[-1]}:{frame.lineno} {frame.name}"
        for frame in reversed(traceback.extract_tb(exc.__traceback__)[-6:])
    )
