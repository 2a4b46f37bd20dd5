"""Group commit of REF^I12 messages with set-based writes (issue 7; docs/hl7v2.md "Throughput").

The per-message path (``adapters.hl7v2.processor``: ``apply_bundle`` → one FHIR interaction per entry)
is the reference. For the common case, a referral of a member the store does not know yet, this module
writes what that path writes, for all such messages of a group at once:

- the Patient (with the uniqueness key of its ``If-None-Exist``), its Coverage and Conditions, created
  with ids assigned here so that the references between them are set before any write
  (``WriteTransaction.create``, buffered, flushed with executemany);
- the referrals through the batched referral intake (``gateway.calaim.referral_batch.take_in``: routing,
  duplicates and the member-service key as one query each, the Task and the two outbox events as the
  hooks write them), then the key of each referral's ``If-None-Exist`` (the county referral id);
- the message-log rows (status AA with the ACK) in one executemany.

``plan`` decides, without the database, which messages qualify and builds their resources; every resource
is validated as the interaction would (the R4 walk and profile check here, the model pass in the parse
worker: ``Prepared.model_ok``), and the referral's routing is decided as the hook would decide it. A
message whose resources or routing would be refused does not qualify: the per-message path answers it
(the same AE as before). ``screen`` then drops, with one query each for the whole group, the messages whose
member (CIN or MRN), referral id, uniqueness keys or message key the store already has, and those that
share one of them with an earlier message of the group: they take the per-message path, in their place in
the group, so every message still sees what the earlier ones wrote.

``write`` writes one run of qualifying messages inside the caller's savepoint: anything unexpected (a
uniqueness race, a refusal the plan did not foresee) raises, the caller rolls the savepoint back and
applies the run message by message (so a failing message never takes the others of its group down).
Only when the write hooks of ServiceRequest and Task are the CalAIM ones (``referral_batch.batchable``)
and Patient, Coverage and Condition have none (``enabled``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import Connection

from adapters.hl7v2 import lookups, messagelog
from adapters.hl7v2.prepare import Prepared
from gateway.calaim.members import pofs_of
from gateway.calaim.policy import Policy
from gateway.calaim.referral_batch import Member, NewReferral, Taken, batchable, member_of, take_in
from gateway.calaim.referrals import is_referral, referral_member, referral_service
from gateway.calaim.resources import OPEN_REQUEST_STATUSES, ref_id
from gateway.calaim.routing import route
from gateway.errors import FhirError
from gateway.fhir.bundles import reference_holders
from gateway.fhir.conditional import condition_key, parse_condition
from gateway.fhir.context import Context
from gateway.fhir.validation import ensure_valid
from gateway.store import driver
from gateway.store.repository import WriteTransaction, new_id
from gateway.store.schema import conditional_key
from gateway.types import JSONObject
from mappings.hl7v2.er7 import Header
from mappings.hl7v2.segments import match_condition

UNHOOKED = ("Patient", "Coverage", "Condition")
"""Types this module creates without write hooks: it applies only while none is registered for them."""

_UNSAFE = (",", "|", "\\", "$")
"""Characters that make a token value of a condition read differently as a search (OR, system, escape)."""


class Fallback(Exception):
    """A run cannot be written as a group: the caller rolls its savepoint back and applies it per message."""


@dataclass(slots=True)
class Plan:
    """One qualifying message: its resources (references resolved, validated) and what it must not share."""

    prepared: Prepared
    creates: list[tuple[JSONObject, str]]
    """Patient, Coverage and Conditions to create, in entry order, with their assigned ids."""
    keys: list[tuple[str, str, int]]
    """(res_type, key_hash, index in ``creates``): the uniqueness keys of their conditional creates."""
    referral: JSONObject
    referral_key: str | None
    resources: list[str]
    """``Type/id`` per entry, as the per-message path logs them (the referral's last, filled in by ``write``)."""
    member: tuple[str, Member]
    identifiers: list[tuple[str, str]]
    """The member's (system, value) pairs of the Patient's ``If-None-Exist``."""
    referral_ids: list[tuple[str, str]] = field(default_factory=list)


def enabled(ctx: Context) -> bool:
    """Whether the hooks are the ones this module reproduces (module docstring)."""
    return batchable(ctx) and not any(ctx.hooks.for_type(t) for t in UNHOOKED)


def plan(prepared: Prepared, policy: Policy) -> Plan | None:
    """The plan of a qualifying message, None when it takes the per-message path. No database."""
    mapped, header = prepared.mapped, prepared.header
    if prepared.error is not None or mapped is None or header is None or prepared.key is None:
        return None
    if header.message_type != "REF" or mapped.transitional_care:
        return None
    entries: list[Any] = mapped.bundle.get("entry") or []
    if not entries or len(prepared.model_ok) != len(entries) or not all(prepared.model_ok):
        return None
    try:
        return _plan(prepared, orjson.loads(orjson.dumps(entries)), policy)  # a copy: bodies are edited
    except (FhirError, _NotPlanned):
        return None


class _NotPlanned(Exception):
    """The message is not of the shape this module writes."""


def _plan(prepared: Prepared, entries: list[Any], policy: Policy) -> Plan:
    first, last = entries[0], entries[-1]
    if _target(first) != ("POST", "Patient") or _target(last) != ("POST", "ServiceRequest"):
        raise _NotPlanned
    resolved: dict[str, str] = {}
    creates: list[tuple[JSONObject, str]] = []
    keys: list[tuple[str, str, int]] = []
    resources: list[str] = []
    patient = _body(first, resolved)
    identifiers = [(str(i.get("system")), str(i.get("value"))) for i in patient.get("identifier") or ()]
    condition = first["request"].get("ifNoneExist")
    if not identifiers or condition != match_condition(patient["identifier"]) or _unsafe(identifiers):
        raise _NotPlanned
    patient_id = new_id()
    patient_url, patient_ref = str(first.get("fullUrl") or ""), f"Patient/{patient_id}"
    resolved[patient_url] = patient_ref
    creates.append((patient, patient_id))
    keys.append(("Patient", condition_key(parse_condition(condition)), 0))
    resources.append(patient_ref)
    coverages: list[JSONObject] = []
    codes: dict[tuple[str, str], str] = {}  # (system, code) -> Condition/id created by this message
    conditions = False  # a Condition was created by this message: later If-None-Exist are searched
    for entry in entries[1:-1]:
        kind = _target(entry)
        url = str(entry.get("fullUrl") or "")
        request = entry["request"]
        body = _body(entry, resolved)
        res_id = new_id()
        if kind == ("POST", "Coverage") and not coverages:
            if request.get("ifNoneExist") != f"beneficiary={patient_url}&status=active":
                raise _NotPlanned
            coverages.append(body)
        elif kind == ("POST", "Condition"):
            coding = _only_coding(body)  # one coding: what the search ``code=`` would match is known
            text = request.get("ifNoneExist")
            if coding is None or (text is not None and text != f"subject={patient_url}&code={coding[0]}|{coding[1]}"):
                raise _NotPlanned
            if text is not None and coding in codes:  # the search finds this message's own Condition
                resolved[url] = codes[coding]
                resources.append(codes[coding])
                continue
            if text is not None and conditions:  # not a fresh type any more: a full conditional create
                condition_text = f"subject={patient_ref}&code={coding[0]}|{coding[1]}"
                keys.append(("Condition", condition_key(parse_condition(condition_text)), len(creates)))
            codes.setdefault(coding, f"Condition/{res_id}")
            conditions = True
        else:
            raise _NotPlanned
        resolved[url] = f"{body['resourceType']}/{res_id}"
        creates.append((body, res_id))
        resources.append(resolved[url])
    referral = _body(last, resolved)
    if not is_referral(referral) or referral.get("status") not in OPEN_REQUEST_STATUSES:
        raise _NotPlanned
    referral_key, referral_ids = None, []
    text = last["request"].get("ifNoneExist")
    if text is not None:
        params = parse_condition(text)
        if len(params) != 1 or params[0][0] != "identifier" or "|" not in params[0][1]:
            raise _NotPlanned
        system, _, value = params[0][1].partition("|")
        referral_ids = [(system, value)]
        if _unsafe(referral_ids):
            raise _NotPlanned
        referral_key = condition_key(params)
    member = member_of(patient, coverages)
    _route(policy, referral, member)
    return Plan(
        prepared=prepared,
        creates=creates,
        keys=keys,
        referral=referral,
        referral_key=referral_key,
        resources=resources,
        member=(patient_id, member),
        identifiers=identifiers,
        referral_ids=referral_ids,
    )


def _target(entry: Any) -> tuple[str, str]:
    request = entry.get("request") if isinstance(entry, dict) else None
    if not isinstance(request, dict) or not isinstance(entry.get("resource"), dict):
        raise _NotPlanned
    return str(request.get("method")), str(request.get("url"))


def _body(entry: Any, resolved: dict[str, str]) -> JSONObject:
    """The entry's resource as its interaction would store it: references resolved, no id, validated
    (the model pass was the parse worker's)."""
    resource: JSONObject = entry["resource"]
    if resource.get("resourceType") != entry["request"]["url"]:
        raise _NotPlanned
    _rewrite(resource, resolved)
    resource.pop("id", None)
    ensure_valid(resource, resource_type=str(resource["resourceType"]), with_model=False)
    return resource


def _rewrite(node: Any, resolved: dict[str, str]) -> None:
    """Replace references to resolved full URLs (in place); an unresolved ``urn:uuid`` is not planned."""
    for holder in reference_holders(node):
        ref = holder["reference"]
        if ref.startswith("urn:uuid:"):
            if ref not in resolved:
                raise _NotPlanned
            holder["reference"] = resolved[ref]


def _only_coding(condition: JSONObject) -> tuple[str, str] | None:
    """(system, code) of a Condition coded once with both, else None."""
    codings = (condition.get("code") or {}).get("coding") or []
    if len(codings) != 1:
        return None
    system, code = codings[0].get("system"), codings[0].get("code")
    if not isinstance(system, str) or not isinstance(code, str) or not system or not code:
        return None
    return None if _unsafe([(system, code)]) else (system, code)


def _unsafe(pairs: Iterable[tuple[str, str]]) -> bool:
    return any(any(ch in part for ch in _UNSAFE) or not part for pair in pairs for part in pair)


def _route(policy: Policy, referral: JSONObject, member: Member) -> None:
    """The referral hook's refusals (``ReferralHook.before``), raised here so that a refused message takes
    the per-message path: no service, a performer that is not an Organization, no provider to route to."""
    referral_member(referral)
    service = referral_service(policy, referral)
    performers = referral.get("performer") or []
    requested = ref_id(performers[0], "Organization") if performers else None
    if performers and requested is None:
        raise _NotPlanned
    route(
        policy,
        service=service,
        pofs=pofs_of(referral) or member.pofs,
        health_network=member.health_network,
        requested=requested,
    )


def plans_for(batch: list[Prepared], policy: Policy, tx: WriteTransaction) -> list[Plan | None]:
    """``plan`` of every message, then ``screen``: one entry per message (None: the per-message path)."""
    return screen(batch, [plan(prepared, policy) for prepared in batch], tx)


def screen(batch: list[Prepared], plans: list[Plan | None], tx: WriteTransaction) -> list[Plan | None]:
    """Drop the plans whose keys the store or an earlier message of the group has (module docstring)."""
    seen: set[str] = set()
    for index, (prepared, found) in enumerate(zip(batch, plans, strict=True)):
        marks = _marks(prepared, found)
        if found is not None and marks & seen:
            plans[index] = None
        seen |= marks
    candidates = [p for p in plans if p is not None]
    if not candidates:
        return plans
    conn = tx.conn
    logged = lookups.logged(conn, messagelog.IN, [p.prepared.key for p in candidates if p.prepared.key])
    known = {("Patient", *pair) for pair in lookups.identifiers(conn, "Patient", _all(candidates, "identifiers"))}
    referrals = lookups.identifiers(conn, "ServiceRequest", _all(candidates, "referral_ids"))
    known |= {("ServiceRequest", *pair) for pair in referrals}
    held = lookups.held_keys(conn, [key for p in candidates for key in _key_hashes(p)])
    for index, found in enumerate(plans):
        if found is None:
            continue
        pairs = {("Patient", *pair) for pair in found.identifiers}
        pairs |= {("ServiceRequest", *pair) for pair in found.referral_ids}
        if found.prepared.key in logged or pairs & known or held.intersection(_key_hashes(found)):
            plans[index] = None
    return plans


def _marks(prepared: Prepared, found: Plan | None) -> set[str]:
    """What two messages of a group must not share to be written as a group: the message key, the member's
    identifiers and the county referral ids (of every entry, for messages that take the per-message path)."""
    marks = {f"msg:{prepared.key[0]}|{prepared.key[1]}"} if prepared.key else set()
    if found is not None:
        marks |= {f"id:{s}|{v}" for s, v in found.identifiers}
        marks |= {f"ref:{s}|{v}" for s, v in found.referral_ids}
        return marks
    mapped = prepared.mapped
    for entry in (mapped.bundle.get("entry") or []) if mapped is not None else []:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict):
            continue
        prefix = "id" if resource.get("resourceType") == "Patient" else "ref"
        for identifier in resource.get("identifier") or ():
            if isinstance(identifier, dict):
                marks.add(f"{prefix}:{identifier.get('system')}|{identifier.get('value')}")
    return marks


