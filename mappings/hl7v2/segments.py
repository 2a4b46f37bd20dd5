"""Segment maps shared by the message maps, after the HL7 Version 2 to FHIR IG segment maps
(https://build.fhir.org/ig/HL7/v2-to-fhir/segment_maps.html): PID → Patient, PV1 → Encounter,
IN1 → Coverage, DG1 → Condition, NTE → Annotation, PRD → a reference to the provider's Organization.

Each returns FHIR JSON (pure: no store); references to the other resources of the same message are the
``urn:uuid`` full URLs the message map assigns. Where the IG maps to resources the gateway does not keep
(MessageHeader, RelatedPerson, Location, Practitioner), the element is carried as a display reference.
"""

from __future__ import annotations

from typing import Any

from mappings.hl7v2.datatypes import JSON, address, codeable, contact_point, dtm, human_name
from mappings.hl7v2.errors import TABLE_VALUE_NOT_FOUND, content_error
from mappings.hl7v2.message import Segment
from mappings.hl7v2.profiles import MappingConfig
from mappings.hl7v2.tables import (
    ACT_CODE_SYSTEM,
    ADMINISTRATIVE_SEX,
    CIN_SYSTEM,
    NPI_SYSTEM,
    PATIENT_CLASS,
    v2_table_system,
)

COVERAGE_CLASS_SYSTEM = "http://terminology.hl7.org/CodeSystem/coverage-class"
PROFILE_MEMBER = "https://fhir.calaim-gateway.org/StructureDefinition/calaim-member"


def patient_identifiers(pid: Segment, cfg: MappingConfig) -> list[JSON]:
    """PID-3 (CX, repeating) → Identifier: type MA (Medicaid number) is the Medi-Cal CIN, type MR the
    county's MRN; other types keep their type code and no system the plan could rely on, so are dropped."""
    out: list[JSON] = []
    for rep in pid.reps(3):
        value = rep[0][0] if rep and rep[0] else ""
        kind = rep[4][0] if len(rep) > 4 and rep[4] else ""
        if not value:
            continue
        if kind == "MA":
            out.append({"system": CIN_SYSTEM, "value": value})
        elif kind == "MR":
            out.append(
                {
                    "use": "usual",
                    "type": {"coding": [{"system": v2_table_system("0203"), "code": "MR"}]},
                    "system": cfg.mrn_system,
                    "value": value,
                }
            )
    return out


def match_condition(identifiers: list[JSON]) -> str:
    """If-None-Exist of the member: any of its CIN or MRN (a token search with OR, R4 search.html#combining)."""
    return "identifier=" + ",".join(f"{i['system']}|{i['value']}" for i in identifiers)


def patient(pid: Segment, cfg: MappingConfig) -> JSON:
    """PID → Patient (claims calaim-member when it carries a CIN)."""
    identifiers = patient_identifiers(pid, cfg)
    if not identifiers:
        raise content_error(TABLE_VALUE_NOT_FOUND, "PID-3 holds no CIN (type MA) and no MRN (type MR)", pid.where(3))
    resource: JSON = {"resourceType": "Patient", "identifier": identifiers}
    if any(i["system"] == CIN_SYSTEM for i in identifiers):
        resource["meta"] = {"profile": [PROFILE_MEMBER]}
    names = [n for n in (human_name(rep) for rep in pid.reps(5)) if n]
    if names:
        resource["name"] = names
    telecom = [c for c in (contact_point(rep) for rep in (*pid.reps(13), *pid.reps(14))) if c]
    if telecom:
        resource["telecom"] = telecom
    sex = pid.get(8)
    if sex:
        if sex not in ADMINISTRATIVE_SEX:
            raise content_error(TABLE_VALUE_NOT_FOUND, "PID-8 is not a code of table 0001", pid.where(8))
        resource["gender"] = ADMINISTRATIVE_SEX[sex]
    birth = dtm(pid, 7, zone=cfg.zone, date_only=True)
    if birth:
        resource["birthDate"] = birth
    addresses = [a for a in (address(rep) for rep in pid.reps(11)) if a]
    if addresses:
        resource["address"] = addresses
    death = dtm(pid, 29, zone=cfg.zone)
    if death:
        resource["deceasedDateTime"] = death
    elif pid.get(30) == "Y":
        resource["deceasedBoolean"] = True
    return resource


def condition(dg1: Segment, cfg: MappingConfig, *, subject: str, encounter: str | None = None) -> JSON:
    """DG1 → Condition: code (3), onset (5), verification from the diagnosis type (6: A admitting and W
    working are provisional, F final is confirmed)."""
    rep = dg1.reps(3)[0] if dg1.reps(3) else ()
    code = codeable(rep)
    if code is None:
        raise content_error(TABLE_VALUE_NOT_FOUND, "DG1-3 (diagnosis code) is required", dg1.where(3))
    resource: JSON = {
        "resourceType": "Condition",
        "clinicalStatus": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]
        },
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/condition-category",
                        "code": "encounter-diagnosis",
                    }
                ]
            }
        ],
        "code": code,
        "subject": {"reference": subject},
    }
    verification = {"A": "provisional", "W": "provisional", "F": "confirmed"}.get(dg1.get(6))
    if verification:
        resource["verificationStatus"] = {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": verification}]
        }
    onset = dtm(dg1, 5, zone=cfg.zone)
    if onset:
        resource["onsetDateTime"] = onset
    if encounter:
        resource["encounter"] = {"reference": encounter}
    return resource


