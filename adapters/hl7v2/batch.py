"""Group commit of REF^I12 messages with set-based writes (issue 7; docs/hl7v2.md "Throughput").

The per-message path (``adapters.hl7v2.processor``: ``apply_bundle`` → one FHIR interaction per entry)
is the reference. For the common cases, a referral of a member the store does not know yet and a
re-referral of a stored member, this module writes what that path writes, for all such messages of a
group at once:

- the Patient (with the uniqueness key of its ``If-None-Exist``), its Coverage and Conditions, created
  with ids assigned here so that the references between them are set before any write
  (``WriteTransaction.create``, buffered, flushed with executemany); for a stored member, the identifiers
  its Patient lacks (``update_many``) and the Coverage and Conditions its conditional creates do not
  match (``adapters.hl7v2.plan``);
- the referrals through the batched referral intake (``gateway.calaim.referral_batch.take_in``: routing,
  duplicates and the member-service key as one query each, the Task and the two outbox events as the
  hooks write them), then the key of each referral's ``If-None-Exist`` (the county referral id);
- the message-log rows (status AA with the ACK) in one executemany.

``plan`` decides, without the database, which messages qualify and builds their resources; every resource
is validated as the interaction would (the R4 walk and profile check here, the model pass in the parse
worker: ``Prepared.model_ok``), and the referral's routing is decided as the hook would decide it. A
message whose resources or routing would be refused does not qualify: the per-message path answers it
(the same AE as before). ``screen`` then drops, with one query each for the whole group, the messages whose
referral id, uniqueness keys or message key the store already has, and those that share one of them or
the member (CIN or MRN) with an earlier message of the group: they take the per-message path, in their
place in the group, so every message still sees what the earlier ones wrote. A message whose member the
store has is planned again as a re-referral (``rematch``: the member, its Coverages and Conditions and
the keys of its conditional creates, one query each for the group).

``write`` writes one run of qualifying messages inside the caller's savepoint: anything unexpected (a
uniqueness race, a refusal the plan did not foresee) raises, the caller rolls the savepoint back and
applies the run message by message (so a failing message never takes the others of its group down).
Only when the write hooks of ServiceRequest and Task are the CalAIM ones (``referral_batch.batchable``)
and Patient, Coverage and Condition have none (``enabled``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import Connection

from adapters.hl7v2 import lookups, messagelog
from adapters.hl7v2.plan import Plan, Stored, plan, replan
from adapters.hl7v2.prepare import Prepared
from gateway.calaim import lookups as stored_lookups
from gateway.calaim.lookups import Found
from gateway.calaim.policy import Policy
from gateway.calaim.referral_batch import NewReferral, Taken, batchable, take_in
from gateway.fhir.context import Context
from gateway.store import driver
from gateway.store.repository import WriteTransaction
from gateway.store.schema import conditional_key
from mappings.hl7v2.er7 import Header

UNHOOKED = ("Patient", "Coverage", "Condition")
"""Types this module creates without write hooks: it applies only while none is registered for them."""


class Fallback(Exception):
    """A run cannot be written as a group: the caller rolls its savepoint back and applies it per message."""


def enabled(ctx: Context) -> bool:
    """Whether the hooks are the ones this module reproduces (module docstring)."""
    return batchable(ctx) and not any(ctx.hooks.for_type(t) for t in UNHOOKED)


def plans_for(batch: list[Prepared], policy: Policy, tx: WriteTransaction) -> list[Plan | None]:
    """``plan`` of every message (the one step 1 decided, when it did: ``Prepared.planned``), then ``screen``:
    one entry per message (None: the per-message path)."""
    plans = [prepared.plan if prepared.planned else plan(prepared, policy) for prepared in batch]
    return screen(batch, plans, tx, policy=policy)


def screen(
    batch: list[Prepared], plans: list[Plan | None], tx: WriteTransaction, *, policy: Policy | None = None
) -> list[Plan | None]:
    """Drop the plans whose keys the store or an earlier message of the group has (module docstring); with
    ``policy``, the messages whose member is stored are planned again as re-referrals (``rematch``)."""
    seen: set[str] = set()
    for index, (prepared, found) in enumerate(zip(batch, plans, strict=True)):
        marks = _marks(prepared, found)
        if found is not None and marks & seen:
            plans[index] = None
        seen |= marks
    candidates = {index: p for index, p in enumerate(plans) if p is not None}
    if not candidates:
        return plans
    conn = tx.conn
    # One query for the group (``lookups.screened``): the keys of a new member's Patient are asked whether or
    # not the store has the member (a stored member's are then ignored: it is matched by search instead).
    keys = [key for p in candidates.values() for key in _key_hashes(p, new_member=True)]
    store = lookups.screened(
        conn,
        messagelog.IN,
        [p.prepared.key for p in candidates.values() if p.prepared.key],
        _all(candidates.values(), "identifiers"),
        _all(candidates.values(), "referral_ids"),
        keys,
    )
    logged, members, referrals, held = store.logged, store.members, store.referrals, store.held
    stored = {index for index, p in candidates.items() if members.intersection(p.identifiers)}
    again: dict[int, Plan] = {}
    for index, found in candidates.items():
        plans[index] = None
        if found.prepared.key in logged or referrals.intersection(found.referral_ids):
            continue
        if held.intersection(_key_hashes(found, new_member=index not in stored)):
            continue
        if index not in stored:
            plans[index] = found
        elif policy is not None:
            again[index] = found
    if again:
        assert policy is not None
        rematch(conn, plans, again, policy)
    return plans


def rematch(conn: Connection, plans: list[Plan | None], found: dict[int, Plan], policy: Policy) -> None:
    """Plan the messages ``found`` (by index; their members' identifiers are stored) again as re-referrals
    (``adapters.hl7v2.plan.replan``) into ``plans``: the member matched as its ``If-None-Exist`` search
    matches it (one current Patient with any of the identifiers; none or several: the per-message path),
    with its Coverages and Conditions, one query each for the group; one re-referral per stored member
    and group (a later one takes the per-message path); a plan whose Coverage or Condition key is held
    (a stale key: the per-message path releases it) is dropped."""
    by_system: dict[str, set[str]] = {}
    for item in found.values():
        for system, value in item.identifiers:
            by_system.setdefault(system, set()).add(value)
    patients: dict[tuple[str, str], list[Found]] = {}
    for system, values in sorted(by_system.items()):
        for value, matches in stored_lookups.by_token(conn, "Patient", "identifier", system, values).items():
            patients[(system, value)] = matches
    matched: dict[int, Found] = {}
    taken: set[str] = set()
    for index, item in sorted(found.items()):
        candidates = {m.stored.rid: m for pair in item.identifiers for m in patients.get(pair, ())}
        if len(candidates) != 1:
            continue
        (member,) = candidates.values()
        if member.stored.res_id not in taken:
            matched[index] = member
        taken.add(member.stored.res_id)
    ids = [member.stored.res_id for member in matched.values()]
    coverages = stored_lookups.by_reference(conn, "Coverage", "beneficiary", "Patient", ids)
    conditions = stored_lookups.by_reference(conn, "Condition", "subject", "Patient", ids)
    planned: dict[int, Plan] = {}
    for index, member in matched.items():
        res_id = member.stored.res_id
        stored = Stored(member, coverages.get(res_id, ()), conditions.get(res_id, ()))
        again = replan(found[index], stored, policy)
        if again is not None:
            planned[index] = again
    held = lookups.held_keys(conn, [(t, key) for item in planned.values() for t, key, _ in item.keys])
    for index, item in planned.items():
        if not held.intersection((t, key) for t, key, _ in item.keys):
            plans[index] = item


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


def _key_hashes(found: Plan, *, new_member: bool) -> list[tuple[str, str]]:
    """(res_type, key_hash) of the keys a stored resource could hold: the referral id's, and for a new
    member its Patient's (a stored member's Patient is matched by search; the keys of a new member's
    Coverage and Conditions name the new Patient)."""
    hashes = [(res_type, key) for res_type, key, _ in found.keys if res_type == "Patient"] if new_member else []
    return [*hashes, ("ServiceRequest", found.referral_key)] if found.referral_key else hashes


def _all(plans: Iterable[Plan], name: str) -> list[tuple[str, str]]:
    return [pair for found in plans for pair in getattr(found, name)]


def write(
    ctx: Context, policy: Policy, tx: WriteTransaction, run: list[Plan], ack: Callable[[Header], bytes]
) -> list[tuple[bytes, list[str]]]:
    """Write ``run`` in the caller's transaction (inside its savepoint); the AA and the resources of each
    message, in order. ``Fallback`` (or a database error) when the run must be applied per message."""
    inner = WriteTransaction(tx.conn, indexer=ctx.repo.indexer, lock_rows=not ctx.repo.sqlite)
    inner_ctx = ctx.in_transaction(inner)
    updates = [item.update for item in run if item.update is not None]
    if updates:  # the members' identifiers linked (``apply._link_identifiers``), as the PUT of each would
        if not ctx.repo.sqlite:  # lock the rows as that PUT does; on SQLite the group holds the database lock
            for _, previous in updates:
                current = inner.current("Patient", previous.res_id)
                if current is None or current.version_id != previous.version_id:
                    raise Fallback("a member changed since the group was screened")
        inner.update_many(updates)  # a version written since on SQLite: the version's unique key refuses it
    rids: list[list[int]] = []
    for item in run:
        rids.append([inner.create(body, res_id=res_id, method="POST").rid for body, res_id in item.creates])
    inner.flush()
    members = dict(item.member for item in run)
    orders = [NewReferral(item.referral) for item in run]
    # A new member's Patient was just created above with the id its plan assigned (a time-ordered UUID; the
    # create would have been refused had any resource, current or deleted, that id): nothing stored can name
    # it, so the intake skips its open referrals' and held keys' look-ups.
    new_members = {item.member[0] for item in run if item.stored is None}
    taken = take_in(inner_ctx, policy, orders, members=members, new_members=new_members)
    key_rows: list[dict[str, Any]] = []
    out: list[tuple[bytes, list[str]]] = []
    log_rows: list[dict[str, Any]] = []
    for item, result, created in zip(run, taken, rids, strict=True):
        if not isinstance(result, Taken) or not (result.created or item.stored is not None):
            raise Fallback("the referral intake did not create a referral the plan expected")
        referral = result.referral  # not created: the stored member's open referral for the service answers
        key_rows += [{"res_type": t, "key_hash": key, "rid": created[i]} for t, key, i in item.keys]
        if item.referral_key is not None and result.created:
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


__all__ = ["Fallback", "Plan", "enabled", "plan", "plans_for", "rematch", "screen", "write"]
