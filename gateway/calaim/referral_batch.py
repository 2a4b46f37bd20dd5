"""Batched referral intake: the rules of the referral hook (``gateway.calaim.referrals``) and of the
closed-loop hook (``gateway.calaim.closed_loop``) applied to many new referrals of one write transaction
with set-based work (issue 6: the first import of an HN authorization file creates one referral per row;
REFERENCE.md §2, §5; docs/calaim-workflow.md).

For each new open CalAIM referral, exactly what ``Context.store_create`` of the referral would do through
the hooks, in the same order:

- a duplicate (an open referral for the same member and service, stored or earlier in the batch) answers
  the create (nothing written), and a stale uniqueness key is released as the hook releases it;
- otherwise the referral is routed (``gateway.calaim.routing``: the referral's POFs, else the member's;
  the member's health network from its first active Coverage; a named performer kept when contracted),
  written, holds the ``conditional_key`` of its member-service query, and its Task (calaim-referral-task:
  requested, DHCS status Pending with its date, owner the routed provider, requester the referral's) is
  created with ``calaim.referral-status`` enqueued (as ``gateway.calaim.events`` writes it: for a county
  referral only; ``calaim.referral`` has no consumer);
- a decision's move of the new Task (``NewReferral.move``: a non-terminal status such as ``accepted``) is
  written as the Task's version 2, stamped with its DHCS status and date, with its
  ``calaim.referral-status`` event: the history and the events a Task created then moved through the
  closed-loop hook has.

The set-based part: one query each for the members' open referrals, their Coverages, their Patients
(Populations of Focus) and the uniqueness keys already held, for the whole batch; routing in memory; the
resources through ``WriteTransaction.create`` (buffered, flushed with executemany); the keys in one
statement; the events of the batch in one executemany (``outbox.enqueue_many``), in the hooks' order.
A routing refusal is the item's result (a ``FhirError``, as the hook would raise it), so the other items
still apply. The bodies built here are not validated per item: tests/calaim validate them
against R4 and the profiles (the per-row path validates the Task on every write).

Only when the ServiceRequest and Task hooks are the CalAIM ones (``batchable``): any other hook registered
on those types would be bypassed, so callers then write one referral at a time through the hooks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from gateway.calaim import events
from gateway.calaim.closed_loop import TERMINAL, ClosedLoopHook, business_status, can_move, referral_status_extension
from gateway.calaim.closed_loop import status_event_payload as _status_payload
from gateway.calaim.config import SERVICE_SYSTEM
from gateway.calaim.county import County, is_county_referral
from gateway.calaim.lookups import Found, by_id, by_reference, held_keys
from gateway.calaim.members import pofs_of
from gateway.calaim.policy import TASK_REFERRAL_STATUS_MAP, Policy
from gateway.calaim.referrals import (
    ReferralHook,
    _open_referral,
    is_referral,
    new_task,
    open_key,
    referral_event_payload,
    referral_member,
    referral_service,
)
from gateway.calaim.resources import (
    EXT_HEALTH_NETWORK,
    OPEN_REQUEST_STATUSES,
    body_of,
    codes_of,
    conn_of,
    extensions,
    now_instant,
    ref_id,
    reference,
    refuse,
    set_extension,
)
from gateway.calaim.routing import route
from gateway.errors import FhirError, InternalError, Unprocessable
from gateway.fhir.conditional import condition_key
from gateway.fhir.context import Context
from gateway.store import driver
from gateway.store.outbox import NewEvent
from gateway.store.repository import StoredResource, WriteConflict, WriteTransaction
from gateway.types import JSONObject


@dataclass(frozen=True, slots=True)
class NewReferral:
    """A referral to create (an open CalAIM ServiceRequest, not yet routed) and the move of its new Task."""

    body: JSONObject
    move: str | None = None
    """The Task status a decision taken with the referral moves its new Task to (non-terminal; None: none)."""
    reason: str | None = None
    """``Task.statusReason`` text of that move."""


@dataclass(frozen=True, slots=True)
class Taken:
    """The referral that answers a ``NewReferral``: the one created, or the open one already there."""

    referral: StoredResource
    body: JSONObject
    """The referral as stored."""
    created: bool
    """False: an open referral for the member and service answered (nothing written, no Task move)."""
    task: StoredResource | None = None
    """The new Task's current version (None when nothing was created)."""


