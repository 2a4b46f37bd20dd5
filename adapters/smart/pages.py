"""The HTML pages of the authorization server: login, patient picker, consent, error (Jinja2 templates
in ``adapters/smart/templates``, autoescaped), and the patient search behind the picker.

Every page is sent with ``Cache-Control: no-store`` and may not be framed (clickjacking on the consent
form): ``X-Frame-Options: DENY`` and ``Content-Security-Policy: frame-ancestors 'none'``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.responses import HTMLResponse

from adapters.smart import scopes
from adapters.smart.registry import User
from gateway.auth.grant import Grant
from gateway.errors import FhirError
from gateway.fhir.context import Context
from gateway.fhir.core import dispatch
from gateway.fhir.request import FhirRequest

TEMPLATES = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"), autoescape=select_autoescape(["html"])
)
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
}
PICKER_LIMIT = 20
_PERMISSION_WORDS = {"c": "create", "r": "read", "u": "update", "d": "delete", "s": "search"}
_NAMED_MEANINGS = {
    scopes.LAUNCH: "use the patient and encounter the EHR opened it with",
    scopes.LAUNCH_PATIENT: "know which patient you choose",
    scopes.LAUNCH_ENCOUNTER: "know the current encounter",
    scopes.OPENID: "know who you are",
    scopes.FHIR_USER: "know your FHIR user record",
    scopes.OFFLINE_ACCESS: "keep access after you sign out",
    scopes.ONLINE_ACCESS: "keep access while you are signed in",
}


def render(template: str, status: int = 200, **values: Any) -> HTMLResponse:
    """A page from ``template`` with the no-store, no-frame headers."""
    return HTMLResponse(TEMPLATES.get_template(template).render(**values), status_code=status, headers=PAGE_HEADERS)


def error_page(error: str, description: str | None = None, status: int = 400) -> HTMLResponse:
    """An error the browser shows (when redirecting to the client would be unsafe)."""
    return render("error.html", status, error=error, description=description)


def scope_meaning(scope: str) -> str:
    """A plain-language line for the consent page."""
    if scope in _NAMED_MEANINGS:
        return _NAMED_MEANINGS[scope]
    parsed = scopes.parse_clinical(scope)
    if parsed is None:
        return scope
    actions = ", ".join(word for letter, word in _PERMISSION_WORDS.items() if letter in parsed.permissions)
    what = "all record types" if parsed.resource_type == "*" else f"{parsed.resource_type} records"
    whose = {"patient": "of the chosen patient", "user": "you can see", "system": "of the whole system"}[parsed.context]
    narrowed = f" matching {parsed.query}" if parsed.query else ""
    return f"{actions} {what}{narrowed} {whose}"


@dataclass(frozen=True, slots=True)
class PatientChoice:
    """A line of the patient picker."""

    id: str
    display: str
    birth_date: str | None


def user_grant(user: User, client_id: str) -> Grant:
    """What a signed-in user may see while choosing a patient: the patients of their organization (the
    FHIR core narrows searches by ``organization``)."""
    return Grant(
        subject=user.username,
        client_id=client_id,
        scope="user/Patient.rs",
        token_id="patient-picker",  # noqa: S106 - an id, not a secret
        expires_at=int(time.time()) + 60,
        fhir_user=user.fhir_user,
        organization=user.organization,
    )


def search_patients(
    ctx: Context, *, user: User, client_id: str, base_url: str, name: str
) -> tuple[list[PatientChoice], bool]:
    """Patients the user may see whose name matches ``name`` (all when empty), at most ``PICKER_LIMIT``;
    and whether there were more."""
    query = [("_count", str(PICKER_LIMIT + 1)), ("_sort", "family")]
    if name.strip():
        query.append(("name", name.strip()))
    request = FhirRequest("GET", "Patient", query=query, base_url=base_url, grant=user_grant(user, client_id))
    body = orjson.loads(dispatch(ctx, request).body or b"{}")
    choices = [_choice(entry["resource"]) for entry in body.get("entry", []) if "resource" in entry]
    return choices[:PICKER_LIMIT], len(choices) > PICKER_LIMIT


def visible_patient(
    ctx: Context, *, user: User, client_id: str, base_url: str, patient_id: str
) -> PatientChoice | None:
    """The patient ``patient_id`` if the user may see it."""
    request = FhirRequest("GET", f"Patient/{patient_id}", base_url=base_url, grant=user_grant(user, client_id))
    try:
        response = dispatch(ctx, request)
    except FhirError:
        return None
    return _choice(orjson.loads(response.body or b"{}")) if response.status == 200 else None


def _choice(resource: dict[str, Any]) -> PatientChoice:
    names = resource.get("name") or [{}]
    first = names[0]
    display = first.get("text") or " ".join([*first.get("given", []), first.get("family", "")]).strip()
    return PatientChoice(id=resource["id"], display=display or resource["id"], birth_date=resource.get("birthDate"))
