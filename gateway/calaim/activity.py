"""Service documentation and ECM activity (issue 4; REFERENCE.md §6 "Payment").

Providers document services from their own EHR as Procedure (calaim-service-procedure) or Encounter
(calaim-service-encounter) with ``ext-service-units`` (15-minute units for ECM). The write hook checks
the link to the referral (``basedOn``: a CalAIM referral of the same member and service), fills in the
provider from the referral when the record names none (``Procedure.performer.actor``,
``Encounter.serviceProvider``), and enqueues ``calaim.service`` when a consumer reads it (none today).

``GET [base]/$ecm-activity?month=YYYY-MM[&organization=...][&patient=...]`` (OperationDefinition
ecm-activity) adds up the ECM units per member, provider and month. A unit counts toward payment only
if the member had a certified ECM authorization on the day of the service: REFERENCE.md §6 says outreach
counts if the member was authorized on the outreach date, and every other ECM service needs the
authorization anyway. Units of other days are reported apart (``unauthorizedUnits``). A Procedure that
names its Encounter (``Procedure.encounter``) is the finer record of the contact: that Encounter's units
are not added again. The threshold (6 units in Orange County) is plan.json ``ecm.payment``.
"""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import date
from typing import Any

from sqlalchemy import Connection

from gateway import jsonutil
from gateway.calaim import events
from gateway.calaim.authorizations import Authorization, of_member
from gateway.calaim.config import IG_BASE, SERVICE_SYSTEM
from gateway.calaim.parameters import read_parameters
from gateway.calaim.policy import Policy
from gateway.calaim.referrals import is_referral
from gateway.calaim.resources import (
    EXT_SERVICE_UNITS,
    PROFILE_ENCOUNTER,
    PROFILE_PROCEDURE,
    add_months,
    claims,
    conn_of,
    extension_value,
    first_code,
    iter_search,
    load,
    ref_id,
    reference,
    refuse,
    to_date,
)
from gateway.errors import BadRequest, Unprocessable
from gateway.fhir.context import Context
from gateway.fhir.hooks import WriteEvent
from gateway.fhir.request import FhirRequest, FhirResponse
from gateway.store.repository import StoredResource
from gateway.types import JSONObject

DEFINITION = f"{IG_BASE}/OperationDefinition/ecm-activity"
MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


def documents_service(resource: JSONObject | None) -> bool:
    """Whether a Procedure or Encounter documents a CalAIM service (claims the profile or carries units)."""
    if resource is None:
        return False
    profiled = claims(resource, PROFILE_PROCEDURE) or claims(resource, PROFILE_ENCOUNTER)
    return profiled or extension_value(resource, EXT_SERVICE_UNITS, "valueUnsignedInt") is not None


def _service(resource: JSONObject) -> str | None:
    element = resource.get("category") if resource["resourceType"] == "Procedure" else resource.get("serviceType")
    return first_code(element, SERVICE_SYSTEM)


def _provider(resource: JSONObject) -> str | None:
    if resource["resourceType"] == "Encounter":
        return ref_id(resource.get("serviceProvider"), "Organization")
    actors = [ref_id(p.get("actor"), "Organization") for p in resource.get("performer") or () if isinstance(p, dict)]
    return next((a for a in actors if a), None)


def _day(resource: JSONObject) -> date | None:
    if resource["resourceType"] == "Encounter":
        return to_date((resource.get("period") or {}).get("start"))
    return to_date(resource.get("performedDateTime")) or to_date((resource.get("performedPeriod") or {}).get("start"))


class ServiceDocumentationHook:
    """Write hook of ``Procedure`` and ``Encounter``: the link to the referral and the provider (module docstring)."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy

    def before(self, ctx: Context, event: WriteEvent) -> StoredResource | None:
        """Check the referral link; fill in the provider from the referral when missing."""
        record = event.resource
        if record is None or not documents_service(record):
            return None
        rtype = event.resource_type
        patient = ref_id(record.get("subject"), "Patient")
        if patient is None:
            text = "A documented service names its member (a Patient)"
            raise refuse(Unprocessable, "required", text, f"{rtype}.subject")
        provider = None
        for i, ref in enumerate(record.get("basedOn") or ()):
            referral_id = ref_id(ref, "ServiceRequest")
            if referral_id is None:
                continue
            provider = self._check_referral(ctx, record, referral_id, patient, f"{rtype}.basedOn[{i}]")
        if _provider(record) is None:
            if provider is None:
                text = "Name the provider (Procedure.performer.actor, Encounter.serviceProvider) or the referral"
                raise refuse(Unprocessable, "required", text, f"{rtype}.basedOn")
            if rtype == "Encounter":
                record["serviceProvider"] = self.policy.org(provider)
            else:
                record["performer"] = [*(record.get("performer") or ()), {"actor": self.policy.org(provider)}]
        return None

    def _check_referral(
        self, ctx: Context, record: JSONObject, referral_id: str, patient: str, where: str
    ) -> str | None:
        """The referral's provider; 422 unless it is a CalAIM referral of the same member and service."""
        found = load(conn_of(ctx), "ServiceRequest", referral_id)
        problem = ""
        if found is None or not is_referral(found[1]):
            problem = f"ServiceRequest/{referral_id} is not a CalAIM referral here"
        elif ref_id(found[1].get("subject"), "Patient") != patient:
            problem = f"ServiceRequest/{referral_id} is another member's referral"
        if found is None or problem:
            raise refuse(Unprocessable, "business-rule", problem, where)
        referral = found[1]
        service = _service(record)
        if service is not None and first_code(referral.get("code"), SERVICE_SYSTEM) != service:
            text = f"ServiceRequest/{referral_id} is a referral for another service than {service}"
            raise refuse(Unprocessable, "business-rule", text, where)
        return ref_id((referral.get("performer") or [None])[0], "Organization")

    def after(self, ctx: Context, event: WriteEvent) -> None:
        """Enqueue ``calaim.service`` for its consumers (none today: the weekly ECM activity log of
        REFERENCE.md §6 reads the stored records through ``$ecm-activity``; events.CONSUMERS)."""
        record, stored = event.resource, event.stored
        if not events.wanted(events.SERVICE) or record is None or stored is None or not documents_service(record):
            return
        day = _day(record)
        referrals = [ref_id(r, "ServiceRequest") for r in record.get("basedOn") or ()]
        payload: dict[str, Any] = {
            "patient": (record.get("subject") or {}).get("reference"),
            "provider": f"Organization/{_provider(record)}",
            "service": _service(record),
            "units": extension_value(record, EXT_SERVICE_UNITS, "valueUnsignedInt"),
            "date": day.isoformat() if day else None,
            "referral": next((f"ServiceRequest/{r}" for r in referrals if r), None),
        }
        events.emit(ctx, topic=events.SERVICE, stored=stored, payload=payload, referral=None)  # no consumer today


