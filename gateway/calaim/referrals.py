"""Referral intake (issue 4 "Workflow rules"; REFERENCE.md §2, §3, §5): a write hook on ServiceRequest.

A ServiceRequest is a CalAIM referral when it claims profile calaim-referral or codes a CalAIM service
(CodeSystem calaim-service). When an open one (draft, active, on-hold) is created:

- a duplicate, an open referral for the same member (``subject``) and service (``code``), answers the
  create instead (200 with the existing referral, as a conditional create would);
- otherwise the referral is routed (``gateway.calaim.routing``: ``performer`` is set before the write),
  its Task is created (profile calaim-referral-task: requested, DHCS status Pending, owner = the routed
  provider) and ``calaim.referral`` is enqueued (when it has a consumer: none today,
  ``gateway.calaim.events``), all in the write's transaction.

Duplicates are excluded by a unique key, not by the search alone (DESIGN.md choice 3): an open referral
holds the ``conditional_key`` of its member-service query, so of two concurrent creates one fails on the
key, reruns, and finds the other. Any write of a referral drops its key (``WriteTransaction``), so the
update hook takes it again while the referral stays open; a closed referral frees it.

A referral ended by a plain FHIR update (status ``revoked`` or ``entered-in-error``) cancels its open
Task in the same transaction, through the closed-loop hook (DHCS status and date stamped,
``calaim.referral-status`` enqueued), with closure reason ``other`` and the referral status as its text.
"""

from __future__ import annotations

from sqlalchemy import Connection, select

from gateway.calaim import events
from gateway.calaim.closed_loop import TERMINAL, business_status, can_move, closure_reason, referral_status_extension
from gateway.calaim.config import SERVICE_SYSTEM
from gateway.calaim.members import member_pofs, membership, pofs_of
from gateway.calaim.policy import TASK_REFERRAL_STATUS_MAP, Policy
from gateway.calaim.resources import (
    OPEN_REQUEST_STATUSES,
    PROFILE_REFERRAL,
    PROFILE_TASK,
    TASK_CODE_SYSTEM,
    claims,
    coding,
    conn_of,
    find,
    first_code,
    now_instant,
    ref_id,
    reference,
    refuse,
    set_extension,
    write,
)
from gateway.calaim.routing import route
from gateway.errors import Conflict, InternalError, Unprocessable
from gateway.fhir.conditional import claim, condition_key
from gateway.fhir.context import Context
from gateway.fhir.hooks import WriteEvent
from gateway.store.repository import StoredResource, WriteConflict, current_version
from gateway.store.schema import conditional_key
from gateway.types import JSONObject, QueryParams

ENDED_REFERRAL_STATUSES = ("revoked", "entered-in-error")
"""Referral statuses that cancel the referral's open Task (https://hl7.org/fhir/R4/valueset-request-status.html)."""
ENDED_CLOSURE = "other"
"""Loop closure reason of a Task cancelled because its referral ended (CodeSystem loop-closure-reason)."""


def is_referral(resource: JSONObject | None) -> bool:
    """Whether a ServiceRequest is a CalAIM referral (claims the profile or codes a CalAIM service)."""
    if resource is None:
        return False
    return claims(resource, PROFILE_REFERRAL) or first_code(resource.get("code"), SERVICE_SYSTEM) is not None


def referral_service(policy: Policy, referral: JSONObject) -> str:
    """The CalAIM service a referral is for; 422 when it codes none the IG knows."""
    service = first_code(referral.get("code"), SERVICE_SYSTEM)
    if service is None or not policy.is_service(service):
        text = f"A CalAIM referral codes its service with {SERVICE_SYSTEM} (ValueSet calaim-service)"
        raise refuse(Unprocessable, "code-invalid", text, "ServiceRequest.code")
    return service


def referral_member(referral: JSONObject) -> str:
    """The member (Patient id) of a referral; 422 unless ``subject`` is a Patient reference."""
    patient = ref_id(referral.get("subject"), "Patient")
    if patient is None:
        text = "A CalAIM referral's subject is the member (a Patient reference)"
        raise refuse(Unprocessable, "required", text, "ServiceRequest.subject")
    return patient


def open_key(patient_id: str, service: str) -> QueryParams:
    """The search for the open referrals of a member and service (its hash is the uniqueness key)."""
    return [
        ("subject", f"Patient/{patient_id}"),
        ("service", f"{SERVICE_SYSTEM}|{service}"),
        ("status", ",".join(OPEN_REQUEST_STATUSES)),
    ]


