"""The canonical names the file mappings write into FHIR resources: the CalAIM IG's URLs (docs/calaim-ig.md)
and external code systems. ``mappings/`` imports nothing from ``gateway/`` (DESIGN.md layers), so the names
are stated here; tests/files/test_mappings.py checks that they equal the workflow's own."""

from __future__ import annotations

IG_BASE = "https://fhir.calaim-gateway.org"
HCPCS_SYSTEM = "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
X12_306_SYSTEM = "https://codesystem.x12.org/005010/306"
NPI_SYSTEM = "http://hl7.org/fhir/sid/us-npi"
SERVICE_SYSTEM = f"{IG_BASE}/CodeSystem/calaim-service"
POF_SYSTEM = f"{IG_BASE}/CodeSystem/pof"
RESPONSIBLE_PARTY_SYSTEM = f"{IG_BASE}/CodeSystem/responsible-party"
KIND_SYSTEM = f"{IG_BASE}/CodeSystem/authorization-kind"
REFERRAL_STATUS_SYSTEM = f"{IG_BASE}/CodeSystem/referral-status"
CLOSURE_REASON_SYSTEM = f"{IG_BASE}/CodeSystem/loop-closure-reason"
CIN_SYSTEM = f"{IG_BASE}/sid/medi-cal-cin"
AUTHORIZATION_NUMBER_SYSTEM = f"{IG_BASE}/sid/authorization-number"
REFERRAL_ID_SYSTEM = f"{IG_BASE}/sid/referral-id"
OUTREACH_ATTEMPT_SYSTEM = f"{IG_BASE}/sid/outreach-attempt"


def sd(name: str) -> str:
    """The canonical URL of the IG's StructureDefinition ``name``."""
    return f"{IG_BASE}/StructureDefinition/{name}"


PROFILE_REFERRAL = sd("calaim-referral")
PROFILE_AUTH_REQUEST = sd("calaim-authorization-request")
PROFILE_AUTHORIZATION = sd("calaim-authorization")
PROFILE_ENROLLMENT = sd("calaim-enrollment")
PROFILE_PROCEDURE = sd("calaim-service-procedure")
EXT_DECISION = sd("ext-authorization-decision")
EXT_RESPONSIBLE_PARTY = sd("ext-responsible-party")
EXT_KIND = sd("ext-authorization-kind")
EXT_ANSWERS_REFERRAL = sd("ext-answers-referral")
EXT_NOA_OWNER = sd("ext-notice-of-action-owner")
EXT_UNITS = sd("ext-authorized-units")
EXT_SERVICE_UNITS = sd("ext-service-units")
EXT_POF = sd("ext-pof")
EXT_HEALTH_NETWORK = sd("ext-health-network")
