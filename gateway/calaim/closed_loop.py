"""Closed-loop referrals (REFERENCE.md §5): the referral Task (profile calaim-referral-task) moved by
providers from their own systems with plain FHIR update or patch.

On every write of such a Task the hook, inside the write's transaction:

1. refuses an illegal move of ``Task.status`` (the R4 Task state machine,
   https://hl7.org/fhir/R4/task.html#statemachine, restricted to a referral's life): **409 Conflict**
   for a move from the current state that the state machine does not allow (the request conflicts with
   the resource's state), **422** for a new Task that does not start as draft or requested and for
   changes of ``focus`` or ``for`` (the referral and the member are fixed);
2. records the DHCS referral status and its date (``ext-referral-status``, mirrored in
   ``businessStatus``), from ConceptMap task-status-referral-status: the first target of the Task status,
   or a further target the provider states in ``businessStatus`` (Outreach initiated); a stated status
   the Task status does not allow is a 422;
3. requires a closure reason (``ext-loop-closure-reason``) when the loop closes, except for the services
   plan.json exempts (sobering centers): 422 otherwise;
4. after the write, enqueues ``calaim.referral-status`` when the DHCS status changed (its only reader is
   the county's RRI: written for county referrals only, ``gateway.calaim.events``), and closes the
   referral (ServiceRequest ``completed`` when the Task completed, ``revoked`` for any other end).
"""

from __future__ import annotations

from typing import Any

from gateway.calaim import events
from gateway.calaim.config import SERVICE_SYSTEM
from gateway.calaim.policy import TASK_REFERRAL_STATUS_MAP, Policy
from gateway.calaim.resources import (
    CLOSURE_REASON_SYSTEM,
    EXT_CLOSURE_REASON,
    EXT_REFERRAL_STATUS,
    OPEN_REQUEST_STATUSES,
    PROFILE_TASK,
    REFERRAL_STATUS_SYSTEM,
    add_profile,
    body_of,
    claims,
    codes_of,
    coding,
    conn_of,
    extension_value,
    extensions,
    first_code,
    load,
    now_instant,
    ref_id,
    refuse,
    set_extension,
    write,
)
from gateway.errors import Conflict, Unprocessable
from gateway.fhir.context import Context
from gateway.fhir.hooks import WriteEvent
from gateway.fhir.profiles import validate_against_profile
from gateway.store.repository import StoredResource
from gateway.types import JSONObject

TERMINAL = frozenset({"rejected", "completed", "failed", "cancelled", "entered-in-error"})
TRANSITIONS: dict[str | None, frozenset[str]] = {
    None: frozenset({"draft", "requested"}),
    "draft": frozenset({"requested", "cancelled"}),
    "requested": frozenset({"received", "accepted", "rejected", "cancelled"}),
    "received": frozenset({"accepted", "rejected", "cancelled"}),
    "accepted": frozenset({"ready", "in-progress", "on-hold", "completed", "failed", "cancelled"}),
    "ready": frozenset({"in-progress", "on-hold", "completed", "failed", "cancelled"}),
    "in-progress": frozenset({"on-hold", "completed", "failed", "cancelled"}),
    "on-hold": frozenset({"in-progress", "completed", "failed", "cancelled"}),
}
"""The moves of https://hl7.org/fhir/R4/task.html#statemachine a referral Task may make (the FHIR state
machine, not plan policy); any status may also go to ``entered-in-error``; terminal states go nowhere."""

LOOP_CLOSED = "loop-closed"
"""The referral-status code of a closed loop (CodeSystem referral-status)."""


def can_move(old: str | None, new: str) -> bool:
    """Whether a referral Task may move from ``old`` (None: a new Task) to ``new``."""
    if old == new:
        return old is not None
    return (new == "entered-in-error" and old is not None) or new in TRANSITIONS.get(old, frozenset())


def referral_status_extension(policy: Policy, code: str, when: str) -> JSONObject:
    """``ext-referral-status``: the DHCS status ``code`` and the date of the status update."""
    status = coding(REFERRAL_STATUS_SYSTEM, code, policy.display(REFERRAL_STATUS_SYSTEM, code))
    return {
        "url": EXT_REFERRAL_STATUS,
        "extension": [{"url": "status", "valueCoding": status}, {"url": "date", "valueDateTime": when}],
    }


