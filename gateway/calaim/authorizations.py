"""Authorizations as stored: CoverageEligibilityResponse (profile calaim-authorization) answering a
CoverageEligibilityRequest (calaim-authorization-request). Reading them back, finding those of a referral
or of a member and service, and building the pair (https://hl7.org/fhir/R4/coverageeligibilityresponse.html).

An authorization's number is its ``preAuthRef`` and its identifier of system ``{ig}/sid/authorization-number``;
``insurance[0].benefitPeriod`` is the authorized period; each ``insurance[0].item`` one service line
(CalAIM service in ``category``, HCPCS code in ``productOrService``, modifier in ``modifier``, units in
``ext-authorized-units``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date

from sqlalchemy import Connection

from gateway.calaim.config import HCPCS_SYSTEM, RESPONSIBLE_PARTY_SYSTEM, SERVICE_SYSTEM, X12_306_SYSTEM
from gateway.calaim.policy import CERTIFYING_DECISIONS, DECISION_TASK_MAP, Policy
from gateway.calaim.resources import (
    AUTHORIZATION_NUMBER_SYSTEM,
    DECISION_REQUEST_SYSTEM,
    EXT_ANSWERS_REFERRAL,
    EXT_DECISION,
    EXT_KIND,
    EXT_NOA_OWNER,
    EXT_RESPONSIBLE_PARTY,
    EXT_UNITS,
    KIND_SYSTEM,
    PROFILE_AUTH_REQUEST,
    PROFILE_AUTHORIZATION,
    codes_of,
    coding,
    extension_value,
    find,
    first_code,
    ref_id,
    reference,
    to_date,
)
from gateway.fhir.context import Context
from gateway.types import JSONObject

MAX_AUTHORIZATIONS = 500
"""Most authorizations read for one referral or member and service (far above any real history)."""


@dataclass(frozen=True, slots=True)
class Line:
    """One service line: HCPCS code, modifiers and units."""

    code: str
    modifiers: tuple[str, ...] = ()
    units: int | None = None


@dataclass(frozen=True, slots=True)
class Authorization:
    """The fields of a stored authorization that the workflow reads."""

    id: str
    body: JSONObject
    number: str | None
    decision: str | None
    kind: str | None
    responsible_party: str | None
    notice_owner: str | None
    referral_id: str | None
    patient_id: str | None
    service: str | None
    start: date | None
    end: date | None
    lines: tuple[Line, ...]

    @classmethod
    def of(cls, body: JSONObject) -> Authorization:
        """Read a CoverageEligibilityResponse."""
        insurance = (body.get("insurance") or [{}])[0]
        period = insurance.get("benefitPeriod") or {}
        items = insurance.get("item") or []
        lines = tuple(
            Line(
                code=str(first_code(item.get("productOrService"), HCPCS_SYSTEM)),
                modifiers=tuple(m for mod in item.get("modifier", ()) for m in codes_of(mod, HCPCS_SYSTEM)),
                units=extension_value(item, EXT_UNITS, "valueUnsignedInt"),
            )
            for item in items
            if first_code(item.get("productOrService"), HCPCS_SYSTEM)
        )
        return cls(
            id=str(body.get("id")),
            body=body,
            number=body.get("preAuthRef"),
            decision=first_code(extension_value(body, EXT_DECISION, "valueCodeableConcept"), X12_306_SYSTEM),
            kind=(extension_value(body, EXT_KIND, "valueCoding") or {}).get("code"),
            responsible_party=(extension_value(body, EXT_RESPONSIBLE_PARTY, "valueCoding") or {}).get("code"),
            notice_owner=ref_id(extension_value(body, EXT_NOA_OWNER, "valueReference"), "Organization"),
            referral_id=ref_id(extension_value(body, EXT_ANSWERS_REFERRAL, "valueReference"), "ServiceRequest"),
            patient_id=ref_id(body.get("patient"), "Patient"),
            service=next((s for item in items for s in codes_of(item.get("category"), SERVICE_SYSTEM)), None),
            start=to_date(period.get("start")),
            end=to_date(period.get("end")),
            lines=lines,
        )

    def certified(self, policy: Policy) -> bool:
        """Whether the decision certifies the service (ValueSet certifying-decision: A1, A2, A6)."""
        return self.decision is not None and policy.in_value_set(CERTIFYING_DECISIONS, X12_306_SYSTEM, self.decision)

    def covers(self, day: date) -> bool:
        """Whether ``day`` falls in the authorized period."""
        return self.start is not None and self.start <= day and (self.end is None or day <= self.end)


def of_referral(ctx: Context, conn: Connection, referral_id: str) -> list[Authorization]:
    """The authorizations answering a referral (SearchParameter CoverageEligibilityResponse-referral)."""
    params = [("referral", f"ServiceRequest/{referral_id}")]
    found = find(ctx, conn, "CoverageEligibilityResponse", params, limit=MAX_AUTHORIZATIONS)
    return [Authorization.of(body) for body in found]


def of_member(ctx: Context, conn: Connection, patient_id: str, service: str) -> list[Authorization]:
    """The authorizations of a member for a service (SearchParameters patient and service)."""
    params = [("patient", f"Patient/{patient_id}"), ("service", f"{SERVICE_SYSTEM}|{service}")]
    found = find(ctx, conn, "CoverageEligibilityResponse", params, limit=MAX_AUTHORIZATIONS)
    return [Authorization.of(body) for body in found]


def current(policy: Policy, authorizations: list[Authorization]) -> Authorization | None:
    """The latest certified authorization (by period start), the one a reauthorization follows and a
    modification or termination changes."""
    certified = [a for a in authorizations if a.certified(policy) and a.start is not None]

    def order(auth: Authorization) -> tuple[date, str]:
        return auth.start or date.min, str(auth.body.get("meta", {}).get("lastUpdated"))

    return max(certified, key=order, default=None)


def new_number(decided_on: date) -> str:
    """A new authorization number: the decision date and a random part (unique without a counter row)."""
    return f"AUTH-{decided_on:%Y%m%d}-{uuid.uuid4().hex[:10].upper()}"


def items(service: JSONObject, lines: tuple[Line, ...], units_url: str, *, required: bool | None) -> list[JSONObject]:
    """Service lines as ``item`` elements (one with only the service when there are no lines)."""
    out: list[JSONObject] = []
    for line in lines or (None,):
        item: JSONObject = {"category": {"coding": [service]}}
        if line is not None:
            item["productOrService"] = {"coding": [coding(HCPCS_SYSTEM, line.code)]}
            if line.modifiers:
                item["modifier"] = [{"coding": [coding(HCPCS_SYSTEM, m)]} for m in line.modifiers]
            if line.units is not None:
                item["extension"] = [{"url": units_url, "valueUnsignedInt": line.units}]
        if required is not None:
            item["authorizationRequired"] = required
        out.append(item)
    return out


@dataclass(frozen=True, slots=True)
class Pair:
    """What the request/response pair of a decision says (built by ``gateway.calaim.decide``)."""

    policy: Policy
    referral_id: str
    patient_id: str
    service: str
    provider: str | None
    coverage_id: str
    decision: str
    kind: str
    responsible_party: str
    notice_owner: str | None
    period: tuple[date, date] | None
    lines: tuple[Line, ...]
    reason: str | None
    decided_on: date
    request_key: str | None = None
    """The client's ``requestId`` of the decision (identifier ``{ig}/sid/decision-request-id``)."""

    def _service(self) -> JSONObject:
        return self.policy.coded(SERVICE_SYSTEM, self.service)

    def _kind(self) -> JSONObject:
        return {"url": EXT_KIND, "valueCoding": self.policy.coded(KIND_SYSTEM, self.kind)}

    def request(self) -> JSONObject:
        """The CoverageEligibilityRequest (profile calaim-authorization-request)."""
        plan = self.policy.plan_organization
        resource: JSONObject = {
            "resourceType": "CoverageEligibilityRequest",
            "meta": {"profile": [PROFILE_AUTH_REQUEST]},
            "extension": [
                self._kind(),
                {"url": EXT_ANSWERS_REFERRAL, "valueReference": reference("ServiceRequest", self.referral_id)},
            ],
            "status": "active",
            "purpose": ["auth-requirements"],
            "patient": reference("Patient", self.patient_id),
            "created": self.decided_on.isoformat(),
            "insurer": self.policy.org(plan),
            "insurance": [{"focal": True, "coverage": reference("Coverage", self.coverage_id)}],
            "item": items(self._service(), self.lines, EXT_UNITS, required=None),
        }
        if self.request_key is not None:
            resource["identifier"] = [{"system": DECISION_REQUEST_SYSTEM, "value": self.request_key}]
        if self.provider is not None:
            resource["provider"] = self.policy.org(self.provider)
        if self.period is not None:
            resource["servicedPeriod"] = {"start": self.period[0].isoformat(), "end": self.period[1].isoformat()}
        return resource

    def response(self, *, request_id: str, number: str, created: str) -> JSONObject:
        """The CoverageEligibilityResponse (profile calaim-authorization) for the stored request ``request_id``."""
        plan = self.policy.plan_organization
        decision_display = self.policy.decision_display(self.decision)
        decision = {"coding": [coding(X12_306_SYSTEM, self.decision, decision_display)], "text": decision_display}
        extensions: list[JSONObject] = [
            {"url": EXT_DECISION, "valueCodeableConcept": decision},
            {
                "url": EXT_RESPONSIBLE_PARTY,
                "valueCoding": self.policy.coded(RESPONSIBLE_PARTY_SYSTEM, self.responsible_party),
            },
            self._kind(),
            {"url": EXT_ANSWERS_REFERRAL, "valueReference": reference("ServiceRequest", self.referral_id)},
        ]
        if self.notice_owner is not None:
            extensions.append({"url": EXT_NOA_OWNER, "valueReference": self.policy.org(self.notice_owner)})
        certified = self.period is not None
        insurance: JSONObject = {"coverage": reference("Coverage", self.coverage_id), "inforce": certified}
        if self.period is not None:
            insurance["benefitPeriod"] = {"start": self.period[0].isoformat(), "end": self.period[1].isoformat()}
        insurance["item"] = items(self._service(), self.lines, EXT_UNITS, required=True)
        resource: JSONObject = {
            "resourceType": "CoverageEligibilityResponse",
            "meta": {"profile": [PROFILE_AUTHORIZATION]},
            "extension": extensions,
            "identifier": [{"system": AUTHORIZATION_NUMBER_SYSTEM, "value": number}],
            "status": "active",
            "purpose": ["auth-requirements"],
            "patient": reference("Patient", self.patient_id),
            "created": created,
            "request": reference("CoverageEligibilityRequest", request_id),
            # A decision that leaves the Task where it is (A4 pended) is not final yet.
            "outcome": "complete" if self.policy.translate(DECISION_TASK_MAP, self.decision) else "queued",
            "disposition": self.reason or decision_display,
            "insurer": self.policy.org(plan),
            "insurance": [insurance],
            "preAuthRef": number,
        }
        if self.provider is not None:
            resource["requestor"] = self.policy.org(self.provider)
        return resource
