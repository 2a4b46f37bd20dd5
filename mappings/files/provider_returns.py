"""Return transmission file (RTF) and outreach tracker file (OTF) records -> FHIR (pure functions).

RTF (layout ``return-transmission``): the member's ECM enrollment with the provider becomes an
EpisodeOfCare (profile calaim-enrollment); the referral status columns become the move of the member's
referral Task (``task_move``). OTF (layout ``outreach-tracker``): each outreach attempt becomes a Procedure
(profile calaim-service-procedure) whose units are the minutes in 15-minute units, rounded to the nearest.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from mappings.files.layout import Value
from mappings.files.vocabulary import (
    EXT_SERVICE_UNITS,
    OUTREACH_ATTEMPT_SYSTEM,
    PROFILE_ENROLLMENT,
    PROFILE_PROCEDURE,
    SERVICE_SYSTEM,
)

JSON = dict[str, Any]

ENROLLMENT_STATUS = {"ENROLLED": "active", "DISCONTINUED": "finished", "PENDING": "planned", "DECLINED": "cancelled"}
"""RTF ECM_STATUS -> EpisodeOfCare.status (https://hl7.org/fhir/R4/valueset-episode-of-care-status.html)."""
ENROLLED_STATUSES = ("ENROLLED", "DISCONTINUED")
"""ECM_STATUS values that describe an enrollment (PENDING and DECLINED have none: only the Task moves)."""

REFERRAL_STATUS = {
    "PENDING": "pending",
    "ACCEPTED": "accepted",
    "DECLINED": "declined",
    "OUTREACH_INITIATED": "outreach-initiated",
    "LOOP_CLOSED": "loop-closed",
}
"""RTF REFERRAL_STATUS -> CodeSystem referral-status."""
UNIT_MINUTES = 15


@dataclass(frozen=True, slots=True)
class TaskMove:
    """What the referral Task becomes: its status, the DHCS status stated in businessStatus, the closure reason."""

    status: str
    stated: str | None = None
    closure: str | None = None


def task_move(referral_status: str, closure_reason: str | None) -> TaskMove:
    """The Task move an RTF referral status asks for (ConceptMap task-status-referral-status read backwards):
    Pending requested, Accepted accepted, Declined rejected, Outreach initiated in-progress (stated),
    Loop closed completed when services were received, else cancelled, with the closure reason."""
    if referral_status == "LOOP_CLOSED":
        status = "completed" if closure_reason in (None, "services-received") else "cancelled"
        return TaskMove(status, None, closure_reason)
    plain = {"PENDING": "requested", "ACCEPTED": "accepted", "DECLINED": "rejected"}.get(referral_status)
    if plain is not None:
        return TaskMove(plain)
    return TaskMove("in-progress", "outreach-initiated")


def stable_id(prefix: str, *parts: str) -> str:
    """A resource id derived from ``parts`` (so the same record always writes the same resource)."""
    digest = hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]
    return f"{prefix}-{digest}"


def _day(values: Mapping[str, Value], name: str) -> date | None:
    value = values.get(name)
    return value if isinstance(value, date) else None


def enrollment_of(values: Mapping[str, Value], *, patient_id: str, provider: JSON, referral_id: str | None) -> JSON:
    """The EpisodeOfCare of an RTF record whose ECM_STATUS is ENROLLED or DISCONTINUED."""
    start = _day(values, "ECM_START_DATE")
    end = _day(values, "ECM_END_DATE") or _day(values, "DISCONTINUATION_DATE")
    period: JSON = {"start": start.isoformat()} if start else {}
    if end is not None:
        period["end"] = end.isoformat()
    episode: JSON = {
        "resourceType": "EpisodeOfCare",
        "id": stable_id("ecm-enrollment", patient_id, str(provider.get("reference"))),
        "meta": {"profile": [PROFILE_ENROLLMENT]},
        "status": ENROLLMENT_STATUS[str(values["ECM_STATUS"])],
        "type": [{"coding": [{"system": SERVICE_SYSTEM, "code": "ecm"}]}],
        "patient": {"reference": f"Patient/{patient_id}"},
        "managingOrganization": provider,
        "period": period,
    }
    if referral_id is not None:
        episode["referralRequest"] = [{"reference": f"ServiceRequest/{referral_id}"}]
    return episode


def outreach_units(minutes: int) -> int:
    """15-minute units of ``minutes`` of outreach, rounded to the nearest unit (8 minutes make one)."""
    return (minutes + UNIT_MINUTES // 2) // UNIT_MINUTES


def outreach_of(
    values: Mapping[str, Value],
    *,
    patient_id: str,
    provider: JSON,
    referral_id: str | None,
    method_display: str,
    service_display: str | None,
) -> JSON:
    """The Procedure of one OTF record (one attempt per member, provider, day and method)."""
    day = _day(values, "OUTREACH_DATE")
    assert day is not None  # required by the layout
    method = str(values["OUTREACH_METHOD"])
    key = f"{values['PROVIDER_NPI']}-{values['MEMBER_CIN']}-{day:%Y%m%d}-{method}"
    minutes = values.get("OUTREACH_MINUTES")
    service: JSON = {"system": SERVICE_SYSTEM, "code": "ecm"}
    if service_display:
        service["display"] = service_display
    procedure: JSON = {
        "resourceType": "Procedure",
        "id": stable_id("ecm-outreach", key),
        "meta": {"profile": [PROFILE_PROCEDURE]},
        "extension": [
            {"url": EXT_SERVICE_UNITS, "valueUnsignedInt": outreach_units(minutes if isinstance(minutes, int) else 0)}
        ],
        "identifier": [{"system": OUTREACH_ATTEMPT_SYSTEM, "value": key}],
        "status": "completed",
        "category": {"coding": [service]},
        "code": {"text": f"ECM outreach attempt ({method_display})"},
        "subject": {"reference": f"Patient/{patient_id}"},
        "performedDateTime": day.isoformat(),
        "performer": [{"actor": provider}],
        "outcome": {"text": "successful" if values.get("OUTREACH_SUCCESSFUL") else "unsuccessful"},
    }
    if referral_id is not None:
        procedure["basedOn"] = [{"reference": f"ServiceRequest/{referral_id}"}]
    return procedure