def business_status(policy: Policy, code: str) -> JSONObject:
    """``Task.businessStatus`` mirroring the DHCS status (what a plain FHIR client reads first)."""
    display = policy.display(REFERRAL_STATUS_SYSTEM, code)
    return {"coding": [coding(REFERRAL_STATUS_SYSTEM, code, display)], "text": display or code}


def closure_reason(policy: Policy, code: str, text: str | None = None) -> JSONObject:
    """``ext-loop-closure-reason`` with a code of CodeSystem loop-closure-reason."""
    concept: JSONObject = {"coding": [coding(CLOSURE_REASON_SYSTEM, code, policy.display(CLOSURE_REASON_SYSTEM, code))]}
    if text:
        concept["text"] = text
    return {"url": EXT_CLOSURE_REASON, "valueCodeableConcept": concept}


def recorded_status(task: JSONObject | None) -> tuple[str | None, str | None]:
    """The DHCS status code and date recorded on a Task (``ext-referral-status``)."""
    found = extensions(task, EXT_REFERRAL_STATUS)
    if not found:
        return None, None
    parts = {str(p.get("url")): p for p in found[0].get("extension", ()) if isinstance(p, dict)}
    status = (parts.get("status") or {}).get("valueCoding") or {}
    return status.get("code"), (parts.get("date") or {}).get("valueDateTime")


