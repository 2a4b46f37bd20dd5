"""REF^I12 (patient referral, HL7 v2.5.1 chapter 11 §11.3.1) → FHIR transaction Bundle (docs/hl7v2.md
"REF^I12 in").

| v2 | FHIR |
| --- | --- |
| PID | Patient, created unless one has the CIN (PID-3 type MA) or county MRN (type MR): If-None-Exist |
| IN1 naming the plan (IN1-3) | Coverage of the member with the plan, unless the member has an active one |
| DG1 | Condition of the member (one per patient and code), the referral's ``reasonReference`` |
| PV1 with a visit number (PV1-19) | Encounter (created or updated by its identifier), the referral's ``encounter`` |
| RF1-3 (CALAIMSVC) | ServiceRequest.code: the CalAIM service (calaim-referral) |
| RF1-2 (table 0280) | ServiceRequest.priority |
| RF1-6 | ServiceRequest.identifier (the county's referral id): a re-sent referral matches it |
| RF1-7 (else MSH-7) | ServiceRequest.authoredOn |
| RF1-10 (CALAIMPOF codes) | ``ext-pof``; other codes → ServiceRequest.reasonCode |
| AUT-4/5, AUT-8 | ServiceRequest.occurrencePeriod, quantityQuantity (requested units) |
| PRD with PRD-1 RP / RT | ServiceRequest.requester (default: the county) / performer (PRD-7: a configured NPI) |
| NTE | ServiceRequest.note |

The ServiceRequest then goes through the same CalAIM workflow as a FHIR referral: routing, the Task,
the outbox events (gateway/calaim/referrals.py).
"""

from __future__ import annotations

from mappings.hl7v2.bundle import Mapped, entry, full_url, transaction
from mappings.hl7v2.datatypes import JSON, codeable, dtm
from mappings.hl7v2.errors import REQUIRED_FIELD_MISSING, TABLE_VALUE_NOT_FOUND, Location, content_error
from mappings.hl7v2.message import Segment, V2Message
from mappings.hl7v2.profiles import MappingConfig
from mappings.hl7v2.segments import condition, coverage, encounter, match_condition, notes, patient, provider
from mappings.hl7v2.tables import CIN_SYSTEM, POF_SYSTEM, REFERRAL_PRIORITY, SERVICE_SYSTEM

PROFILE_REFERRAL = "https://fhir.calaim-gateway.org/StructureDefinition/calaim-referral"
EXT_POF = "https://fhir.calaim-gateway.org/StructureDefinition/ext-pof"


def map_ref_i12(message: V2Message, cfg: MappingConfig) -> Mapped:
    """The Bundle of one REF^I12 (profile already checked by ``profiles.check``)."""
    rf1 = _one(message, "RF1")
    pid = _one(message, "PID")
    mapped = Mapped(transaction([]))
    entries: list[JSON] = mapped.bundle["entry"]
    sources = mapped.sources

    member = patient(pid, cfg)
    patient_url = full_url(message, "Patient")
    entries.append(entry(patient_url, member, "POST", "Patient", if_none_exist=match_condition(member["identifier"])))
    sources.update({"Patient": pid.where(), "Patient.identifier": pid.where(3), "Patient.name": pid.where(5)})
    mapped.entry_sources[patient_url] = pid.where()
    cin = next((i["value"] for i in member["identifier"] if i["system"] == CIN_SYSTEM), None)

    for number, in1 in enumerate(message.all("IN1")):
        found = coverage(in1, cfg, beneficiary=patient_url, cin=cin)
        if found is not None:
            url = full_url(message, f"Coverage/{number}")
            condition_text = f"beneficiary={patient_url}&status=active"
            entries.append(entry(url, found, "POST", "Coverage", if_none_exist=condition_text))
            sources["Coverage"] = mapped.entry_sources[url] = in1.where()
            break

    encounter_url = None
    pv1 = message.first("PV1")
    if pv1 is not None and pv1.get(19):
        encounter_url = full_url(message, "Encounter")
        visit = encounter(pv1, cfg, subject=patient_url, status=_visit_status(pv1), facility="")
        target = f"Encounter?identifier={cfg.visit_id_system}|{pv1.get(19)}"
        entries.append(entry(encounter_url, visit, "PUT", target))
        sources["Encounter"] = mapped.entry_sources[encounter_url] = pv1.where()

    reasons: list[JSON] = []
    for dg1 in message.all("DG1"):
        url = full_url(message, f"Condition/{dg1.sequence}")
        diagnosis = condition(dg1, cfg, subject=patient_url, encounter=encounter_url)
        coding = diagnosis["code"].get("coding", [{}])[0]
        keyed = f"subject={patient_url}&code={coding.get('system', '')}|{coding.get('code', '')}"
        entries.append(entry(url, diagnosis, "POST", "Condition", if_none_exist=keyed if coding.get("code") else None))
        reasons.append({"reference": url})
        mapped.entry_sources[url] = dg1.where()

    referral = _referral(message, rf1, cfg, patient_url)
    if reasons:
        referral["reasonReference"] = reasons
    if encounter_url:
        referral["encounter"] = {"reference": encounter_url}
    county_id = rf1.get(6)
    by_id = f"identifier={cfg.referral_id_system}|{county_id}" if county_id else None
    referral_url = full_url(message, "ServiceRequest")
    entries.append(entry(referral_url, referral, "POST", "ServiceRequest", if_none_exist=by_id))
    mapped.entry_sources[referral_url] = rf1.where()
    sources.update(
        {
            "ServiceRequest": rf1.where(),
            "ServiceRequest.code": rf1.where(3),
            "ServiceRequest.extension": rf1.where(10),
            "ServiceRequest.authoredOn": rf1.where(7),
            "ServiceRequest.priority": rf1.where(2),
            "ServiceRequest.subject": pid.where(3),
            "ServiceRequest.identifier": rf1.where(6),
        }
    )
    for role, path in (("RP", "ServiceRequest.requester"), ("RT", "ServiceRequest.performer")):
        prd = _provider(message, role)
        if prd is not None:
            sources[path] = prd.where(7)
    aut = message.first("AUT")
    if aut is not None:
        sources["ServiceRequest.occurrencePeriod"] = aut.where(4)
    return mapped


