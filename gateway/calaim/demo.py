"""The demo (``calaim-gateway demo``, ``calaim-gateway serve --demo``): the plan's Organizations and a few
synthetic members with referrals, decisions, closed-loop moves and documented services, so a newcomer
sees the whole flow at once.

Everything goes through the workflow, never raw inserts: resources are written through the FHIR core
(validation, the CalAIM hooks: routing, Tasks, closed loop, outbox) and decisions through
``gateway.calaim.decide.decide``. Loading twice changes nothing: Organizations, members and services are
written only when absent or different, referrals are conditional creates on their referral id, and a
referral that has an authorization is not decided again. The load is one transaction.

The members are synthetic (``meta.tag`` HTEST, made-up CINs); dates are relative to today: services are
documented in the previous month, the month to ask ``$ecm-activity`` about.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta

import orjson

from gateway.calaim.authorizations import Line, of_referral
from gateway.calaim.closed_loop import can_move, closure_reason
from gateway.calaim.config import HCPCS_SYSTEM as HCPCS
from gateway.calaim.config import IG_BASE, POF_SYSTEM, SERVICE_SYSTEM
from gateway.calaim.decide import decide
from gateway.calaim.decision_rules import DecisionInput
from gateway.calaim.policy import Policy
from gateway.calaim.resources import (
    EXT_HEALTH_NETWORK,
    EXT_POF,
    EXT_SERVICE_UNITS,
    PROFILE_ENCOUNTER,
    PROFILE_PROCEDURE,
    PROFILE_REFERRAL,
    REFERRAL_ID_SYSTEM,
    REFERRAL_STATUS_SYSTEM,
    add_months,
    body_of,
    conn_of,
    find,
    load,
    ref_id,
    reference,
    set_extension,
    today,
    write,
)
from gateway.fhir.context import Context
from gateway.fhir.core import dispatch
from gateway.fhir.request import FhirRequest
from gateway.types import JSONObject

TEST_DATA = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "HTEST"}
CIN_SYSTEM = f"{IG_BASE}/sid/medi-cal-cin"
PROFILE_MEMBER = f"{IG_BASE}/StructureDefinition/calaim-member"
PROFILE_COVERAGE = f"{IG_BASE}/StructureDefinition/calaim-coverage"


@dataclass(frozen=True)
class Referral:
    """One demo referral and what happens to it."""

    key: str
    service: str
    pofs: tuple[str, ...] = ()
    decision: str | None = None
    lines: tuple[Line, ...] = ()
    kind: str | None = None
    reason: str | None = None
    decided_on: date | None = None
    period_start: date | None = None
    moves: tuple[tuple[str, str | None, str | None], ...] = ()
    """Task moves: (status, DHCS status stated in businessStatus, closure reason)."""
    services: tuple[tuple[int, int], ...] = ()
    """Documented services in the demo month: (day of month, units)."""


@dataclass(frozen=True)
class Member:
    """One synthetic member: Patient + Coverage with a health network, and the member's referrals."""

    key: str
    family: str
    given: str
    cin: str
    network: str
    pofs: tuple[str, ...]
    referrals: tuple[Referral, ...] = field(default_factory=tuple)


def members(first: date) -> tuple[Member, ...]:
    """The synthetic members; ``first`` is the first day of the demo month."""
    ecm = (Line("G9012", ("U1",), 48),)
    outreach = (("in-progress", "outreach-initiated", None),)
    sobering = (("in-progress", None, None), ("completed", None, None))  # exempt: no closure reason needed
    navigation = (Line("H0043", ("U6",), 24),)
    sobering_line = (Line("H0014", ("U6",), 1),)
    weekly = ((3, 2), (10, 2), (17, 2), (24, 2))
    return (
        Member("1", "Rivera", "Ana", "90000001A", "hn-altamed", ("1a",), (
            Referral("1-ecm", "ecm", ("1a",), "A1", ecm, period_start=first, moves=outreach, services=weekly),
        )),
        Member("2", "Nguyen", "Bao", "90000002B", "hn-ccn", ("3",), (
            Referral("2-ecm", "ecm", ("3",), "A1", ecm, period_start=first, services=((5, 1), (19, 2))),
        )),
        Member("3", "Lopez", "Carmen", "90000003C", "hn-prospect", ("4",), (
            Referral("3-ecm", "ecm", ("4",), "A1", ecm, period_start=first, services=((2, 4), (9, 3))),
        )),
        Member("4", "Smith", "Dana", "90000004D", "hn-noble", (), (
            Referral("4-nav", "housing-transition-navigation", (), "A1", navigation, period_start=first),
            Referral("4-dep", "housing-deposits", (), "A4"),
        )),
        Member("5", "Kim", "Eli", "90000005E", "hn-amvi", (), (
            Referral("5-meals", "medically-tailored-meals", (), "A3", reason="Does not meet the service criteria"),
        )),
        Member("6", "Patel", "Farah", "90000006F", "hn-optum-monarch", ("2",), (
            Referral("6-ecm", "ecm", ("2",), "A1", ecm, decided_on=date(2022, 11, 15), period_start=date(2022, 12, 1)),
        )),
        Member("7", "Garcia", "Gus", "90000007G", "hn-choc", (), (
            Referral("7-sober", "sobering-centers", (), "A1", sobering_line, period_start=first, moves=sobering),
        )),
    )  # fmt: skip