Result = Taken | FhirError


@dataclass(frozen=True, slots=True)
class Member:
    """What routing reads about a member: the Populations of Focus its Patient names and the health network
    of its first active Coverage (``gateway.calaim.members``)."""

    pofs: list[str]
    health_network: str | None


def member_of(patient: JSONObject | None, coverages: Sequence[JSONObject]) -> Member:
    """``Member`` from the member's Patient and Coverages (oldest first), as the referral hook reads them."""
    return Member(pofs_of(patient), health_network_of(coverages))


def health_network_of(coverages: Sequence[JSONObject]) -> str | None:
    """The health network of the first active Coverage (``gateway.calaim.members.membership``)."""
    for coverage in coverages:
        if coverage.get("status") == "active":
            values = [e.get("valueReference") for e in extensions(coverage, EXT_HEALTH_NETWORK)]
            networks = [ref_id(v, "Organization") for v in values]
            return next((n for n in networks if n), None)
    return None


def batchable(ctx: Context) -> bool:
    """Whether the write hooks of ServiceRequest and Task are exactly the CalAIM ones (module docstring)."""
    referral_hooks, task_hooks = ctx.hooks.for_type("ServiceRequest"), ctx.hooks.for_type("Task")
    return (
        len(referral_hooks) == 1
        and isinstance(referral_hooks[0], ReferralHook)
        and len(task_hooks) == 1
        and isinstance(task_hooks[0], ClosedLoopHook)
    )


@dataclass(slots=True)
class _Item:
    order: NewReferral
    patient: str
    service: str
    key: str
    result: Result | None = None


def take_in(
    ctx: Context,
    policy: Policy,
    referrals: Sequence[NewReferral],
    *,
    members: Mapping[str, Member] | None = None,
    new_members: AbstractSet[str] = frozenset(),
) -> list[Result]:
    """Create ``referrals`` in ``ctx``'s write transaction (module docstring): one result per referral, in
    order. ``members``: what the caller already read in this transaction about some members (by Patient
    id); the others are looked up. ``new_members``: Patient ids the caller created in this transaction with ids
    it assigned (a new member of an HL7 REF^I12): no referral of theirs, nor a key naming them, can be
    stored, so their open referrals and held keys are not looked up (the batch's own duplicates are still
    answered). Raises ``WriteConflict`` when a concurrent writer took a uniqueness key first (the caller's
    unit of work reruns and then finds that referral)."""
    tx = ctx.tx
    if tx is None:
        raise InternalError("the referral intake runs inside a write transaction")
    conn = conn_of(ctx)
    items: list[_Item] = []
    results: list[Result | None] = []
    for order in referrals:
        body = order.body
        if not is_referral(body) or body.get("status") not in OPEN_REQUEST_STATUSES:
            raise InternalError("the batched intake takes new open CalAIM referrals only")
        if order.move is not None and (order.move in TERMINAL or not can_move("requested", order.move)):
            raise InternalError(f"the batched intake does not move a new Task to {order.move}")
        try:
            patient, service = referral_member(body), referral_service(policy, body)
        except FhirError as exc:
            results.append(exc)
            continue
        item = _Item(order, patient, service, condition_key(open_key(patient, service)))
        items.append(item)
        results.append(None)
    _route_and_create(ctx, tx, conn, policy, items, dict(members or {}), new_members)
    created = [item for item in items if isinstance(item.result, Taken) and item.result.created]
    _hold_keys(tx, conn, created)
    rows: list[NewEvent] = []  # the events, in the order the hooks would enqueue them: one executemany
    county = County.of(ctx.settings)
    for item in created:
        assert isinstance(item.result, Taken)
        item.result = _with_task(tx, policy, item, item.result, rows, county)
    events.emit_many(ctx, rows)
    done = iter(items)
    return [result if result is not None else _result_of(next(done)) for result in results]