def _referral(message: V2Message, rf1: Segment, cfg: MappingConfig, patient_url: str) -> JSON:
    service = codeable(rf1.reps(3)[0]) if rf1.reps(3) else None
    if service is None or not any(c.get("system") == SERVICE_SYSTEM for c in service.get("coding", ())):
        text = "RF1-3 must code the CalAIM service with coding system CALAIMSVC (CodeSystem calaim-service)"
        raise content_error(TABLE_VALUE_NOT_FOUND, text, rf1.where(3))
    status = rf1.get(1) or "P"
    if status not in ("P", "A"):
        text = "RF1-1 of an inbound REF^I12 is P (pending) or A (accepted): a new referral"
        raise content_error(TABLE_VALUE_NOT_FOUND, text, rf1.where(1))
    authored = dtm(rf1, 7, zone=cfg.zone) or dtm(_msh(message), 7, zone=cfg.zone)
    if authored is None:
        raise content_error(REQUIRED_FIELD_MISSING, "RF1-7 (effective date) or MSH-7 is required", rf1.where(7))
    referral: JSON = {
        "resourceType": "ServiceRequest",
        "meta": {"profile": [PROFILE_REFERRAL]},
        "status": "active",
        "intent": "order",
        "code": service,
        "subject": {"reference": patient_url},
        "authoredOn": authored,
    }
    pofs: list[JSON] = []
    reasons: list[JSON] = []
    for rep in rf1.reps(10):
        concept = codeable(rep)
        if concept is None:
            continue
        for coding in concept.get("coding", ()):
            if coding.get("system") == POF_SYSTEM:
                pofs.append({"url": EXT_POF, "valueCoding": {"system": POF_SYSTEM, "code": coding["code"]}})
        if not any(c.get("system") == POF_SYSTEM for c in concept.get("coding", ())):
            reasons.append(concept)
    if pofs:
        referral["extension"] = pofs
    if reasons:
        referral["reasonCode"] = reasons
    if rf1.get(6):
        referral["identifier"] = [{"system": cfg.referral_id_system, "value": rf1.get(6)}]
    priority = rf1.get(2)
    if priority:
        if priority not in REFERRAL_PRIORITY:
            raise content_error(TABLE_VALUE_NOT_FOUND, "RF1-2 is not a code of table 0280", rf1.where(2))
        referral["priority"] = REFERRAL_PRIORITY[priority]
    requester = _provider(message, "RP")
    county = {"reference": f"Organization/{cfg.county_organization}"}
    referral["requester"] = (provider(requester, cfg) if requester is not None else None) or county
    performer = _provider(message, "RT")
    target = provider(performer, cfg) if performer is not None else None
    if target is not None:
        referral["performer"] = [target]
    aut = message.first("AUT")
    if aut is not None:
        start, end = dtm(aut, 4, zone=cfg.zone, date_only=True), dtm(aut, 5, zone=cfg.zone, date_only=True)
        if start or end:
            referral["occurrencePeriod"] = {k: v for k, v in (("start", start), ("end", end)) if v}
        units = aut.get(8)
        if units:
            if not units.isdigit():
                raise content_error("102", "AUT-8 (requested number of treatments) is a number", aut.where(8))
            referral["quantityQuantity"] = {"value": int(units), "unit": "unit"}
    annotations = notes(message.all("NTE"), authored)
    if annotations:
        referral["note"] = annotations
    return referral


def _visit_status(pv1: Segment) -> str:
    return "finished" if pv1.get(45) else "in-progress"


def _provider(message: V2Message, role: str) -> Segment | None:
    return next((prd for prd in message.all("PRD") if prd.get(1) == role), None)


def _one(message: V2Message, name: str) -> Segment:
    found = message.first(name)
    if found is None:
        raise content_error(REQUIRED_FIELD_MISSING, f"the {name} segment is required", Location(name))
    return found


def _msh(message: V2Message) -> Segment:
    return _one(message, "MSH")
