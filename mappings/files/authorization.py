"""HN daily authorization rows and reconciliation rows <-> the authorization pair (pure functions).

An authorization is a CoverageEligibilityResponse (profile calaim-authorization) answering a
CoverageEligibilityRequest (calaim-authorization-request), shaped exactly as ``$decide`` writes them
(gateway/calaim/authorizations.py): number in ``preAuthRef`` and the authorization-number identifier,
period in ``insurance[0].benefitPeriod``, one ``insurance[0].item`` per service line.

- ``AuthorizationRow.of`` / ``values``: a typed ``hn-authorization`` record <-> the row.
- ``response_of`` / ``request_of``: the row -> the pair, given the references the store resolved (``Refs``).
- ``row_of_response``: a stored authorization -> the row (``response_of`` and ``row_of_response`` round-trip).
- ``reconciliation_rows``: a ``calaim.authorization`` outbox event -> ``authorization-reconciliation`` records.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from mappings.files.layout import Value
from mappings.files.vocabulary import (
    AUTHORIZATION_NUMBER_SYSTEM,
    EXT_ANSWERS_REFERRAL,
    EXT_DECISION,
    EXT_KIND,
    EXT_NOA_OWNER,
    EXT_RESPONSIBLE_PARTY,
    EXT_UNITS,
    HCPCS_SYSTEM,
    KIND_SYSTEM,
    PROFILE_AUTH_REQUEST,
    PROFILE_AUTHORIZATION,
    RESPONSIBLE_PARTY_SYSTEM,
    SERVICE_SYSTEM,
    X12_306_SYSTEM,
)

JSON = dict[str, Any]

KIND_OF_ACTION = {"ADD": "initial", "CHG": "modification", "TRM": "termination"}
"""File action -> authorization-kind code."""
ACTION_OF_KIND = {kind: action for action, kind in KIND_OF_ACTION.items()}


@dataclass(frozen=True, slots=True)
class AuthorizationRow:
    """One record of the HN daily authorization file (layout ``hn-authorization``)."""

    action: str
    number: str
    cin: str
    service: str
    decision: str
    decided_on: date
    hcpcs: str | None = None
    modifier: str | None = None
    units: int | None = None
    start: date | None = None
    end: date | None = None
    provider_npi: str | None = None
    reason: str | None = None

    @property
    def kind(self) -> str:
        """The authorization kind the action means."""
        return KIND_OF_ACTION[self.action]

    @classmethod
    def of(cls, values: Mapping[str, Value]) -> AuthorizationRow:
        """From the typed values of a record without errors (``layout.parse_detail``)."""

        def text(name: str) -> str | None:
            value = values.get(name)
            return value if isinstance(value, str) else None

        def day(name: str) -> date | None:
            value = values.get(name)
            return value if isinstance(value, date) else None

        units = values.get("UNITS")
        decided_on = day("DECISION_DATE")
        assert decided_on is not None  # required by the layout
        return cls(
            action=str(values["ACTION"]),
            number=str(values["AUTH_NUMBER"]),
            cin=str(values["MEMBER_CIN"]),
            service=str(values["SERVICE"]),
            decision=str(values["DECISION"]),
            decided_on=decided_on,
            hcpcs=text("HCPCS"),
            modifier=text("MODIFIER"),
            units=units if isinstance(units, int) and not isinstance(units, bool) else None,
            start=day("START_DATE"),
            end=day("END_DATE"),
            provider_npi=text("PROVIDER_NPI"),
            reason=text("REASON"),
        )

    def values(self) -> dict[str, Value]:
        """The record's typed values (``layout.format_detail`` writes them)."""
        return {
            "ACTION": self.action,
            "AUTH_NUMBER": self.number,
            "MEMBER_CIN": self.cin,
            "SERVICE": self.service,
            "HCPCS": self.hcpcs,
            "MODIFIER": self.modifier,
            "UNITS": self.units,
            "DECISION": self.decision,
            "START_DATE": self.start,
            "END_DATE": self.end,
            "DECISION_DATE": self.decided_on,
            "PROVIDER_NPI": self.provider_npi,
            "REASON": self.reason,
        }