def _result_of(item: _Item) -> Result:
    if item.result is None:
        raise InternalError("a referral of the batch has no result")
    return item.result


def _requested(referral: JSONObject) -> str | None:
    """The provider the referrer named (``performer[0]``), 422 when it is not an Organization reference."""
    performers = referral.get("performer") or []
    requested = ref_id(performers[0], "Organization") if performers else None
    if performers and requested is None:
        text = "A referral's performer is the provider Organization it is referred to"
        raise refuse(Unprocessable, "business-rule", text, "ServiceRequest.performer[0]")
    return requested


def _route_and_create(
    ctx: Context,
    tx: WriteTransaction,
    conn: Connection,
    policy: Policy,
    items: list[_Item],
    members: dict[str, Member],
    new_members: AbstractSet[str] = frozenset(),
) -> None:
    """Answer duplicates, route and write the new referrals (``ReferralHook.before`` + the write); the
    ``new_members`` created in this transaction have nothing stored to look up (``take_in``)."""
    patients = {item.patient for item in items}
    open_now = _open_referrals(conn, patients - new_members)
    unknown = patients - members.keys()
    if unknown:
        coverages = by_reference(conn, "Coverage", "beneficiary", "Patient", unknown)
        stored_patients = by_id(conn, "Patient", unknown)
        for patient in unknown:
            known = stored_patients.get(patient)
            members[patient] = member_of(known.body if known else None, [c.body for c in coverages.get(patient, ())])
    held = _held_keys(conn, [item.key for item in items if item.patient not in new_members])
    batch: dict[str, Taken] = {}
    for item in items:
        body = item.order.body
        earlier = batch.get(item.key)
        if earlier is not None:
            item.result = Taken(earlier.referral, earlier.body, created=False)
            continue
        found = open_now.get((item.patient, item.service))
        if found is None and item.key in held:  # committed since the lookup, or a stale key: as the hook does
            existing = _open_referral(ctx, conn, open_key(item.patient, item.service))
            if existing is not None:
                item.result = Taken(existing, body_of(existing), created=False)
                continue
        if found is not None:
            item.result = Taken(found.stored, found.body, created=False)
            continue
        member = members[item.patient]
        try:
            provider = route(
                policy,
                service=item.service,
                pofs=pofs_of(body) or member.pofs,
                health_network=member.health_network,
                requested=_requested(body),
            )
        except FhirError as exc:
            item.result = exc
            continue
        resource = dict(body)
        resource["performer"] = [reference("Organization", provider, policy.organization_name(provider))]
        stored = tx.create(resource, res_id=None, method="POST")
        item.result = batch[item.key] = Taken(stored, resource, created=True)


def _open_referrals(conn: Connection, patients: set[str]) -> dict[tuple[str, str], Found]:
    """The oldest open referral per (member, service) of ``patients`` (the search ``open_key`` names)."""
    out: dict[tuple[str, str], Found] = {}
    for patient, found in by_reference(conn, "ServiceRequest", "subject", "Patient", patients).items():
        for referral in found:
            if referral.body.get("status") not in OPEN_REQUEST_STATUSES:
                continue
            for service in codes_of(referral.body.get("code"), SERVICE_SYSTEM):
                out.setdefault((patient, service), referral)
    return out


def _held_keys(conn: Connection, keys: list[str]) -> set[str]:
    """The uniqueness keys among ``keys`` some ServiceRequest already holds (driver SQL compiled once:
    ``gateway.calaim.lookups``)."""
    return held_keys(conn, "ServiceRequest", keys)


