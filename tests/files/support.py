"""Builders for the file exchange tests: synthetic members written through the FHIR core, and files
written in the exchange layouts (synthetic data only)."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from datetime import date
from pathlib import Path
from typing import Any

from gateway.calaim.authorizations import Line
from gateway.calaim.config import IG_BASE, POF_SYSTEM, SERVICE_SYSTEM
from gateway.calaim.decide import decide
from gateway.calaim.decision_rules import DecisionInput
from gateway.calaim.policy import Policy
from gateway.fhir.context import Context
from gateway.fhir.core import dispatch
from gateway.fhir.request import FhirRequest
from mappings.files.authorization import AuthorizationRow
from mappings.files.layout import Header, Totals, format_detail, format_header, format_trailer, layout

SD = f"{IG_BASE}/StructureDefinition"
PLAN = "calop"


def ecm_referral(ctx: Context, patient: str, *, authored_on: str) -> str:
    """POST an ECM referral of ``patient`` through the core (its hooks route it); the referral's id."""
    referral = {
        "resourceType": "ServiceRequest",
        "status": "active",
        "intent": "order",
        "code": {"coding": [{"system": SERVICE_SYSTEM, "code": "ecm"}]},
        "subject": {"reference": f"Patient/{patient}"},
        "authoredOn": authored_on,
    }
    stored = dispatch(ctx, FhirRequest("POST", "ServiceRequest", resource=referral)).stored
    assert stored is not None
    return stored.res_id


def decided_referral(
    ctx: Context, policy: Policy, patient: str, *, authored_on: str, period_start: date, decision: str = "A1"
) -> str:
    """``ecm_referral``, then ``$decide`` it (one G9012-U1 line of 48 units from ``period_start``); the
    referral's id."""
    referral_id = ecm_referral(ctx, patient, authored_on=authored_on)
    inp = DecisionInput.of(decision, lines=(Line("G9012", ("U1",), 48),), period_start=period_start)
    ctx.run_write(lambda: decide(ctx, policy=policy, referral_id=referral_id, inp=inp))
    return referral_id


def cin(key: int) -> str:
    """A synthetic CIN (8 digits and a letter)."""
    return f"9{key:07d}A"


def member_resources(
    key: int, *, network: str | None = "hn-altamed", pofs: Sequence[str] = ("1a",)
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The synthetic member ``key``: its Patient and its active Coverage (payor the plan, health network
    ``network``), as ``add_member`` PUTs them (``bench.files`` stores the same bodies in bulk)."""
    patient: dict[str, Any] = {
        "resourceType": "Patient",
        "id": f"fm-{key}",
        "meta": {"profile": [f"{SD}/calaim-member"]},
        "identifier": [{"system": f"{IG_BASE}/sid/medi-cal-cin", "value": cin(key)}],
        "name": [{"family": f"Filemember{key}", "given": ["Test"]}],
        "birthDate": "1980-01-01",
    }
    if pofs:
        patient["extension"] = [
            {"url": f"{SD}/ext-pof", "valueCoding": {"system": POF_SYSTEM, "code": p}} for p in pofs
        ]
    coverage: dict[str, Any] = {
        "resourceType": "Coverage",
        "id": f"fcov-{key}",
        "meta": {"profile": [f"{SD}/calaim-coverage"]},
        "status": "active",
        "beneficiary": {"reference": f"Patient/fm-{key}"},
        "payor": [{"reference": f"Organization/{PLAN}"}],
    }
    if network:
        coverage["extension"] = [
            {"url": f"{SD}/ext-health-network", "valueReference": {"reference": f"Organization/{network}"}}
        ]
    return patient, coverage


def add_member(ctx: Context, key: int, *, network: str | None = "hn-altamed", pofs: Sequence[str] = ("1a",)) -> str:
    """PUT a synthetic member and its active Coverage (``member_resources``) through the core; the Patient id."""
    for resource in member_resources(key, network=network, pofs=pofs):
        dispatch(ctx, FhirRequest("PUT", f"{resource['resourceType']}/{resource['id']}", resource=resource))
    return f"fm-{key}"


def add_members(ctx: Context, keys: Iterable[int], **kwargs: Any) -> None:
    """Many members in one transaction."""
    with ctx.writing() as tx:
        inner = ctx.in_transaction(tx)
        for key in keys:
            add_member(inner, key, **kwargs)


def auth_row(key: int, number: str | None = None, **changes: Any) -> AuthorizationRow:
    """An ADD row of a legacy ECM authorization (decided 2022-11-15, 6 months from 2022-12-01)."""
    values: dict[str, Any] = {
        "action": "ADD",
        "number": number or f"HN-{key:07d}",
        "cin": cin(key),
        "service": "ecm",
        "decision": "A1",
        "decided_on": date(2022, 11, 15),
        "hcpcs": "G9012",
        "modifier": "U1",
        "units": 48,
        "start": date(2022, 12, 1),
        "end": date(2023, 5, 31),
        "provider_npi": None,
        "reason": None,
    }
    values.update(changes)
    return AuthorizationRow(**values)


def write_file(
    path: Path,
    layout_id: str,
    rows: Iterable[dict[str, Any] | list[str]],
    *,
    sender: str = "hn-altamed",
    receiver: str = PLAN,
    sequence: int = 1,
    trailer: tuple[int, ...] | None = None,
    version: str | None = None,
) -> Path:
    """A file in ``layout_id``: header, one DTL per row (typed values, or raw fields after DTL), trailer
    (computed unless ``trailer`` gives count and totals)."""
    spec = layout(layout_id)
    totals = Totals(spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as stream:
        out = csv.writer(stream, delimiter="|", lineterminator="\n")
        header = Header(layout_id, version or spec.version, sender, receiver, date(2025, 1, 6), sequence)
        out.writerow(format_header(header))
        for row in rows:
            if isinstance(row, list):
                out.writerow(["DTL", *row])
                totals.count += 1
            else:
                out.writerow(format_detail(spec, row))
                totals.add(row)
        if trailer is None:
            out.writerow(format_trailer(totals.count, tuple(totals.sums)))
        else:
            out.writerow(format_trailer(trailer[0], trailer[1:]))
    return path
