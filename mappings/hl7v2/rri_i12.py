"""FHIR → RRI^I12 (return referral information, HL7 v2.5.1 chapter 11 §11.3.2): the plan tells the county
that the authorization of a county referral was decided or that the referral's status changed
(docs/hl7v2.md "RRI^I12 out").

| v2 | from |
| --- | --- |
| MSH-10 | ``control_id``: fixed per outbox event, so a resend of one change carries the same id |
| MSA (only for referrals that came in over v2) | AA and the MSH-10 of the county's REF^I12 |
| RF1-1 (table 0283) | the decision (A1/A2/A6 A, A3 R, A4 P, C R; a termination E) or the Task status |
| RF1-2 (table 0280) | ServiceRequest.priority |
| RF1-3 (CALAIMSVC) | the CalAIM service |
| RF1-4 (CALAIMRS, then CALAIMLCR) | the DHCS closed-loop status and the loop closure reason |
| RF1-6 | the county's referral id (ServiceRequest.identifier), else ours |
| RF1-7 / RF1-8 / RF1-9 | authoredOn / end of the authorization / date of the decision or status update |
| RF1-11 | the plan's referral id (ServiceRequest id) |
| AUT | plan (1, 2, 3), authorization number (6), period (4, 5), authorized units (9), decision date (10) |
| PRD RP / PRD RT | requester / performer Organizations (name, NPI in PRD-7) |
| PID | CIN (type MA), county MRN (type MR), name, birth date, sex |
| NTE | the decision's display, when there is one |
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from mappings.hl7v2.er7 import Field, message, segment
from mappings.hl7v2.tables import (
    CIN_SYSTEM,
    CLOSURE_REASON_SYSTEM,
    DECISION_TO_0283,
    GENDER_TO_SEX,
    REFERRAL_STATUS_SYSTEM,
    SERVICE_SYSTEM,
    SYSTEM_NAMES,
    TASK_STATUS_TO_0283,
)

JSON = dict[str, Any]
AUTHORIZATION_NUMBER_SYSTEM = "https://fhir.calaim-gateway.org/sid/authorization-number"
EXT_UNITS = "https://fhir.calaim-gateway.org/StructureDefinition/ext-authorized-units"


@dataclass(frozen=True)
class Party:
    """An Organization as PRD names it."""

    role: str  # PRD-1: RP referring, RT referred-to
    name: str
    npi: str | None = None


@dataclass(frozen=True)
class RriEnvelope:
    """The MSH of the RRI."""

    control_id: str
    timestamp: str  # DTM
    sending_application: str
    sending_facility: str
    receiving_application: str
    receiving_facility: str
    processing_id: str = "P"
    version: str = "2.5.1"
    original_control_id: str | None = None


@dataclass(frozen=True)
class RriInput:
    """What one outbox event says and the resources it names (read by the adapter)."""

    topic: str  # "authorization" or "referral-status"
    payload: JSON
    referral: JSON
    patient: JSON
    authorization: JSON | None = None
    parties: list[Party] = field(default_factory=list)
    plan_id: str = ""
    plan_name: str = ""
    mrn_system: str = ""
    referral_id_system: str = ""


def build_rri(envelope: RriEnvelope, data: RriInput) -> str:
    """The RRI^I12 message text (ER7, CR-terminated segments)."""
    segments = [
        segment(
            "MSH",
            envelope.sending_application,
            envelope.sending_facility,
            envelope.receiving_application,
            envelope.receiving_facility,
            envelope.timestamp,
            "",
            ("RRI", "I12", "RRI_I12"),
            envelope.control_id,
            envelope.processing_id,
            envelope.version,
            "",
            "",
            "",
            "",
            "",
            "UNICODE UTF-8",
        )
    ]
    if envelope.original_control_id:
        segments.append(segment("MSA", "AA", envelope.original_control_id))
    segments.append(_rf1(data))
    if data.authorization is not None:
        segments.append(_aut(data))
    parties = data.parties or [Party("RP", data.plan_name)]
    for party in parties:
        identifiers: Field = (party.npi, "NPI") if party.npi else ""
        segments.append(segment("PRD", party.role, (party.name,), "", "", "", "", identifiers))
    segments.append(_pid(data))
    decision = data.payload.get("decision")
    if data.topic == "authorization" and decision:
        segments.append(segment("NTE", "1", "", f"Authorization decision {decision} ({data.payload.get('kind', '')})"))
    return message(segments)


def referral_status_0283(data: RriInput) -> str:
    """RF1-1 for the event (table 0283)."""
    if data.topic == "authorization":
        if data.payload.get("kind") == "termination":
            return "E"
        return DECISION_TO_0283.get(str(data.payload.get("decision")), "P")
    return TASK_STATUS_TO_0283.get(str(data.payload.get("taskStatus")), "P")


def _rf1(data: RriInput) -> str:
    referral, payload = data.referral, data.payload
    status = referral_status_0283(data)
    service = payload.get("service") or _code(referral.get("code"), SERVICE_SYSTEM) or ""
    disposition: list[Field] = []
    if payload.get("referralStatus"):
        disposition.append((str(payload["referralStatus"]), "", SYSTEM_NAMES[REFERRAL_STATUS_SYSTEM]))
    if payload.get("closureReason"):
        disposition.append((str(payload["closureReason"]), "", SYSTEM_NAMES[CLOSURE_REASON_SYSTEM]))
    county_id = _identifier(referral, data.referral_id_system)
    period = payload.get("period") or {}
    status_date = payload.get("decidedOn") or payload.get("date") or ""
    return segment(
        "RF1",
        (status, {"A": "Accepted", "E": "Expired", "P": "Pending", "R": "Rejected"}[status], "HL70283"),
        _priority(referral.get("priority")),
        (service, "", SYSTEM_NAMES[SERVICE_SYSTEM]) if service else "",
        disposition if disposition else "",
        "",
        (county_id, "", "") if county_id else (str(referral.get("id", "")),),
        _dtm(referral.get("authoredOn")),
        _dtm(period.get("end")),
        _dtm(status_date),
        "",
        (str(referral.get("id", "")),),
    )


def _aut(data: RriInput) -> str:
    auth = data.authorization or {}
    number = _identifier(auth, AUTHORIZATION_NUMBER_SYSTEM) or str(data.payload.get("authorization") or "")
    period = data.payload.get("period") or {}
    units = sum(int(line.get("units") or 0) for line in data.payload.get("lines") or [])
    return segment(
        "AUT",
        (data.plan_id, data.plan_name),
        (data.plan_id, data.plan_name),
        data.plan_name,
        _dtm(period.get("start")),
        _dtm(period.get("end")),
        (number, data.plan_id) if number else "",
        "",
        "",
        str(units) if units else "",
        _dtm(data.payload.get("decidedOn")),
    )


def _pid(data: RriInput) -> str:
    member = data.patient
    identifiers: list[Field] = []
    for identifier in member.get("identifier") or ():
        if identifier.get("system") == CIN_SYSTEM:
            identifiers.append((str(identifier["value"]), "", "", "MEDI-CAL", "MA"))
        elif data.mrn_system and identifier.get("system") == data.mrn_system:
            identifiers.append((str(identifier["value"]), "", "", "COUNTY", "MR"))
    names: list[Field] = []
    for name in member.get("name") or ():
        given = list(name.get("given") or ())
        names.append((str(name.get("family", "")), given[0] if given else "", " ".join(given[1:])))
    return segment(
        "PID",
        "1",
        "",
        identifiers or "",
        "",
        names or "",
        "",
        _dtm(member.get("birthDate")),
        GENDER_TO_SEX.get(str(member.get("gender")), ""),
    )


def _priority(priority: Any) -> Field:
    code = {"stat": "S", "asap": "A", "urgent": "A", "routine": "R"}.get(str(priority))
    return (code, "", "HL70280") if code else ""


_FHIR_DATETIME = re.compile(
    r"^(\d{4})(?:-(\d{2}))?(?:-(\d{2}))?(?:T(\d{2}):(\d{2}):(\d{2})(?:\.\d+)?(Z|[+-]\d{2}:\d{2}))?$"
)


def _dtm(value: Any) -> str:
    """A FHIR date/dateTime/instant as DTM: YYYY[MM[DD[HHMMSS+ZZZZ]]] (fractions dropped)."""
    if not isinstance(value, str):
        return ""
    match = _FHIR_DATETIME.match(value)
    if match is None:
        return ""
    year, month, day, hour, minute, second, zone = match.groups()
    out = year + (month or "") + (day or "")
    if hour is not None:
        offset = "+0000" if zone == "Z" else zone.replace(":", "")
        out += f"{hour}{minute}{second}{offset}"
    return out


def _code(concept: Any, system: str) -> str | None:
    for coding in (concept or {}).get("coding", ()) if isinstance(concept, dict) else ():
        if coding.get("system") == system:
            return str(coding.get("code"))
    return None


def _identifier(resource: JSON, system: str) -> str | None:
    for identifier in resource.get("identifier") or ():
        if identifier.get("system") == system and identifier.get("value"):
            return str(identifier["value"])
    return None