@dataclass(frozen=True, slots=True)
class Refs:
    """What the store resolved for a row: ids of the resources the pair references, the Organizations as
    References (with their names as display), and the displays of the codes (from the IG)."""

    patient_id: str
    coverage_id: str
    referral_id: str
    plan: JSON
    provider: JSON | None
    notice_owner: JSON | None
    service_display: str | None
    decision_display: str
    kind_display: str | None
    party: str
    party_display: str | None
    outcome: str
    """``complete``, or ``queued`` for a decision not final yet (A4 pended)."""
    certified: bool


def _coding(system: str, code: str, display: str | None = None) -> JSON:
    out: JSON = {"system": system, "code": code}
    if display:
        out["display"] = display
    return out


def _items(row: AuthorizationRow, refs: Refs, *, required: bool | None) -> list[JSON]:
    item: JSON = {"category": {"coding": [_coding(SERVICE_SYSTEM, row.service, refs.service_display)]}}
    if row.hcpcs is not None:
        item["productOrService"] = {"coding": [_coding(HCPCS_SYSTEM, row.hcpcs)]}
        if row.modifier is not None:
            item["modifier"] = [{"coding": [_coding(HCPCS_SYSTEM, row.modifier)]}]
        if row.units is not None:
            item["extension"] = [{"url": EXT_UNITS, "valueUnsignedInt": row.units}]
    if required is not None:
        item["authorizationRequired"] = required
    return [item]


def _kind(row: AuthorizationRow, refs: Refs) -> JSON:
    return {"url": EXT_KIND, "valueCoding": _coding(KIND_SYSTEM, row.kind, refs.kind_display)}


def _period(row: AuthorizationRow) -> JSON | None:
    if row.start is None:
        return None
    period: JSON = {"start": row.start.isoformat()}
    if row.end is not None:
        period["end"] = row.end.isoformat()
    return period


def request_of(row: AuthorizationRow, refs: Refs) -> JSON:
    """The CoverageEligibilityRequest (calaim-authorization-request) of the row's decision."""
    request: JSON = {
        "resourceType": "CoverageEligibilityRequest",
        "meta": {"profile": [PROFILE_AUTH_REQUEST]},
        "extension": [
            _kind(row, refs),
            {"url": EXT_ANSWERS_REFERRAL, "valueReference": {"reference": f"ServiceRequest/{refs.referral_id}"}},
        ],
        "status": "active",
        "purpose": ["auth-requirements"],
        "patient": {"reference": f"Patient/{refs.patient_id}"},
        "created": row.decided_on.isoformat(),
        "insurer": refs.plan,
        "insurance": [{"focal": True, "coverage": {"reference": f"Coverage/{refs.coverage_id}"}}],
        "item": _items(row, refs, required=None),
    }
    if refs.provider is not None:
        request["provider"] = refs.provider
    period = _period(row)
    if period is not None and refs.certified:
        request["servicedPeriod"] = period
    return request


def response_of(row: AuthorizationRow, refs: Refs, *, request_id: str) -> JSON:
    """The CoverageEligibilityResponse (calaim-authorization) the row describes, answering ``request_id``."""
    decision = {
        "coding": [_coding(X12_306_SYSTEM, row.decision, refs.decision_display)],
        "text": refs.decision_display,
    }
    extensions: list[JSON] = [
        {"url": EXT_DECISION, "valueCodeableConcept": decision},
        {
            "url": EXT_RESPONSIBLE_PARTY,
            "valueCoding": _coding(RESPONSIBLE_PARTY_SYSTEM, refs.party, refs.party_display),
        },
        _kind(row, refs),
        {"url": EXT_ANSWERS_REFERRAL, "valueReference": {"reference": f"ServiceRequest/{refs.referral_id}"}},
    ]
    if refs.notice_owner is not None:
        extensions.append({"url": EXT_NOA_OWNER, "valueReference": refs.notice_owner})
    insurance: JSON = {"coverage": {"reference": f"Coverage/{refs.coverage_id}"}, "inforce": refs.certified}
    period = _period(row)
    if period is not None and refs.certified:
        insurance["benefitPeriod"] = period
    insurance["item"] = _items(row, refs, required=True)
    response: JSON = {
        "resourceType": "CoverageEligibilityResponse",
        "meta": {"profile": [PROFILE_AUTHORIZATION]},
        "extension": extensions,
        "identifier": [{"system": AUTHORIZATION_NUMBER_SYSTEM, "value": row.number}],
        "status": "active",
        "purpose": ["auth-requirements"],
        "patient": {"reference": f"Patient/{refs.patient_id}"},
        "created": row.decided_on.isoformat(),
        "request": {"reference": f"CoverageEligibilityRequest/{request_id}"},
        "outcome": refs.outcome,
        "disposition": row.reason or refs.decision_display,
        "insurer": refs.plan,
        "insurance": [insurance],
        "preAuthRef": row.number,
    }
    if refs.provider is not None:
        response["requestor"] = refs.provider
    return response