class ReferralHook:
    """Write hook of ``ServiceRequest``: intake of CalAIM referrals (module docstring)."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy

    def _intake(self, resource: JSONObject | None) -> bool:
        return is_referral(resource) and (resource or {}).get("status") in OPEN_REQUEST_STATUSES

    def before(self, ctx: Context, event: WriteEvent) -> StoredResource | None:
        """Answer a duplicate with the open referral, or route the new one (``performer``)."""
        referral = event.resource
        if event.interaction != "create" or referral is None or not self._intake(referral):
            return None
        conn = conn_of(ctx)
        patient, service = referral_member(referral), referral_service(self.policy, referral)
        existing = _open_referral(ctx, conn, open_key(patient, service))
        if existing is not None:
            return existing
        performers = referral.get("performer") or []
        requested = ref_id(performers[0], "Organization") if performers else None
        if performers and requested is None:
            text = "A referral's performer is the provider Organization it is referred to"
            raise refuse(Unprocessable, "business-rule", text, "ServiceRequest.performer[0]")
        member = membership(ctx, conn, patient)
        provider = route(
            self.policy,
            service=service,
            pofs=pofs_of(referral) or member_pofs(conn, patient),
            health_network=member.health_network if member else None,
            requested=requested,
        )
        referral["performer"] = [reference("Organization", provider, self.policy.organization_name(provider))]
        return None

    def after(self, ctx: Context, event: WriteEvent) -> None:
        """Create the Task of a new referral; keep an open referral's uniqueness key after an update; cancel
        the open Task of a referral an update revoked."""
        referral, stored = event.resource, event.stored
        if referral is None or stored is None:
            return
        if event.interaction != "create" and is_referral(referral):
            status = referral.get("status")
            if status in ENDED_REFERRAL_STATUSES:
                self._cancel_task(ctx, stored.res_id, str(status))
                return
        if not self._intake(referral):
            return
        if ctx.tx is None:
            raise InternalError("write hooks run inside the write's transaction")
        key = open_key(referral_member(referral), referral_service(self.policy, referral))
        if event.interaction == "create":
            claim(ctx.tx, "ServiceRequest", key, stored.rid)  # a lost race reruns the create, which finds the winner
            self._take_in(ctx, referral, stored)
        else:
            _hold_key(ctx, key, stored)

    def _cancel_task(self, ctx: Context, referral_id: str, status: str) -> None:
        """Cancel the referral's Task unless it already ended (a PUT through the closed-loop hook)."""
        tasks = find(ctx, conn_of(ctx), "Task", [("focus", f"ServiceRequest/{referral_id}")], limit=1)
        if not tasks:
            return
        task = tasks[0]
        old = str(task.get("status"))
        if old in TERMINAL or not can_move(old, "cancelled"):
            return
        text = f"The referral (ServiceRequest/{referral_id}) was set to {status}"
        task["status"] = "cancelled"
        task["statusReason"] = {"text": text}
        set_extension(task, closure_reason(self.policy, ENDED_CLOSURE, text))
        write(ctx, "PUT", f"Task/{task['id']}", task)

    def _take_in(self, ctx: Context, referral: JSONObject, stored: StoredResource) -> None:
        patient, service = referral_member(referral), referral_service(self.policy, referral)
        provider = str(ref_id(referral["performer"][0], "Organization"))
        task = new_task(self.policy, referral_id=stored.res_id, patient_id=patient, provider=provider)
        if isinstance(referral.get("requester"), dict):
            task["requester"] = referral["requester"]
        task_stored = write(ctx, "POST", "Task", task)
        if events.wanted(events.REFERRAL):  # no consumer today (gateway.calaim.events): nothing to build
            payload = referral_event_payload(referral, stored.res_id, task_stored.res_id, service=service)
            events.emit(ctx, topic=events.REFERRAL, stored=stored, payload=payload, referral=referral)


def referral_event_payload(referral: JSONObject, referral_id: str, task_id: str, *, service: str) -> JSONObject:
    """The payload of ``calaim.referral`` for a routed referral and its new Task (docs/calaim-workflow.md)."""
    return {
        "referral": f"ServiceRequest/{referral_id}",
        "patient": f"Patient/{referral_member(referral)}",
        "service": service,
        "pofs": pofs_of(referral),
        "provider": f"Organization/{ref_id(referral['performer'][0], 'Organization')}",
        "task": f"Task/{task_id}",
        "requester": (referral.get("requester") or {}).get("reference"),
    }


def new_task(policy: Policy, *, referral_id: str, patient_id: str, provider: str) -> JSONObject:
    """The closed-loop Task of a new referral: requested, with the DHCS status of ``requested`` (Pending)."""
    when = now_instant()
    status = policy.translate(TASK_REFERRAL_STATUS_MAP, "requested")[0]
    return {
        "resourceType": "Task",
        "meta": {"profile": [PROFILE_TASK]},
        "extension": [referral_status_extension(policy, status, when)],
        "status": "requested",
        "businessStatus": business_status(policy, status),
        "intent": "order",
        "code": {"coding": [coding(TASK_CODE_SYSTEM, "fulfill", "Fulfill the focal request")]},
        "focus": reference("ServiceRequest", referral_id),
        "for": reference("Patient", patient_id),
        "authoredOn": when,
        "lastModified": when,
        "owner": reference("Organization", provider, policy.organization_name(provider)),
    }


def _open_referral(ctx: Context, conn: Connection, params: QueryParams) -> StoredResource | None:
    """The oldest open referral matching ``params``; releases the uniqueness key if it is stale."""
    for _ in range(2):  # the key's holder may have committed after the first search: look again
        found = ctx.search.find(conn, resource_type="ServiceRequest", params=params, limit=1)
        if found:
            return current_version(conn, "ServiceRequest", found[0].res_id)
        holder = conn.execute(
            select(conditional_key.c.rid).where(
                conditional_key.c.res_type == "ServiceRequest", conditional_key.c.key_hash == condition_key(params)
            )
        ).first()
        if holder is None:
            return None
    assert ctx.tx is not None
    ctx.tx.release_conditional_key("ServiceRequest", condition_key(params))
    return None


def _hold_key(ctx: Context, params: QueryParams, stored: StoredResource) -> None:
    """Take the open referral's key again after an update (409 if another open referral holds it)."""
    assert ctx.tx is not None
    if ctx.tx.claim_conditional_key("ServiceRequest", condition_key(params), stored.rid):
        return
    conn = conn_of(ctx)
    found = ctx.search.find(conn, resource_type="ServiceRequest", params=params, limit=2)
    others = [m for m in found if m.res_id != stored.res_id]
    if others:
        text = f"ServiceRequest/{others[0].res_id} is already an open referral for this member and service"
        raise refuse(Conflict, "duplicate", text, "ServiceRequest.status")
    ctx.tx.release_conditional_key("ServiceRequest", condition_key(params))
    if not ctx.tx.claim_conditional_key("ServiceRequest", condition_key(params), stored.rid):
        raise WriteConflict("an open referral's key raced with another write")
