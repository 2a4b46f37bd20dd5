"""The resource types the gateway serves (https://hl7.org/fhir/R4/resourcelist.html)."""

from __future__ import annotations

SERVED_TYPES: tuple[str, ...] = (
    "AuditEvent",
    "CarePlan",
    "CareTeam",
    "Communication",
    "Condition",
    "Consent",
    "Coverage",
    "CoverageEligibilityRequest",
    "CoverageEligibilityResponse",
    "Encounter",
    "EpisodeOfCare",
    "Goal",
    "Organization",
    "Patient",
    "Practitioner",
    "PractitionerRole",
    "Procedure",
    "Provenance",
    "ServiceRequest",
    "Task",
)
"""Resource types with REST interactions. Bundle is accepted only as batch/transaction at the base."""

SERVED_TYPE_SET = frozenset(SERVED_TYPES)