def _ext(element: Mapping[str, Any], url: str, key: str) -> Any:
    for extension in element.get("extension", ()):
        if isinstance(extension, dict) and extension.get("url") == url:
            return extension.get(key)
    return None


def _code(concept: Any, system: str) -> str | None:
    if not isinstance(concept, dict):
        return None
    for coding in concept.get("coding", ()):
        if coding.get("system") == system and coding.get("code"):
            return str(coding["code"])
    return None


def _day(value: Any) -> date | None:
    return date.fromisoformat(value[:10]) if isinstance(value, str) and len(value) >= 10 else None


def row_of_response(response: Mapping[str, Any], *, cin: str, provider_npi: str | None) -> AuthorizationRow:
    """The HN authorization row a stored authorization reads as (its first service line); the member's CIN
    and the provider's NPI come from the Patient and Organization the response references."""
    insurance = (response.get("insurance") or [{}])[0]
    item = (insurance.get("item") or [{}])[0]
    period = insurance.get("benefitPeriod") or {}
    decision = _ext(response, EXT_DECISION, "valueCodeableConcept") or {}
    decision_code = _code(decision, X12_306_SYSTEM) or ""
    kind = (_ext(response, EXT_KIND, "valueCoding") or {}).get("code", "initial")
    disposition = response.get("disposition")
    units = _ext(item, EXT_UNITS, "valueUnsignedInt")
    modifiers = [_code(m, HCPCS_SYSTEM) for m in item.get("modifier", ())]
    created = _day(response.get("created"))
    assert created is not None
    return AuthorizationRow(
        action=ACTION_OF_KIND.get(kind, "ADD"),
        number=str(response.get("preAuthRef")),
        cin=cin,
        service=_code(item.get("category"), SERVICE_SYSTEM) or "",
        decision=decision_code,
        decided_on=created,
        hcpcs=_code(item.get("productOrService"), HCPCS_SYSTEM),
        modifier=modifiers[0] if modifiers else None,
        units=units if isinstance(units, int) else None,
        start=_day(period.get("start")),
        end=_day(period.get("end")),
        provider_npi=provider_npi,
        reason=disposition if disposition and disposition != decision.get("text") else None,
    )


def reconciliation_rows(
    payload: Mapping[str, Any], *, cin: str, provider_npi: str | None, notice_npi: str | None
) -> list[dict[str, Value]]:
    """The ``authorization-reconciliation`` records of one ``calaim.authorization`` event (one per service
    line; one without HCPCS when the authorization has no line). The payload is the event's (references
    and codes, docs/calaim-workflow.md "Outbox topics"); the CIN and NPIs are looked up by the caller."""
    period = payload.get("period") or {}
    common: dict[str, Value] = {
        "CHANGE_ID": f"{payload['resource']}/_history/{payload['version']}",
        "AUTH_NUMBER": str(payload["authorization"]),
        "KIND": str(payload["kind"]),
        "MEMBER_CIN": cin,
        "SERVICE": str(payload["service"]),
        "DECISION": str(payload["decision"]),
        "START_DATE": _day(period.get("start")),
        "END_DATE": _day(period.get("end")),
        "DECISION_DATE": _day(payload.get("decidedOn")),
        "PROVIDER_NPI": provider_npi,
        "RESPONSIBLE_PARTY": str(payload["responsibleParty"]),
        "NOA_OWNER_NPI": notice_npi,
        "REFERRAL_ID": str(payload["referral"]).rpartition("/")[2],
    }
    lines = payload.get("lines") or [{}]
    rows: list[dict[str, Value]] = []
    for number, line in enumerate(lines, start=1):
        modifiers = line.get("modifiers") or []
        units = line.get("units")
        rows.append(
            {
                **common,
                "LINE_NO": number,
                "HCPCS": line.get("code"),
                "MODIFIER": modifiers[0] if modifiers else None,
                "UNITS": units if isinstance(units, int) else None,
            }
        )
    return rows
