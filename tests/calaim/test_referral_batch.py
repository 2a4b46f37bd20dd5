"""The batched referral intake (gateway/calaim/referral_batch.py): what it writes equals what the referral
and closed-loop hooks write one referral at a time (referral, Task history, events), duplicates are
answered as the hook answers them, a routing refusal is its referral's result alone, and the bodies it
builds conform to R4 and the CalAIM profiles (validated here, not per referral)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import orjson
import pytest
from sqlalchemy import insert, select

from gateway.calaim.closed_loop import TERMINAL
from gateway.calaim.policy import Policy
from gateway.calaim.referral_batch import NewReferral, Taken, batchable, take_in
from gateway.calaim.referrals import open_key
from gateway.calaim.resources import body_of, find
from gateway.errors import FhirError
from gateway.fhir.conditional import condition_key
from gateway.fhir.context import Context
from gateway.fhir.hooks import WriteEvent
from gateway.store.repository import StoredResource, WriteTransaction
from gateway.store.schema import conditional_key, resource_version
from tests.calaim.support import COUNTY, assert_emitted_valid, events, referral, referral_status
from tests.files.support import add_member

POLICY = Policy.load()


def _members(ctx: Context, keys: Iterable[int], **kwargs: Any) -> None:
    with ctx.writing() as tx:
        inner = ctx.in_transaction(tx)
        for key in keys:
            add_member(inner, key, **kwargs)


def _history(ctx: Context, res_type: str, res_id: str) -> list[dict[str, Any]]:
    with ctx.repo.connect() as conn:
        v = resource_version.c
        query = select(v.body).where(v.res_type == res_type, v.res_id == res_id).order_by(v.version_id)
        return [orjson.loads(row.body) for row in conn.execute(query)]


def _current(tx: WriteTransaction, res_type: str, res_id: str) -> StoredResource:
    stored = tx.current(res_type, res_id)
    assert stored is not None
    return stored


def _close(ctx: Context, referral_id: str) -> StoredResource:
    """Complete a referral by a plain update (its key is freed; its Task stays as it is)."""
    with ctx.writing() as tx:
        previous = _current(tx, "ServiceRequest", referral_id)
        body = body_of(previous)
        body["status"] = "completed"
        return ctx.in_transaction(tx).store_update(tx, body, previous, method="PUT")


def _task_of(ctx: Context, referral_id: str) -> dict[str, Any]:
    with ctx.repo.connect() as conn:
        (task,) = find(ctx, conn, "Task", [("focus", f"ServiceRequest/{referral_id}")], limit=2)
    return task


def _through_hooks(ctx: Context, body: dict[str, Any], move: str | None, reason: str | None) -> StoredResource:
    """One referral the way the per-row path writes it: created through the hooks, its Task then moved
    through the closed-loop hook (as the HN file handler's ``_move_task`` and ``$decide`` move it)."""
    with ctx.writing() as tx:
        inner = ctx.in_transaction(tx)
        stored, created = inner.store_create(tx, body, res_id=None, method="POST")
        assert created
        if move is not None:
            tx.flush()
            (task,) = find(inner, tx.conn, "Task", [("focus", f"ServiceRequest/{stored.res_id}")], limit=2)
            task["status"] = move
            if reason:
                task["statusReason"] = {"text": reason}
            inner.store_update(tx, task, _current(tx, "Task", task["id"]), method="PUT")
    return stored


def _normal(value: Any, ids: dict[str, str]) -> str:
    """JSON text with ids replaced by their role and instants by a placeholder."""
    text = orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    for real, role in ids.items():
        text = text.replace(real, role)
    return re.sub(r'"\d{4}-\d\d-\d\dT[0-9:.]+(Z|[+-]\d\d:\d\d)"', '"<instant>"', text)


def _snapshot(ctx: Context, referral_id: str, patient: str) -> dict[str, str]:
    task = _task_of(ctx, referral_id)
    ids = {referral_id: "<referral>", task["id"]: "<task>", patient: "<patient>"}
    tasks = _history(ctx, "Task", task["id"])
    return {
        "referral": _normal(_history(ctx, "ServiceRequest", referral_id), ids),
        "task": _normal(tasks, ids),
        "referral events": _normal(
            [e for e in events(ctx, "calaim.referral") if e["referral"].endswith(referral_id)], ids
        ),
        "status events": _normal(
            [e for e in events(ctx, "calaim.referral-status") if e["resource"] == f"Task/{task['id']}"], ids
        ),
    }


@pytest.mark.parametrize("move", [None, "accepted"])
def test_the_batch_writes_what_the_hooks_write(ctx: Context, move: str | None) -> None:
    """Same referral, Task versions and events as the hooks, for a Task left requested or moved, for a
    referral of the county (status events for its RRI) and one of an HN (none)."""
    _members(ctx, range(1, 4))
    cases = (
        ("fm-1", ("1a",), None, "hn-altamed"),
        ("fm-2", (), "hn-altamed", COUNTY),
        ("fm-3", ("3",), None, "hn-noble"),
    )
    for patient, pofs, performer, requester in cases:
        body = referral("ecm", patient, pofs=pofs, performer=performer, requester=requester)
        hooked = _through_hooks(ctx, body, move, "Decided")
        expected = _snapshot(ctx, hooked.res_id, patient)
        statuses = 0 if patient == "fm-1" else (2 if move else 1)  # fm-3: routed to the county (POF 3)
        assert len(orjson.loads(expected["status events"])) == statuses
        _close(ctx, hooked.res_id)  # so that the batch creates a new open referral for the member
        order = NewReferral(
            referral("ecm", patient, pofs=pofs, performer=performer, requester=requester), move, "Decided"
        )
        with ctx.writing() as tx:
            (result,) = take_in(ctx.in_transaction(tx), POLICY, [order])
        assert isinstance(result, Taken) and result.created and result.task is not None
        assert result.task.version_id == (2 if move else 1)
        assert _snapshot(ctx, result.referral.res_id, patient) == expected
        written = [*_history(ctx, "Task", result.task.res_id), *_history(ctx, "ServiceRequest", result.referral.res_id)]
        for version in written:
            assert_emitted_valid(version)


def test_duplicates_are_answered_by_the_open_referral(ctx: Context) -> None:
    _members(ctx, range(1, 4))
    existing = _through_hooks(ctx, referral("ecm", "fm-1", requester=COUNTY), None, None)
    with ctx.writing() as tx:
        results = take_in(
            ctx.in_transaction(tx),
            POLICY,
            [
                NewReferral(referral("ecm", "fm-1", requester=COUNTY), "accepted"),  # stored open referral
                NewReferral(referral("ecm", "fm-2", requester=COUNTY), "accepted"),
                NewReferral(referral("ecm", "fm-2", requester=COUNTY), "accepted"),  # the one just above
                NewReferral(referral("medically-tailored-meals", "fm-2", requester=COUNTY)),  # another service
            ],
        )
    assert all(isinstance(r, Taken) for r in results)
    taken = [r for r in results if isinstance(r, Taken)]
    assert [t.created for t in taken] == [False, True, False, True]
    assert taken[0].referral.res_id == existing.res_id and taken[0].task is None
    assert taken[2].referral.res_id == taken[1].referral.res_id
    assert _task_of(ctx, existing.res_id)["status"] == "requested"  # an answered duplicate moves nothing
    assert _task_of(ctx, taken[1].referral.res_id)["status"] == "accepted"
    # the new open referrals hold their keys: the hook now answers a duplicate with them
    with ctx.writing() as tx:
        again, created = ctx.in_transaction(tx).store_create(tx, referral("ecm", "fm-2"), res_id=None, method="POST")
    assert not created and again.res_id == taken[1].referral.res_id
    assert [e["referralStatus"] for e in events(ctx, "calaim.referral-status")] == [
        "pending",
        "pending",
        "accepted",
        "pending",
    ]


def test_a_routing_refusal_is_that_referral_s_result_alone(ctx: Context) -> None:
    _members(ctx, [1, 3])
    _members(ctx, [2], pofs=())
    with ctx.writing() as tx:
        results = take_in(
            ctx.in_transaction(tx),
            POLICY,
            [
                NewReferral(referral("ecm", "fm-1"), "accepted"),
                NewReferral(referral("ecm", "fm-2"), "accepted"),  # no Population of Focus anywhere
                NewReferral(referral("ecm", "fm-3", performer="cs-cap-oc"), "accepted"),  # not contracted for ECM
                NewReferral(referral("ecm", "fm-3", performer="hn-altamed")),
            ],
        )
    refused = results[1]
    assert isinstance(refused, FhirError) and refused.status == 422 and "Population of Focus" in refused.message
    assert isinstance(results[2], FhirError) and "not contracted" in results[2].message
    assert isinstance(results[0], Taken) and isinstance(results[3], Taken) and results[3].created
    assert events(ctx, "calaim.referral") == []  # no consumer


def test_a_stale_key_is_released_and_taken(ctx: Context) -> None:
    """A key held by a resource that is no longer an open referral (as the hook finds it) is released."""
    _members(ctx, [1])
    closed = _close(ctx, _through_hooks(ctx, referral("ecm", "fm-1"), None, None).res_id)
    key = condition_key(open_key("fm-1", "ecm"))
    with ctx.writing() as tx:
        tx.conn.execute(insert(conditional_key).values(res_type="ServiceRequest", key_hash=key, rid=closed.rid))
    with ctx.writing() as tx:
        (result,) = take_in(ctx.in_transaction(tx), POLICY, [NewReferral(referral("ecm", "fm-1"), "accepted")])
    assert isinstance(result, Taken) and result.created
    with ctx.repo.connect() as conn:
        holder = conn.execute(select(conditional_key.c.rid).where(conditional_key.c.key_hash == key)).scalar_one()
    assert holder == result.referral.rid


def test_the_task_history_reads_like_a_create_then_a_move(ctx: Context) -> None:
    """``WriteTransaction.create_history``: both versions readable, the second current and indexed."""
    _members(ctx, [1])
    with ctx.writing() as tx:
        (result,) = take_in(ctx.in_transaction(tx), POLICY, [NewReferral(referral("ecm", "fm-1"), "accepted", "ok")])
    assert isinstance(result, Taken) and result.task is not None
    task_id = result.task.res_id
    first, second = ctx.repo.vread("Task", task_id, 1), ctx.repo.vread("Task", task_id, 2)
    assert first is not None and second is not None and first.method == "POST" and second.method == "PUT"
    assert body_of(first)["status"] == "requested" and referral_status(body_of(first))[0] == "pending"
    moved = body_of(second)
    assert (moved["status"], moved["statusReason"], referral_status(moved)[0]) == (
        "accepted",
        {"text": "ok"},
        "accepted",
    )
    current = ctx.repo.read("Task", task_id)
    assert current is not None and current.version_id == 2
    with ctx.repo.connect() as conn:
        assert (
            ctx.search.find(conn, resource_type="Task", params=[("status", "accepted")], limit=5)[0].res_id == task_id
        )
        assert ctx.search.find(conn, resource_type="Task", params=[("status", "requested")], limit=5) == []


def test_only_the_calaim_hooks_are_batched_and_terminal_moves_are_not(ctx: Context) -> None:
    assert batchable(ctx)

    class Other:
        def before(self, ctx: Context, event: WriteEvent) -> StoredResource | None:
            return None

        def after(self, ctx: Context, event: WriteEvent) -> None:
            return None

    ctx.hooks.register("Task", Other())
    assert not batchable(ctx)
    _members(ctx, [1])
    for status in sorted(TERMINAL):
        with ctx.writing() as tx, pytest.raises(Exception, match="does not move"):
            take_in(ctx.in_transaction(tx), POLICY, [NewReferral(referral("ecm", "fm-1"), status)])
