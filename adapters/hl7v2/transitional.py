"""The transitional-care Task of an ADT event (docs/hl7v2.md "ADT in"): when the member is enrolled in
ECM, the member's lead care manager is asked to follow up the admission, discharge or registration.

Enrolled in ECM: an active EpisodeOfCare of type ECM (profile calaim-enrollment) whose period covers the
event. The lead care manager (REFERENCE.md §6 "LCM"): the episode's ``careManager``, else the member's
active CareTeam participant with role ``lead-care-manager`` (profile calaim-care-team), else the ECM
provider managing the episode. Reads run in the message's transaction, so they see its own writes.
"""

from __future__ import annotations

from datetime import date

from sqlalchemy import Connection

from adapters.hl7v2.apply import Applied
from gateway.calaim.config import IG_BASE, SERVICE_SYSTEM
from gateway.calaim.policy import Policy
from gateway.calaim.resources import conn_of, find, now_instant, to_date, write
from gateway.fhir.context import Context
from gateway.types import JSONObject
from mappings.hl7v2.adt import transitional_care_task
from mappings.hl7v2.bundle import Mapped
from mappings.hl7v2.profiles import MappingConfig

CARE_TEAM_ROLE_SYSTEM = f"{IG_BASE}/CodeSystem/care-team-role"
LEAD_CARE_MANAGER = "lead-care-manager"


def add_transitional_care(
    ctx: Context, policy: Policy, config: MappingConfig, mapped: Mapped, applied: Applied
) -> str | None:
    """Create the Task when the member is enrolled in ECM; its ``Task/id``, or None."""
    event = mapped.transitional_care
    patient = next((r for r in applied.resources if r.startswith("Patient/")), None)
    encounter = next((r for r in applied.resources if r.startswith("Encounter/")), None)
    if event is None or patient is None or encounter is None:
        return None
    conn = conn_of(ctx)
    visit = next(e["resource"] for e in mapped.bundle["entry"] if e["resource"]["resourceType"] == "Encounter")
    period = visit.get("period") or {}
    on = to_date(period.get("end") if event == "A03" else period.get("start")) or date.today()
    episode = _enrollment(ctx, conn, patient, on)
    if episode is None:
        return None
    owner = episode.get("careManager") or _lead_care_manager(ctx, conn, patient) or episode.get("managingOrganization")
    if not isinstance(owner, dict) or not owner.get("reference"):
        return None
    requester: JSONObject = {"reference": f"Organization/{config.county_organization}"}
    task = transitional_care_task(
        event, patient_ref=patient, encounter_ref=encounter, owner=owner, requester=requester, authored_on=now_instant()
    )
    stored = write(ctx, "POST", "Task", task)
    return f"Task/{stored.res_id}"


def _enrollment(ctx: Context, conn: Connection, patient: str, on: date) -> JSONObject | None:
    params = [("patient", patient), ("status", "active"), ("type", f"{SERVICE_SYSTEM}|ecm")]
    for episode in find(ctx, conn, "EpisodeOfCare", params, limit=20):
        period = episode.get("period") or {}
        start, end = to_date(period.get("start")), to_date(period.get("end"))
        if (start is None or start <= on) and (end is None or on <= end):
            return episode
    return None


def _lead_care_manager(ctx: Context, conn: Connection, patient: str) -> JSONObject | None:
    for team in find(ctx, conn, "CareTeam", [("subject", patient), ("status", "active")], limit=20):
        for participant in team.get("participant") or ():
            roles = [c for r in participant.get("role") or () for c in r.get("coding") or ()]
            lead = any(c.get("system") == CARE_TEAM_ROLE_SYSTEM and c.get("code") == LEAD_CARE_MANAGER for c in roles)
            if lead and isinstance(participant.get("member"), dict):
                member: JSONObject = participant["member"]
                return member
    return None
