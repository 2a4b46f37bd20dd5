"""The code tables of the county message profiles (docs/hl7v2.md "Tables"): HL7 tables and the
profile's own choices, as data in one place.

HL7 tables (v2.5.1 Appendix A) with their FHIR equivalents from the HL7 Version 2 to FHIR IG
(https://build.fhir.org/ig/HL7/v2-to-fhir/, "Vocabulary Maps"): 0001 administrative sex, 0004 patient
class, 0155 accept/application acknowledgment conditions, 0211 character sets, 0280 referral priority,
0283 referral status, 0396 coding systems. Codes the v2-to-FHIR maps leave open are our design and are
marked so.
"""

from __future__ import annotations

IG_BASE = "https://fhir.calaim-gateway.org"
SERVICE_SYSTEM = f"{IG_BASE}/CodeSystem/calaim-service"
POF_SYSTEM = f"{IG_BASE}/CodeSystem/pof"
REFERRAL_STATUS_SYSTEM = f"{IG_BASE}/CodeSystem/referral-status"
CLOSURE_REASON_SYSTEM = f"{IG_BASE}/CodeSystem/loop-closure-reason"
HCPCS_SYSTEM = "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
NPI_SYSTEM = "http://hl7.org/fhir/sid/us-npi"
CIN_SYSTEM = f"{IG_BASE}/sid/medi-cal-cin"
ACT_CODE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ActCode"


def v2_table_system(table: str) -> str:
    """The canonical URL of an HL7 v2 table's CodeSystem (THO: ``v2-0001``)."""
    return f"http://terminology.hl7.org/CodeSystem/v2-{table}"


CODING_SYSTEMS: dict[str, str] = {
    "I10": "http://hl7.org/fhir/sid/icd-10-cm",
    "I10C": "http://hl7.org/fhir/sid/icd-10-cm",
    "ICD10CM": "http://hl7.org/fhir/sid/icd-10-cm",
    "SCT": "http://snomed.info/sct",
    "SNM": "http://snomed.info/sct",
    "LN": "http://loinc.org",
    "HCPCS": HCPCS_SYSTEM,
    "HCPT": HCPCS_SYSTEM,
    "NPI": NPI_SYSTEM,
    "CALAIMSVC": SERVICE_SYSTEM,  # [design] the profile's name for CodeSystem calaim-service
    "CALAIMPOF": POF_SYSTEM,  # [design] CodeSystem pof
    "CALAIMRS": REFERRAL_STATUS_SYSTEM,  # [design] CodeSystem referral-status (DHCS closed loop)
    "CALAIMLCR": CLOSURE_REASON_SYSTEM,  # [design] CodeSystem loop-closure-reason
}
"""CWE/CNE coding system names (table 0396, plus the profile's own) → FHIR system URLs. ``HL7nnnn`` is
resolved to the THO v2 table (``v2_table_system``)."""

SYSTEM_NAMES: dict[str, str] = {
    "http://hl7.org/fhir/sid/icd-10-cm": "I10",
    "http://snomed.info/sct": "SCT",
    "http://loinc.org": "LN",
    HCPCS_SYSTEM: "HCPCS",
    SERVICE_SYSTEM: "CALAIMSVC",
    POF_SYSTEM: "CALAIMPOF",
    REFERRAL_STATUS_SYSTEM: "CALAIMRS",
    CLOSURE_REASON_SYSTEM: "CALAIMLCR",
}
"""FHIR system URLs → the coding system names written in outbound CWE fields."""

ADMINISTRATIVE_SEX: dict[str, str] = {
    "F": "female",
    "M": "male",
    "O": "other",
    "U": "unknown",
    "A": "other",
    "N": "unknown",
}
"""Table 0001 → AdministrativeGender (v2-to-FHIR ConceptMap table-0001-to-administrative-gender)."""
GENDER_TO_SEX: dict[str, str] = {"female": "F", "male": "M", "other": "O", "unknown": "U"}

PATIENT_CLASS: dict[str, tuple[str, str]] = {
    "E": ("EMER", "emergency"),
    "I": ("IMP", "inpatient encounter"),
    "O": ("AMB", "ambulatory"),
    "P": ("PRENC", "pre-admission"),
    "R": ("AMB", "ambulatory"),  # recurring patient
    "B": ("IMP", "inpatient encounter"),  # obstetrics
}
"""Table 0004 → Encounter.class (v3 ActCode; v2-to-FHIR ConceptMap table-0004-to-encounter-class)."""

REFERRAL_PRIORITY: dict[str, str] = {"S": "stat", "A": "asap", "R": "routine"}
"""Table 0280 → ServiceRequest.priority."""

REFERRAL_STATUSES = ("A", "E", "P", "R")
"""Table 0283: A accepted, E expired, P pending, R rejected."""
REFERRAL_STATUS_TEXT = {"A": "Accepted", "E": "Expired", "P": "Pending", "R": "Rejected"}

DECISION_TO_0283: dict[str, str] = {"A1": "A", "A2": "A", "A6": "A", "A3": "R", "A4": "P", "C": "R"}
"""[design] X12 306 decision of an authorization → RF1-1 of the RRI (a termination is sent as E)."""

TASK_STATUS_TO_0283: dict[str, str] = {
    "draft": "P",
    "requested": "P",
    "received": "P",
    "accepted": "A",
    "ready": "A",
    "in-progress": "A",
    "on-hold": "A",
    "completed": "A",
    "rejected": "R",
    "cancelled": "R",
    "failed": "R",
    "entered-in-error": "R",
}
"""[design] referral Task status → RF1-1 of the RRI; the DHCS status itself travels in RF1-4."""

ACK_CONDITIONS = ("AL", "NE", "ER", "SU")
"""Table 0155: always, never, error/reject only, successful completion only."""

CHARSETS: dict[str, str] = {
    "ASCII": "ascii",
    "8859/1": "latin-1",
    "8859/2": "iso8859-2",
    "8859/3": "iso8859-3",
    "8859/4": "iso8859-4",
    "8859/5": "iso8859-5",
    "8859/6": "iso8859-6",
    "8859/7": "iso8859-7",
    "8859/8": "iso8859-8",
    "8859/9": "iso8859-9",
    "8859/15": "iso8859-15",
    "UNICODE UTF-8": "utf-8",
}
"""Table 0211 → Python codecs: every ASCII-compatible single-stream charset. UTF-16/32 and the ISO 2022
code switching sets cannot share MLLP's single-byte framing and are rejected (AR)."""

ENCOUNTER_STATUS_BY_EVENT: dict[str, str] = {"A01": "in-progress", "A04": "arrived", "A03": "finished"}
"""[design, after v2-to-FHIR's ADT maps] trigger event → Encounter.status; A08 keeps the status PV1 implies."""