class ClosedLoopHook:
    """Write hook of ``Task``: the closed-loop rules above, for Tasks claiming calaim-referral-task."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy

    def before(self, ctx: Context, event: WriteEvent) -> StoredResource | None:
        """Check the move and stamp the DHCS status (the resource is edited in place before it is stored)."""
        task = event.resource
        previous = _previous(event)
        if task is None or not (claims(task, PROFILE_TASK) or claims(previous, PROFILE_TASK)):
            return None
        add_profile(task, PROFILE_TASK)  # a provider's PUT may drop meta: the Task stays a referral Task
        old, new = (previous or {}).get("status"), str(task.get("status"))
        if not can_move(old, new):
            text = f"A referral Task cannot move from {old} to {new} (https://hl7.org/fhir/R4/task.html#statemachine)"
            if old is None:
                text = f"A referral Task starts as draft or requested, not {new}"
            raise refuse(Unprocessable if old is None else Conflict, "business-rule", text, "Task.status")
        for element, target in (("focus", "ServiceRequest"), ("for", "Patient")) if previous is not None else ():
            if ref_id(task.get(element), target) != ref_id((previous or {}).get(element), target):
                text = f"Task.{element} of a referral Task cannot change"
                raise refuse(Unprocessable, "business-rule", text, f"Task.{element}")
        self._stamp(ctx, task, previous)
        issues = [i for i in validate_against_profile(task, PROFILE_TASK) if i.severity in ("error", "fatal")]
        if issues:
            raise Unprocessable(message="The referral Task does not conform to calaim-referral-task", issues=issues)
        return None

    def _stamp(self, ctx: Context, task: JSONObject, previous: JSONObject | None) -> None:
        old_code, old_date = recorded_status(previous)
        stated = first_code(task.get("businessStatus"), REFERRAL_STATUS_SYSTEM)
        if previous is not None and stated == first_code(previous.get("businessStatus"), REFERRAL_STATUS_SYSTEM):
            stated = None  # carried over from the version the provider read, not a new statement
        status = str(task.get("status"))
        targets = self.policy.translate(TASK_REFERRAL_STATUS_MAP, status)
        if stated is not None and stated not in targets:
            allowed = ", ".join(targets) or "none"
            text = f"businessStatus {stated} does not agree with Task.status {status} (allowed: {allowed})"
            raise refuse(Unprocessable, "business-rule", text, "Task.businessStatus")
        if stated is not None:
            code: str | None = stated
        elif not targets or (previous is not None and previous.get("status") == status and old_code in targets):
            code = old_code  # entered-in-error, or no move: the recorded status (e.g. Outreach initiated) stays
        else:
            code = targets[0]
        if code is None:
            return
        when = now_instant()
        dated = when if code != old_code or old_date is None else old_date  # the date of the status update
        set_extension(task, referral_status_extension(self.policy, code, dated))
        task["businessStatus"] = business_status(self.policy, code)
        task["lastModified"] = when
        if code == LOOP_CLOSED and code != old_code:
            self._require_closure_reason(ctx, task)

    def _require_closure_reason(self, ctx: Context, task: JSONObject) -> None:
        reason = extension_value(task, EXT_CLOSURE_REASON, "valueCodeableConcept")
        if codes_of(reason, CLOSURE_REASON_SYSTEM):
            return
        if self.policy.closed_loop_exempt(_service(_referral_of(ctx, task))):
            return
        text = (
            "Closing a referral loop needs a closure reason (extension ext-loop-closure-reason with a code of "
            f"{CLOSURE_REASON_SYSTEM}; REFERENCE.md section 5)"
        )
        raise refuse(Unprocessable, "required", text, f"Task.extension('{EXT_CLOSURE_REASON}')")

    def after(self, ctx: Context, event: WriteEvent) -> None:
        """Enqueue the status change and close the referral when the Task ended."""
        task, stored = event.resource, event.stored
        if task is None or stored is None or not claims(task, PROFILE_TASK):
            return
        previous = _previous(event)
        code, _ = recorded_status(task)
        old_code, _ = recorded_status(previous)
        if code is not None and (code != old_code or (previous or {}).get("status") != task.get("status")):
            referral = _referral_of(ctx, task)
            payload = status_event_payload(self.policy, task, _service(referral))
            events.emit(ctx, topic=events.REFERRAL_STATUS, stored=stored, payload=payload, referral=referral)
        if task.get("status") in TERMINAL and (previous or {}).get("status") not in TERMINAL:
            _close_referral(ctx, task)


def status_event_payload(policy: Policy, task: JSONObject, service: str | None) -> dict[str, Any]:
    """The payload of ``calaim.referral-status`` for a Task version whose DHCS status is recorded
    (docs/calaim-workflow.md "Outbox topics"); ``service`` is its referral's CalAIM service."""
    code, when = recorded_status(task)
    reason = extension_value(task, EXT_CLOSURE_REASON, "valueCodeableConcept")
    return {
        "referral": (task.get("focus") or {}).get("reference"),
        "patient": (task.get("for") or {}).get("reference"),
        "owner": (task.get("owner") or {}).get("reference"),
        "service": service,
        "taskStatus": task.get("status"),
        "referralStatus": code,
        "date": when,
        "closureReason": first_code(reason, CLOSURE_REASON_SYSTEM),
        "reportable": not policy.closed_loop_exempt(service)
        and str(when)[:10] >= policy.plan.closed_loop.effective_from.isoformat(),
    }


def _previous(event: WriteEvent) -> JSONObject | None:
    previous = event.previous
    if previous is None or previous.deleted or previous.body is None:
        return None
    return body_of(previous)


def _referral_of(ctx: Context, task: JSONObject) -> JSONObject | None:
    """The Task's referral (its ``focus``) as it is in the write's transaction."""
    referral_id = ref_id(task.get("focus"), "ServiceRequest")
    found = load(conn_of(ctx), "ServiceRequest", referral_id) if referral_id else None
    return found[1] if found is not None else None


def _service(referral: JSONObject | None) -> str | None:
    """The CalAIM service a referral codes (None without a referral)."""
    return first_code(referral.get("code"), SERVICE_SYSTEM) if referral is not None else None


def _close_referral(ctx: Context, task: JSONObject) -> None:
    """The referral ends with its Task: ``completed`` when the Task completed, ``revoked`` otherwise
    (https://hl7.org/fhir/R4/valueset-request-status.html)."""
    referral_id = ref_id(task.get("focus"), "ServiceRequest")
    found = load(conn_of(ctx), "ServiceRequest", referral_id) if referral_id else None
    if found is None or found[1].get("status") not in OPEN_REQUEST_STATUSES:
        return
    referral = found[1]
    referral["status"] = "completed" if task.get("status") == "completed" else "revoked"
    write(ctx, "PUT", f"ServiceRequest/{referral['id']}", referral)