@dataclass
class Summary:
    """What the demo load did, for the CLI to print."""

    month: str
    organizations: int = 0
    members: int = 0
    referrals: list[str] = field(default_factory=list)
    authorizations: list[str] = field(default_factory=list)


def load_demo(ctx: Context, *, policy: Policy, on: date | None = None) -> Summary:
    """Load the demo into ``ctx``'s store (idempotent, one transaction); what it holds afterwards."""
    first = add_months((on or today()).replace(day=1), -1)
    summary = Summary(month=first.strftime("%Y-%m"))

    def unit() -> Summary:
        with ctx.writing() as tx:
            inner = ctx.in_transaction(tx)
            for organization in policy.organizations.values():
                _ensure(inner, dict(organization))
            summary.organizations = len(policy.organizations)
            for member in members(first):
                _ensure(inner, _patient(member))
                _ensure(inner, _coverage(policy, member, first))
                for referral in member.referrals:
                    _referral(inner, policy, member, referral, first, summary)
            summary.members = len(members(first))
        return summary

    return ctx.run_write(unit)


def _ensure(ctx: Context, resource: JSONObject) -> None:
    """PUT ``resource`` unless the stored one already says the same (ignoring meta.versionId/lastUpdated)."""
    found = load(conn_of(ctx), resource["resourceType"], str(resource["id"]))
    if found is not None and _same(found[1], resource):
        return
    write(ctx, "PUT", f"{resource['resourceType']}/{resource['id']}", resource)


def _same(stored: JSONObject, wanted: JSONObject) -> bool:
    def strip(resource: JSONObject) -> bytes:
        meta = {k: v for k, v in (resource.get("meta") or {}).items() if k not in ("versionId", "lastUpdated")}
        return orjson.dumps({**resource, "meta": meta}, option=orjson.OPT_SORT_KEYS)

    return strip(stored) == strip(wanted)


def _patient(member: Member) -> JSONObject:
    patient: JSONObject = {
        "resourceType": "Patient",
        "id": f"demo-member-{member.key}",
        "meta": {"profile": [PROFILE_MEMBER], "tag": [TEST_DATA]},
        "identifier": [{"system": CIN_SYSTEM, "value": member.cin}],
        "name": [{"family": member.family, "given": [member.given]}],
        "address": [{"city": "Santa Ana", "state": "CA", "postalCode": "92701"}],
    }
    if member.pofs:
        patient["extension"] = [
            {"url": EXT_POF, "valueCoding": {"system": POF_SYSTEM, "code": pof}} for pof in member.pofs
        ]
    return patient


def _coverage(policy: Policy, member: Member, first: date) -> JSONObject:
    return {
        "resourceType": "Coverage",
        "id": f"demo-coverage-{member.key}",
        "meta": {"profile": [PROFILE_COVERAGE], "tag": [TEST_DATA]},
        "extension": [{"url": EXT_HEALTH_NETWORK, "valueReference": policy.org(member.network)}],
        "status": "active",
        "subscriberId": f"OC-DEMO-{member.key}",
        "beneficiary": reference("Patient", f"demo-member-{member.key}"),
        "period": {"start": "2022-01-01"},
        "payor": [policy.org(policy.plan_organization)],
    }


