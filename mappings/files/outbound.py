"""FHIR -> records of the monthly POF eligibility list and the weekly ECM activity log (pure functions).

- ``eligibility_row``: a member (Patient), the member's ECM authorization (CoverageEligibilityResponse)
  and its referral (ServiceRequest) -> a ``pof-eligibility`` record.
- ``activity_row``: one ``activity`` part of the ``$ecm-activity`` Parameters -> an ``ecm-activity-log``
  record.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Any

from mappings.files.layout import Value
from mappings.files.vocabulary import CIN_SYSTEM, EXT_POF, POF_SYSTEM


def _day(value: Any) -> date | None:
    return date.fromisoformat(value[:10]) if isinstance(value, str) and len(value) >= 10 else None


def cin_of(patient: Mapping[str, Any]) -> str | None:
    """The member's Medi-Cal CIN (Patient.identifier of system medi-cal-cin)."""
    for identifier in patient.get("identifier", ()):
        if identifier.get("system") == CIN_SYSTEM and identifier.get("value"):
            return str(identifier["value"])
    return None


def pofs_of(resource: Mapping[str, Any]) -> tuple[str, ...]:
    """The Populations of Focus (``ext-pof``) of a Patient or ServiceRequest, in order, without repeats."""
    out: list[str] = []
    for extension in resource.get("extension", ()):
        coding = extension.get("valueCoding") or {}
        pof = extension.get("url") == EXT_POF and coding.get("system") == POF_SYSTEM and coding.get("code")
        if pof and coding["code"] not in out:
            out.append(str(coding["code"]))
    return tuple(out)


def eligibility_row(
    *,
    month: date,
    patient: Mapping[str, Any],
    referral: Mapping[str, Any] | None,
    authorization: Mapping[str, Any],
    network_npi: str | None,
    provider_npi: str | None,
    provider_name: str | None,
) -> dict[str, Value]:
    """The ``pof-eligibility`` record of a member's ECM authorization (POF from the referral, else the member)."""
    name = (patient.get("name") or [{}])[0]
    period = ((authorization.get("insurance") or [{}])[0]).get("benefitPeriod") or {}
    return {
        "REPORTING_MONTH": month.replace(day=1),
        "MEMBER_CIN": cin_of(patient),
        "LAST_NAME": name.get("family"),
        "FIRST_NAME": (name.get("given") or [None])[0],
        "BIRTH_DATE": _day(patient.get("birthDate")),
        "POF": (pofs_of(referral) if referral else ()) or pofs_of(patient) or None,
        "HEALTH_NETWORK_NPI": network_npi,
        "ECM_PROVIDER_NPI": provider_npi,
        "ECM_PROVIDER_NAME": provider_name,
        "ECM_START_DATE": _day(period.get("start")),
        "ECM_END_DATE": _day(period.get("end")),
        "AUTH_NUMBER": authorization.get("preAuthRef"),
    }


def activity_parts(parameters: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The ``activity`` parts of a ``$ecm-activity`` answer, each as ``name -> value`` (references as ids)."""
    out: list[dict[str, Any]] = []
    for parameter in parameters.get("parameter", ()):
        if parameter.get("name") != "activity":
            continue
        part: dict[str, Any] = {}
        for item in parameter.get("part", ()):
            value = next((v for k, v in item.items() if k.startswith("value")), None)
            if isinstance(value, dict) and "reference" in value:
                value = str(value["reference"]).rpartition("/")[2]
            part[str(item["name"])] = value
        out.append(part)
    return out


def activity_row(
    *,
    week_ending: date,
    activity: Mapping[str, Any],
    cin: str | None,
    provider_npi: str | None,
    provider_name: str | None,
) -> dict[str, Value]:
    """The ``ecm-activity-log`` record of one member and provider (``activity`` from ``activity_parts``)."""
    month = str(activity["month"])
    return {
        "WEEK_ENDING": week_ending,
        "SERVICE_MONTH": date(int(month[:4]), int(month[5:7]), 1),
        "MEMBER_CIN": cin,
        "PROVIDER_NPI": provider_npi,
        "PROVIDER_NAME": provider_name,
        "UNITS": int(activity.get("units") or 0),
        "UNAUTHORIZED_UNITS": int(activity.get("unauthorizedUnits") or 0),
        "THRESHOLD": int(activity["threshold"]),
        "THRESHOLD_MET": bool(activity["thresholdMet"]),
    }
