"""``POST [base]/ServiceRequest/{id}/$decide`` (OperationDefinition decide): plan staff record the
authorization decision on a referral (issue 4; REFERENCE.md §3, §4).

In one transaction, after every check of ``gateway.calaim.decision_rules`` passed:

- a CoverageEligibilityRequest (calaim-authorization-request) records what was decided on, and a
  CoverageEligibilityResponse (calaim-authorization) the authorization: a new one (new number) for an
  initial, presumptive or reauthorization decision, a new version of the referral's current one for a
  modification or a termination ("service closure and discharge": the period ends);
- the responsible party is labelled (created before the plan's cutover, 2023-01-01: the member's health
  network; on or after: the plan) with who owes the Notice of Action when one is owed;
- the referral's Task moves per ConceptMap decision-task-status on the first decision (A1/A2/A6 accepted,
  A3 rejected, C cancelled, A4 unchanged) and completes on a termination; reauthorizations and
  modifications leave it;
- ``calaim.authorization`` is enqueued (HN reconciliation file, county RRI).

The referral's row is locked first, so two decisions on one referral run one after the other.

Retries: the optional ``requestId`` is stored as the CoverageEligibilityRequest's identifier (system
``{ig}/sid/decision-request-id``). It is looked up once the referral is locked, so of two concurrent
retries the second waits for the first and finds its request: a repeated ``requestId`` for the same
referral answers the authorization version that request created (200, nothing written); the same
``requestId`` with different content is a 409.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import Connection, select

from gateway.calaim import events
from gateway.calaim.authorizations import (
    MAX_AUTHORIZATIONS,
    Authorization,
    Line,
    Pair,
    current,
    new_number,
    of_referral,
)
from gateway.calaim.closed_loop import can_move, closure_reason
from gateway.calaim.config import IG_BASE
from gateway.calaim.decision_rules import (
    CHANGES,
    INITIAL,
    PRESUMPTIVE,
    TERMINATION,
    DecisionInput,
    authorized_period,
    certifies,
    check_lines,
    check_reason,
    owes_notice,
    resolve_kind,
)
from gateway.calaim.members import member_pofs, membership, pofs_of, trusted_for_presumptive
from gateway.calaim.parameters import read_parameters
from gateway.calaim.policy import DECISION_TASK_MAP, Policy
from gateway.calaim.referrals import is_referral, referral_member, referral_service
from gateway.calaim.resources import (
    DECISION_REQUEST_SYSTEM,
    EXT_ANSWERS_REFERRAL,
    OPEN_REQUEST_STATUSES,
    body_of,
    conn_of,
    extension_value,
    find,
    ref_id,
    refuse,
    set_extension,
    today,
    write,
)
from gateway.errors import Conflict, NotFound, Unprocessable
from gateway.fhir.context import Context
from gateway.fhir.operations import operation_body
from gateway.fhir.request import FhirRequest, FhirResponse
from gateway.fhir.responses import version_headers
from gateway.store.repository import StoredResource
from gateway.store.schema import resource_version

DEFINITION = f"{IG_BASE}/OperationDefinition/decide"
BEYOND = (
    "ECM authorization may not add requirements beyond the Population of Focus criteria (such as a minimum "
    "number of contacts), nor Community Supports restrictions beyond the DHCS service definitions "
    "(REFERENCE.md section 3)"
)
HEALTH_NETWORK = "hn"
"""The responsible-party code of a health network (CodeSystem responsible-party); the other is the plan."""
TERMINATION_CLOSURE = "services-received"
"""Loop closure reason of a termination: service closure and discharge (CodeSystem loop-closure-reason)."""
CANCEL_CLOSURE = "other"
"""Loop closure reason when a decision cancels the referral (the decision's reason says why)."""


class DecideOperation:
    """The ``$decide`` handler (registered by ``gateway.calaim.setup``)."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy

    def __call__(self, ctx: Context, request: FhirRequest, params: dict[str, str]) -> FhirResponse:
        """Parse and check the Parameters, then decide in one transaction; answer the authorization."""
        body = operation_body(ctx, request, missing="$decide takes a Parameters body")
        definition = self.policy.ig.resources[DEFINITION]
        inp = DecisionInput.parse(read_parameters(body, definition, policy=self.policy, beyond=BEYOND))
        stored = ctx.run_write(lambda: decide(ctx, policy=self.policy, referral_id=params["id"], inp=inp))
        return FhirResponse(200, stored.body, version_headers(request, stored), stored=stored)


def decide(
    ctx: Context,
    *,
    policy: Policy,
    referral_id: str,
    inp: DecisionInput,
    decided_on: date | None = None,
    hn_file: bool = False,
) -> StoredResource:
    """Record a decision on a referral in ``ctx``'s transaction (or a new one); the stored authorization.

    ``decided_on`` (default today) dates the authorization, which decides the responsible party; the file
    adapters pass the date of the HN's own decision. ``hn_file`` says the decision comes from the HN's daily
    authorization file, the only channel that may change an HN-owned authorization (REFERENCE.md §4).
    """
    day = decided_on or today()
    with ctx.writing() as tx:
        inner = ctx.in_transaction(tx)
        conn = conn_of(inner)
        locked = tx.current("ServiceRequest", referral_id)
        if locked is None or locked.deleted:
            raise NotFound(f"ServiceRequest/{referral_id} is not known")
        referral = body_of(locked)
        if not is_referral(referral):
            text = f"ServiceRequest/{referral_id} is not a CalAIM referral (no calaim-service code)"
            raise refuse(Unprocessable, "business-rule", text, "ServiceRequest")
        if inp.request_id is not None:
            answered = _answered(inner, conn, policy, referral_id, inp)
            if answered is not None:
                return answered  # a retry: nothing is written
        service, patient = referral_service(policy, referral), referral_member(referral)
        provider = ref_id((referral.get("performer") or [None])[0], "Organization")
        previous = current(policy, of_referral(inner, conn, referral_id))
        kind = resolve_kind(
            policy,
            inp,
            service=service,
            pofs=pofs_of(referral) or member_pofs(conn, patient),
            provider=provider,
            trusted=provider is not None and trusted_for_presumptive(policy, conn, provider),
            previous=previous,
        )
        if kind not in CHANGES and referral.get("status") not in OPEN_REQUEST_STATUSES:
            status = referral.get("status")
            text = f"ServiceRequest/{referral_id} is {status}: only an open referral gets a new authorization"
            raise refuse(Conflict, "business-rule", text, "ServiceRequest.status")
        party = previous.responsible_party if kind in CHANGES and previous else None
        party = party or policy.plan.responsible_party.for_created(day)
        if kind in CHANGES and party == HEALTH_NETWORK and not hn_file:
            text = (
                f"Authorization {previous.number if previous else ''} belongs to the member's health network: its "
                "modifications and terminations come from the HN's daily authorization file (REFERENCE.md section 4)"
            )
            raise refuse(Unprocessable, "business-rule", text, inp.at("kind", "decision"))
        check_reason(policy, inp, kind)
        certifying = certifies(policy, inp.decision)
        check_lines(policy, service, inp, need_lines=certifying and kind not in CHANGES)
        period = authorized_period(policy, inp, service=service, kind=kind, decided_on=day, previous=previous)
        member = membership(inner, conn, patient)
        if member is None:
            text = f"Patient/{patient} has no active Coverage with the plan (profile calaim-coverage)"
            raise refuse(Unprocessable, "business-rule", text, "ServiceRequest.subject")
        owner = member.health_network if party == HEALTH_NETWORK else policy.plan_organization
        if owner is None:
            text = f"The member's health network owns the authorization; Coverage/{member.coverage_id} names none"
            raise refuse(Unprocessable, "business-rule", text, "ServiceRequest.subject")
        lines = tuple(item.line for item in inp.lines) or (previous.lines if previous and kind in CHANGES else ())
        pair = Pair(
            policy=policy,
            referral_id=referral_id,
            patient_id=patient,
            service=service,
            provider=provider,
            coverage_id=member.coverage_id,
            decision=inp.decision,
            kind=kind,
            responsible_party=party,
            notice_owner=owner if owes_notice(policy, inp.decision, kind) else None,
            period=period if certifying else None,
            lines=lines,
            reason=inp.reason,
            decided_on=day,
            request_key=inp.request_id,
        )
        request_stored = write(inner, "POST", "CoverageEligibilityRequest", pair.request())
        stored = _write_authorization(inner, pair, request_stored.res_id, previous if kind in CHANGES else None)
        _move_task(inner, policy, referral_id, inp, kind)
        payload = _payload(pair, Authorization.of(body_of(stored)), request_stored, member.health_network)
        events.emit(inner, topic=events.AUTHORIZATION, stored=stored, payload=payload, referral=referral)
        return stored


def _answered(
    ctx: Context, conn: Connection, policy: Policy, referral_id: str, inp: DecisionInput
) -> StoredResource | None:
    """The authorization version an earlier request with ``inp.request_id`` on this referral created (None:
    no such request); 409 when that request decided something else."""
    params = [("identifier", f"{DECISION_REQUEST_SYSTEM}|{inp.request_id}")]
    requests = find(ctx, conn, "CoverageEligibilityRequest", params, limit=MAX_AUTHORIZATIONS)
    mine = [
        r
        for r in requests
        if ref_id(extension_value(r, EXT_ANSWERS_REFERRAL, "valueReference"), "ServiceRequest") == referral_id
    ]
    if not mine:
        return None
    answer = f"CoverageEligibilityRequest/{mine[0]['id']}"
    ids = [str(a.id) for a in of_referral(ctx, conn, referral_id)]
    rows = conn.execute(
        select(resource_version)
        .where(resource_version.c.res_type == "CoverageEligibilityResponse", resource_version.c.res_id.in_(ids))
        .order_by(resource_version.c.hseq)
    ).all()
    for row in rows:
        version = StoredResource(
            rid=row.rid,
            res_type=row.res_type,
            res_id=row.res_id,
            version_id=row.version_id,
            last_updated=row.last_updated,
            deleted=bool(row.deleted),
            body=bytes(row.body) if row.body is not None else None,
            method=row.method,
        )
        if version.body is None or (body_of(version).get("request") or {}).get("reference") != answer:
            continue
        if not _same(policy, inp, Authorization.of(body_of(version))):
            text = (
                f"requestId {inp.request_id!r} already decided ServiceRequest/{referral_id} ({answer}) with "
                "different content: a retry repeats the request unchanged, a new decision takes a new requestId"
            )
            raise refuse(Conflict, "conflict", text, inp.at("requestId"))
        return version
    raise refuse(Conflict, "conflict", f"{answer} has no authorization answering it", inp.at("requestId"))


def _same(policy: Policy, inp: DecisionInput, auth: Authorization) -> bool:
    """Whether ``inp`` says what the authorization it is compared with records (what the input left to
    the defaults is not compared)."""
    lines = tuple(item.line for item in inp.lines)
    checks = (
        auth.decision == inp.decision,
        auth.body.get("disposition") == (inp.reason or policy.decision_display(inp.decision)),
        inp.kind is None or auth.kind == inp.kind,
        lines == auth.lines if lines else (auth.kind in CHANGES or not auth.lines),
        inp.period_start is None or auth.start is None or auth.kind == TERMINATION or auth.start == inp.period_start,
        inp.period_end is None or auth.end is None or auth.end == inp.period_end,
    )
    return all(checks)


def _write_authorization(ctx: Context, pair: Pair, request_id: str, changed: Authorization | None) -> StoredResource:
    if changed is None:
        number, created = new_number(pair.decided_on), pair.decided_on.isoformat()
        response = pair.response(request_id=request_id, number=number, created=created)
        return write(ctx, "POST", "CoverageEligibilityResponse", response)
    created = str(changed.body.get("created") or pair.decided_on.isoformat())
    response = pair.response(request_id=request_id, number=str(changed.number), created=created)
    response["id"] = changed.id
    return write(ctx, "PUT", f"CoverageEligibilityResponse/{changed.id}", response)


def _move_task(ctx: Context, policy: Policy, referral_id: str, inp: DecisionInput, kind: str) -> None:
    """Move the referral's Task as the decision says (module docstring); a move the Task's state does not
    allow (the provider already moved it further) is left out."""
    if kind in (INITIAL, PRESUMPTIVE):
        targets = policy.translate(DECISION_TASK_MAP, inp.decision)
    else:
        targets = ["completed"] if kind == TERMINATION else []
    tasks = find(ctx, conn_of(ctx), "Task", [("focus", f"ServiceRequest/{referral_id}")], limit=1)
    if not targets or not tasks:
        return
    task = tasks[0]
    if task.get("status") == targets[0] or not can_move(str(task.get("status")), targets[0]):
        return
    task["status"] = targets[0]
    if inp.reason:
        task["statusReason"] = {"text": inp.reason}
    if kind == TERMINATION:
        set_extension(task, closure_reason(policy, TERMINATION_CLOSURE, inp.reason))
    elif targets[0] == "cancelled":
        set_extension(task, closure_reason(policy, CANCEL_CLOSURE, inp.reason))
    write(ctx, "PUT", f"Task/{task['id']}", task)


def _payload(pair: Pair, auth: Authorization, request: StoredResource, network: str | None) -> dict[str, Any]:
    return {
        "authorization": auth.number,
        "request": f"CoverageEligibilityRequest/{request.res_id}",
        "referral": f"ServiceRequest/{pair.referral_id}",
        "patient": f"Patient/{pair.patient_id}",
        "service": pair.service,
        "decision": pair.decision,
        "kind": pair.kind,
        "responsibleParty": pair.responsible_party,
        "healthNetwork": f"Organization/{network}" if network else None,
        "noticeOfActionOwner": f"Organization/{pair.notice_owner}" if pair.notice_owner else None,
        "provider": f"Organization/{pair.provider}" if pair.provider else None,
        "period": {"start": auth.start.isoformat(), "end": auth.end.isoformat()} if auth.start and auth.end else None,
        "lines": [{"code": line.code, "modifiers": list(line.modifiers), "units": line.units} for line in auth.lines],
        "decidedOn": pair.decided_on.isoformat(),
    }


__all__ = ["DecideOperation", "DecisionInput", "Line", "decide"]