def ecm_activity(ctx: Context, request: FhirRequest, *, policy: Policy) -> FhirResponse:
    """``$ecm-activity``: a Parameters of ``activity`` per member and provider (OperationDefinition ecm-activity)."""
    values = _inputs(ctx, request, policy)
    month = values.get("month") or ""
    if not MONTH.match(month):
        raise BadRequest("$ecm-activity needs month=YYYY-MM")
    first = date.fromisoformat(f"{month}-01")
    organization = _id(values.get("organization"), "Organization")
    patient = _id(values.get("patient"), "Patient")
    with ctx.reading() as conn:
        totals = _totals(ctx, conn, policy, first=first, organization=organization, patient=patient)
    threshold = policy.plan.ecm.payment.monthly_unit_threshold
    parameters = []
    for (member, provider), (units, outside) in sorted(totals.items()):
        parts: list[JSONObject] = [
            {"name": "patient", "valueReference": reference("Patient", member)},
            {"name": "organization", "valueReference": policy.org(provider)},
            {"name": "month", "valueString": month},
            {"name": "units", "valueInteger": units},
        ]
        if outside:
            parts.append({"name": "unauthorizedUnits", "valueInteger": outside})
        parts.append({"name": "threshold", "valueInteger": threshold})
        parts.append({"name": "thresholdMet", "valueBoolean": units >= threshold})
        parameters.append({"name": "activity", "part": parts})
    body: JSONObject = {"resourceType": "Parameters"}
    if parameters:
        body["parameter"] = parameters
    return FhirResponse(200, jsonutil.dumps(body))


def _inputs(ctx: Context, request: FhirRequest, policy: Policy) -> dict[str, str]:
    if request.method == "POST" and (request.body or request.resource):
        body = request.resource or jsonutil.loads_resource(request.body or b"", max_depth=ctx.settings.max_json_depth)
        definition = policy.ig.resources[DEFINITION]
        beyond = "$ecm-activity takes month, organization and patient only"
        root = read_parameters(body, definition, policy=policy, beyond=beyond)
        return {p.name: str(p.value) for p in root.parts}
    return dict(request.query)


def _id(value: str | None, res_type: str) -> str | None:
    if not value:
        return None
    return ref_id(value, res_type) or value


def _totals(
    ctx: Context, conn: Connection, policy: Policy, *, first: date, organization: str | None, patient: str | None
) -> dict[tuple[str, str], tuple[int, int]]:
    """(member, provider) → (units on authorized days, units on other days), for ECM records of the month."""
    last = add_months(first, 1)
    base = [("date", f"ge{first.isoformat()}"), ("date", f"lt{last.isoformat()}")]
    if patient:
        base.append(("subject", f"Patient/{patient}"))
    by_performer = [("performer", f"Organization/{organization}")] if organization else []
    by_provider = [("service-provider", f"Organization/{organization}")] if organization else []
    procedures = list(iter_search(ctx, conn, "Procedure", base + by_performer))
    encounters = list(iter_search(ctx, conn, "Encounter", base + by_provider))
    seen_encounters = {ref_id(p.get("encounter"), "Encounter") for p in procedures if documents_service(p)}
    authorizations: dict[str, list[Authorization]] = {}
    totals: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for record in [*procedures, *(e for e in encounters if e.get("id") not in seen_encounters)]:
        units = extension_value(record, EXT_SERVICE_UNITS, "valueUnsignedInt")
        service, provider, day = _service(record), _provider(record), _day(record)
        member = ref_id(record.get("subject"), "Patient")
        if not isinstance(units, int) or service is None or not policy.is_ecm(service) or provider is None:
            continue
        if member is None or day is None or not first <= day < last or (organization and provider != organization):
            continue
        if member not in authorizations:
            found = of_member(ctx, conn, member, policy.plan.ecm.service)
            authorizations[member] = [a for a in found if a.certified(policy)]
        authorized = any(a.covers(day) for a in authorizations[member])
        totals[(member, provider)][0 if authorized else 1] += units
    return {key: (value[0], value[1]) for key, value in totals.items()}