_PG_HOLD_KEYS = (
    "INSERT INTO conditional_key (res_type, key_hash, rid) "
    "SELECT 'ServiceRequest', e.key_hash, e.rid FROM unnest(%b::varchar[], %b::bigint[]) AS e(key_hash, rid)"
)
"""``_hold_keys`` on PostgreSQL: the keys and row ids as two arrays, one statement."""
_SQLITE_HOLD_KEYS = "INSERT INTO conditional_key (res_type, key_hash, rid) VALUES (?, ?, ?)"
"""``_hold_keys`` on SQLite (driver SQL, an executemany)."""


def _hold_keys(tx: WriteTransaction, conn: Connection, created: list[_Item]) -> None:
    """Every new open referral holds its member-service key (``referrals.claim``), in one statement."""
    if not created:
        return
    tx.flush()  # the keys reference the new rows
    rows = []
    for item in created:
        assert isinstance(item.result, Taken)
        rows.append({"res_type": "ServiceRequest", "key_hash": item.key, "rid": item.result.referral.rid})
    try:
        if conn.dialect.name == "postgresql":  # one statement (an executemany: one per key, ~0.1 ms each)
            with conn.begin_nested():  # a refused INSERT aborts a PostgreSQL transaction: keep it usable
                driver.execute(conn, _PG_HOLD_KEYS, ([r["key_hash"] for r in rows], [r["rid"] for r in rows]))
        else:  # SQLite undoes a refused statement only, and every caller rolls its unit of work back on
            # WriteConflict; a savepoint would copy each page the keys change to its sub-journal (~0.1 ms)
            driver.executemany(conn, _SQLITE_HOLD_KEYS, [(r["res_type"], r["key_hash"], r["rid"]) for r in rows])
    except IntegrityError:
        raise WriteConflict("a referral of the batch raced with another create") from None


def _with_task(
    tx: WriteTransaction, policy: Policy, item: _Item, taken: Taken, rows: list[NewEvent], county: County
) -> Taken:
    """Create the referral's Task (and its decided move), with their events added to ``rows``
    (``ReferralHook._take_in`` and the closed-loop hook's stamps and events: the status events only for a
    county referral, ``gateway.calaim.events``)."""
    referral, stored = taken.body, taken.referral
    provider = str(ref_id(referral["performer"][0], "Organization"))
    task = new_task(policy, referral_id=stored.res_id, patient_id=item.patient, provider=provider)
    if isinstance(referral.get("requester"), dict):
        task["requester"] = referral["requester"]
    versions: list[tuple[JSONObject, str]] = [(dict(task), "POST")]
    move = item.order.move
    if move is not None and move != task["status"]:
        versions.append((_moved(policy, task, move, item.order.reason), "PUT"))
    written = tx.create_history(versions)  # version 1 as created, version 2 as moved: as the hooks write them
    is_county = is_county_referral(referral, county)
    statuses = bool(events.consumers(events.REFERRAL_STATUS, county=is_county))  # else no payload to build
    for n, ((body, _), version) in enumerate(zip(versions, written, strict=True)):
        if statuses:
            payload = _status_payload(policy, body, item.service)
            rows += events.events_of(events.REFERRAL_STATUS, stored=version, payload=payload, county=is_county)
        if n == 0 and events.wanted(events.REFERRAL):  # after the first status event, as the hooks order them
            payload = referral_event_payload(referral, stored.res_id, version.res_id, service=item.service)
            rows += events.events_of(events.REFERRAL, stored=stored, payload=payload, county=is_county)
    return Taken(stored, referral, created=True, task=written[-1])


def _moved(policy: Policy, task: JSONObject, status: str, reason: str | None) -> JSONObject:
    """The Task moved to ``status`` as the decision moves it and the closed-loop hook stamps the move: the
    DHCS status of ``status`` (ConceptMap task-status-referral-status, first target) dated now, mirrored
    in ``businessStatus``."""
    code = policy.translate(TASK_REFERRAL_STATUS_MAP, status)[0]
    when = now_instant()
    moved = dict(task)
    moved["status"] = status
    if reason:
        moved["statusReason"] = {"text": reason}
    set_extension(moved, referral_status_extension(policy, code, when))
    moved["businessStatus"] = business_status(policy, code)
    moved["lastModified"] = when
    return moved