def coverage(in1: Segment, cfg: MappingConfig, *, beneficiary: str, cin: str | None) -> JSON | None:
    """IN1 → Coverage with the plan, when IN1-3 (insurance company id) names the plan; None otherwise
    (other payers are not the plan's business). Subscriber id: IN1-49 (insured's id) or the CIN."""
    company = in1.get(3).strip().lower()
    if company not in {p.lower() for p in cfg.plan_payer_ids}:
        return None
    resource: JSON = {
        "resourceType": "Coverage",
        "status": "active",
        "beneficiary": {"reference": beneficiary},
        "payor": [{"reference": f"Organization/{cfg.plan_organization}"}],
    }
    subscriber = in1.get(49) or cin
    if subscriber:
        resource["subscriberId"] = subscriber
    start, end = dtm(in1, 12, zone=cfg.zone, date_only=True), dtm(in1, 13, zone=cfg.zone, date_only=True)
    if start or end:
        resource["period"] = {k: v for k, v in (("start", start), ("end", end)) if v}
    plan_type = codeable(in1.reps(2)[0]) if in1.reps(2) else None
    if plan_type:
        resource["class"] = [
            {
                "type": {"coding": [{"system": COVERAGE_CLASS_SYSTEM, "code": "plan"}]},
                "value": in1.get(2),
                **({"name": plan_type["text"]} if "text" in plan_type else {}),
            }
        ]
    return resource


def encounter(pv1: Segment, cfg: MappingConfig, *, subject: str, status: str, facility: str) -> JSON:
    """PV1 → Encounter: visit number (19) as identifier, class (2, table 0004), location (3), admit source
    (14), discharge disposition (36), period (44, 45), the county as service provider."""
    patient_class = pv1.get(2)
    if patient_class not in PATIENT_CLASS:
        raise content_error(TABLE_VALUE_NOT_FOUND, "PV1-2 is not a code of table 0004", pv1.where(2))
    act_code, display = PATIENT_CLASS[patient_class]
    resource: JSON = {
        "resourceType": "Encounter",
        "identifier": [{"system": cfg.visit_id_system, "value": pv1.get(19)}],
        "status": status,
        "class": {"system": ACT_CODE_SYSTEM, "code": act_code, "display": display},
        "subject": {"reference": subject},
        "serviceProvider": {
            "reference": f"Organization/{cfg.county_organization}",
            **(
                {"display": cfg.organization_names[cfg.county_organization]}
                if cfg.county_organization in cfg.organization_names
                else {}
            ),
        },
    }
    start, end = dtm(pv1, 44, zone=cfg.zone), dtm(pv1, 45, zone=cfg.zone)
    if start or end:
        resource["period"] = {k: v for k, v in (("start", start), ("end", end)) if v}
    location = " ".join(p for p in (pv1.get(3, 4), pv1.get(3, 1), pv1.get(3, 2), pv1.get(3, 3)) if p) or facility
    if location:
        resource["location"] = [{"location": {"display": location}}]
    hospitalization: dict[str, Any] = {}
    if pv1.get(14):
        hospitalization["admitSource"] = {"coding": [{"system": v2_table_system("0023"), "code": pv1.get(14)}]}
    if pv1.get(36):
        disposition = {"coding": [{"system": v2_table_system("0112"), "code": pv1.get(36)}]}
        hospitalization["dischargeDisposition"] = disposition
    if hospitalization:
        resource["hospitalization"] = hospitalization
    return resource


def notes(segments: list[Segment], when: str | None) -> list[JSON]:
    """NTE-3 (comment, repeating FT) → Annotation, one per NTE."""
    out: list[JSON] = []
    for nte in segments:
        text = "\n".join(rep[0][0] for rep in nte.reps(3) if rep and rep[0] and rep[0][0])
        if text:
            out.append({"text": text, **({"time": when} if when else {})})
    return out


def provider(prd: Segment, cfg: MappingConfig) -> JSON | None:
    """PRD → a Reference to the provider's Organization: PRD-7 (PI, type NPI) matched against the plan's
    Organizations; PRD-2 (name) as display. None when PRD-7 names no configured Organization."""
    for rep in prd.reps(7):
        number = rep[0][0] if rep and rep[0] else ""
        kind = rep[1][0] if len(rep) > 1 and rep[1] else ""
        if number and kind in ("NPI", "") and number in cfg.organizations_by_npi:
            org = cfg.organizations_by_npi[number]
            ref: JSON = {"reference": f"Organization/{org}"}
            name = cfg.organization_names.get(org)
            if name:
                ref["display"] = name
            return ref
    return None


def npi_identifier(npi: str) -> JSON:
    """An NPI Identifier."""
    return {"system": NPI_SYSTEM, "value": npi}
