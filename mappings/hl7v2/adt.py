"""ADT A01 (admit), A03 (discharge), A04 (register), A08 (update) → FHIR transaction Bundle, and the
transitional-care Task of an ECM member (docs/hl7v2.md "ADT in").

| v2 | FHIR |
| --- | --- |
| PID | Patient, created unless one has the CIN or county MRN (If-None-Exist, as for REF^I12) |
| PV1 | Encounter, created or replaced by its visit number (PV1-19): ``PUT Encounter?identifier=`` |
| trigger event | Encounter.status: A01 in-progress, A04 arrived, A03 finished; A08 finished when PV1-45 is set |
| PV1-44 / PV1-45 (else EVN-6, EVN-2, MSH-7 for the event's own end) | Encounter.period start / end |
| DG1 | Condition of the member with ``encounter`` set (found with ``Condition?encounter=``) |

California's data exchange framework asks for admission, discharge and transfer notifications so that
care managers can act (transitional care). For A01, A03 and A04 the adapter adds a Task for the member's
ECM lead care manager when the member is enrolled in ECM (``transitional_care_task``).
"""

from __future__ import annotations

from mappings.hl7v2.bundle import Mapped, entry, full_url, transaction
from mappings.hl7v2.datatypes import JSON, dtm
from mappings.hl7v2.errors import REQUIRED_FIELD_MISSING, Location, content_error
from mappings.hl7v2.message import Segment, V2Message
from mappings.hl7v2.profiles import MappingConfig
from mappings.hl7v2.segments import condition, encounter, match_condition, patient
from mappings.hl7v2.tables import ENCOUNTER_STATUS_BY_EVENT

TRANSITIONAL_CARE_EVENTS = {"A01": "admission", "A03": "discharge", "A04": "registration"}
TASK_CODE_SYSTEM = "http://hl7.org/fhir/CodeSystem/task-code"


def map_adt(message: V2Message, cfg: MappingConfig) -> Mapped:
    """The Bundle of one ADT message (profile already checked by ``profiles.check``)."""
    event = message.header.trigger_event
    pid, pv1 = _one(message, "PID"), _one(message, "PV1")
    mapped = Mapped(transaction([]), transitional_care=event if event in TRANSITIONAL_CARE_EVENTS else None)
    entries: list[JSON] = mapped.bundle["entry"]

    member = patient(pid, cfg)
    patient_url = full_url(message, "Patient")
    entries.append(entry(patient_url, member, "POST", "Patient", if_none_exist=match_condition(member["identifier"])))
    mapped.sources.update({"Patient": pid.where(), "Patient.identifier": pid.where(3), "Patient.name": pid.where(5)})
    mapped.entry_sources[patient_url] = pid.where()

    status = ENCOUNTER_STATUS_BY_EVENT.get(event) or ("finished" if pv1.get(45) else "in-progress")
    facility = message.header.sending_facility
    visit = encounter(pv1, cfg, subject=patient_url, status=status, facility=facility)
    if event == "A03" and "end" not in visit.get("period", {}):
        evn = message.first("EVN")
        end = (dtm(evn, 6, zone=cfg.zone) or dtm(evn, 2, zone=cfg.zone)) if evn is not None else None
        end = end or dtm(_one(message, "MSH"), 7, zone=cfg.zone)
        if end is None:
            raise content_error(REQUIRED_FIELD_MISSING, "A03 needs PV1-45 (discharge date/time)", pv1.where(45))
        visit.setdefault("period", {})["end"] = end
    encounter_url = full_url(message, "Encounter")
    condition_entries: list[JSON] = []
    for dg1 in message.all("DG1"):
        url = full_url(message, f"Condition/{dg1.sequence}")
        diagnosis = condition(dg1, cfg, subject=patient_url, encounter=encounter_url)
        coding = diagnosis["code"].get("coding", [{}])[0]
        keyed = f"subject={patient_url}&code={coding.get('system', '')}|{coding.get('code', '')}"
        condition_entries.append(
            entry(url, diagnosis, "POST", "Condition", if_none_exist=keyed if coding.get("code") else None)
        )
        mapped.entry_sources[url] = dg1.where()
    target = f"Encounter?identifier={cfg.visit_id_system}|{pv1.get(19)}"
    entries.append(entry(encounter_url, visit, "PUT", target))
    mapped.entry_sources[encounter_url] = pv1.where()
    entries.extend(condition_entries)
    mapped.sources.update(
        {
            "Encounter": pv1.where(),
            "Encounter.class": pv1.where(2),
            "Encounter.identifier": pv1.where(19),
            "Encounter.period": pv1.where(44),
            "Encounter.subject": pid.where(3),
        }
    )
    return mapped


def transitional_care_task(
    event: str, *, patient_ref: str, encounter_ref: str, owner: JSON, requester: JSON, authored_on: str
) -> JSON:
    """The Task that asks the member's ECM lead care manager (``owner``) to follow up an admission, a
    discharge or an ED/outpatient registration (https://hl7.org/fhir/R4/task.html)."""
    what = TRANSITIONAL_CARE_EVENTS[event]
    return {
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "priority": "asap" if event in ("A01", "A03") else "routine",
        "code": {
            "coding": [{"system": TASK_CODE_SYSTEM, "code": "fulfill"}],
            "text": "ECM transitional care",
        },
        "description": f"ECM transitional care after {what} (ADT^{event})",
        "focus": {"reference": encounter_ref},
        "for": {"reference": patient_ref},
        "encounter": {"reference": encounter_ref},
        "authoredOn": authored_on,
        "requester": requester,
        "owner": owner,
    }


def _one(message: V2Message, name: str) -> Segment:
    found = message.first(name)
    if found is None:
        raise content_error(REQUIRED_FIELD_MISSING, f"the {name} segment is required", Location(name))
    return found