def _referral(ctx: Context, policy: Policy, member: Member, spec: Referral, first: date, summary: Summary) -> None:
    authored = spec.decided_on or first - timedelta(days=10)
    body: JSONObject = {
        "resourceType": "ServiceRequest",
        "meta": {"profile": [PROFILE_REFERRAL], "tag": [TEST_DATA]},
        "identifier": [{"system": REFERRAL_ID_SYSTEM, "value": f"DEMO-{spec.key}"}],
        "status": "active",
        "intent": "order",
        "code": {"coding": [policy.coded(SERVICE_SYSTEM, spec.service)]},
        "subject": reference("Patient", f"demo-member-{member.key}"),
        "authoredOn": authored.isoformat(),
    }
    if spec.pofs:
        body["extension"] = [{"url": EXT_POF, "valueCoding": {"system": POF_SYSTEM, "code": p}} for p in spec.pofs]
    condition = f"identifier={REFERRAL_ID_SYSTEM}|DEMO-{spec.key}"
    response = dispatch(ctx, FhirRequest("POST", "ServiceRequest", resource=body, headers={"if-none-exist": condition}))
    assert response.stored is not None
    referral_id = response.stored.res_id
    summary.referrals.append(f"ServiceRequest/{referral_id} ({spec.service}, {member.family})")
    existing = of_referral(ctx, conn_of(ctx), referral_id)
    if spec.decision is not None and not existing:
        inp = DecisionInput.of(
            spec.decision, lines=spec.lines, period_start=spec.period_start, reason=spec.reason, kind=spec.kind
        )
        decide(ctx, policy=policy, referral_id=referral_id, inp=inp, decided_on=spec.decided_on)
        existing = of_referral(ctx, conn_of(ctx), referral_id)
    summary.authorizations.extend(f"{a.number} {a.decision} ({spec.service}, {member.family})" for a in existing)
    for status, stated, reason in spec.moves:
        _move(ctx, policy, referral_id, status, stated, reason)
    provider = ref_id((body_of(response.stored).get("performer") or [None])[0], "Organization")
    for n, (day, units) in enumerate(spec.services, start=1):
        record = _service(policy, member, spec, referral_id, n, first.replace(day=day), units)
        if record["resourceType"] == "Procedure":
            record["performer"] = [{"actor": policy.org(str(provider))}]
        else:
            record["serviceProvider"] = policy.org(str(provider))
        _ensure(ctx, record)


def _move(ctx: Context, policy: Policy, referral_id: str, status: str, stated: str | None, reason: str | None) -> None:
    tasks = find(ctx, conn_of(ctx), "Task", [("focus", f"ServiceRequest/{referral_id}")], limit=1)
    if not tasks or tasks[0].get("status") == status or not can_move(str(tasks[0].get("status")), status):
        return
    task = tasks[0]
    task["status"] = status
    if stated is not None:
        task["businessStatus"] = {"coding": [policy.coded(REFERRAL_STATUS_SYSTEM, stated)]}
    if reason is not None:
        set_extension(task, closure_reason(policy, reason))
    write(ctx, "PUT", f"Task/{task['id']}", task)


def _service(
    policy: Policy, member: Member, spec: Referral, referral_id: str, n: int, day: date, units: int
) -> JSONObject:
    """A documented service: odd ones as Procedures, even ones as Encounters (both forms are accepted)."""
    line = spec.lines[0] if spec.lines else None
    common: JSONObject = {
        "id": f"demo-service-{spec.key}-{n}",
        "extension": [{"url": EXT_SERVICE_UNITS, "valueUnsignedInt": units}],
        "subject": reference("Patient", f"demo-member-{member.key}"),
        "basedOn": [reference("ServiceRequest", referral_id)],
    }
    service = {"coding": [policy.coded(SERVICE_SYSTEM, spec.service)]}
    hcpcs = {"coding": [{"system": HCPCS, "code": line.code if line else "G9012"}]}
    if n % 2:
        meta = {"profile": [PROFILE_PROCEDURE], "tag": [TEST_DATA]}
        procedure: JSONObject = {"resourceType": "Procedure", "meta": meta}
        procedure.update(common)
        procedure.update(status="completed", category=service, code=hcpcs, performedDateTime=day.isoformat())
        return procedure
    encounter: JSONObject = {"resourceType": "Encounter", "meta": {"profile": [PROFILE_ENCOUNTER], "tag": [TEST_DATA]}}
    encounter.update(common)
    encounter.update(status="finished", type=[hcpcs], serviceType=service)
    encounter["class"] = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"}
    encounter["period"] = {"start": day.isoformat(), "end": day.isoformat()}
    return encounter