def _key_hashes(found: Plan) -> list[tuple[str, str]]:
    """(res_type, key_hash) of the keys a stored resource could hold (those of the member's Patient and of
    the referral id; a Condition's names the new Patient)."""
    hashes = [(res_type, key) for res_type, key, _ in found.keys if res_type == "Patient"]
    return [*hashes, ("ServiceRequest", found.referral_key)] if found.referral_key else hashes


def _all(plans: list[Plan], name: str) -> list[tuple[str, str]]:
    return [pair for found in plans for pair in getattr(found, name)]


def write(
    ctx: Context, policy: Policy, tx: WriteTransaction, run: list[Plan], ack: Callable[[Header], bytes]
) -> list[tuple[bytes, list[str]]]:
    """Write ``run`` in the caller's transaction (inside its savepoint); the AA and the resources of each
    message, in order. ``Fallback`` (or a database error) when the run must be applied per message."""
    inner = WriteTransaction(tx.conn, indexer=ctx.repo.indexer, lock_rows=not ctx.repo.sqlite)
    inner_ctx = ctx.in_transaction(inner)
    rids: list[list[int]] = []
    for item in run:
        rids.append([inner.create(body, res_id=res_id, method="POST").rid for body, res_id in item.creates])
    inner.flush()
    members = dict(item.member for item in run)
    orders = [NewReferral(item.referral) for item in run]
    taken = take_in(inner_ctx, policy, orders, members=members)
    key_rows: list[dict[str, Any]] = []
    out: list[tuple[bytes, list[str]]] = []
    log_rows: list[dict[str, Any]] = []
    for item, result, created in zip(run, taken, rids, strict=True):
        if not isinstance(result, Taken) or not result.created:
            raise Fallback("the referral intake did not create a referral the plan expected")
        referral = result.referral
        key_rows += [{"res_type": t, "key_hash": key, "rid": created[i]} for t, key, i in item.keys]
        if item.referral_key is not None:
            key_rows.append({"res_type": "ServiceRequest", "key_hash": item.referral_key, "rid": referral.rid})
        resources = [*item.resources, f"ServiceRequest/{referral.res_id}"]
        header = item.prepared.header
        assert header is not None
        answer = ack(header)
        out.append((answer, resources))
        log_rows.append(
            {
                "direction": messagelog.IN,
                "sender": header.sender,
                "control_id": header.control_id,
                "message_type": item.prepared.message_type,
                "charset": header.charset,
                "status": "AA",
                "ack": answer,
                "error": None,
                "resources": resources,
                "raw": item.prepared.raw,
            }
        )
    inner.flush()
    _hold(tx.conn, key_rows)
    messagelog.insert_rows(tx.conn, log_rows)
    return out


_HOLD: dict[str, tuple[str, tuple[str, ...]]] = {}


def _hold(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert the uniqueness keys of the run in one executemany (IntegrityError: a concurrent writer holds
    one; the run's savepoint is rolled back), with driver SQL compiled once per dialect."""
    if not rows:
        return
    found = _HOLD.get(conn.dialect.name)
    if found is None:
        statement = driver.insert_statement(conditional_key, ("res_type", "key_hash", "rid"))
        found = _HOLD[conn.dialect.name] = driver.compile_positional(conn, statement)
    sql, order = found
    driver.executemany(conn, sql, [tuple(row[name] for name in order) for row in rows])


__all__ = ["Fallback", "Plan", "enabled", "plan", "plans_for", "screen", "write"]
