"""The parse worker pool (adapters/hl7v2/parsepool.py): messages go to the worker over a socket pair driven by
the event loop, many outstanding at once; the answers are those ``Preparer.prepare`` gives in the listener's
own process, in the order of each caller, large messages included (bigger than a socket's buffer in both
directions at once), and a dead worker's messages are prepared in threads while another worker starts;
the grouped-write plan decided in the worker is the one the group commit writes."""

from __future__ import annotations

import asyncio
import os
import pickle
import signal

import pytest

from adapters.hl7v2.config import mapping_config
from adapters.hl7v2.parsepool import ParsePool
from adapters.hl7v2.prepare import Prepared, Preparer
from gateway.calaim.policy import Policy
from gateway.fhir.context import Context
from gateway.settings import Settings
from tests.hl7v2.support import count, processor_for, ref_i12


@pytest.fixture(scope="module")
def preparer() -> Preparer:
    """Step 1 as the listener configures it (no store: a parse worker has none)."""
    settings = Settings(auth_enabled=False)
    config = mapping_config(settings, Policy.load(settings.calaim_plan_dir))
    return Preparer(settings.hl7v2_processing_id, settings.mllp_max_message_bytes, config, validate_models=True)


def _messages(count: int, *, note_bytes: int = 0) -> list[bytes]:
    """Distinct referrals (and, with ``note_bytes``, each with a long NTE: a large frame both ways)."""
    note = ("NTE|2||" + "n" * note_bytes,) if note_bytes else ()
    return [ref_i12(f"PP{i}", cin=f"9300{i:04d}A", extra=note).encode() for i in range(count)]


async def _prepare_all(pool: ParsePool, messages: list[bytes]) -> list[Prepared]:
    """Every message at once (as many connections would send them); answers in the messages' order."""
    return list(await asyncio.gather(*(pool.prepare(m, too_large=None, limit=None) for m in messages)))


def _through_one_worker(preparer: Preparer, messages: list[bytes]) -> tuple[list[Prepared], ParsePool]:
    """``messages`` prepared at once by a pool of one worker process, then the pool closed."""
    pool = ParsePool(preparer, 1)
    try:
        pool.start()

        async def run() -> list[Prepared]:
            try:
                return await _prepare_all(pool, messages)
            finally:
                await pool.aclose()

        return asyncio.run(run()), pool
    finally:
        pool.close()


def test_outstanding_messages_answer_as_the_listener_process_would(preparer: Preparer) -> None:
    messages = _messages(24) + _messages(3, note_bytes=300_000) + [b"MSH|^~\\&|broken"]
    answers, pool = _through_one_worker(preparer, messages)
    assert answers == [preparer.prepare(m) for m in messages]  # raw given back, the same Bundle and verdicts
    assert all(a.mapped is not None and all(a.model_ok) for a in answers[:27])
    assert answers[-1].error is not None and answers[-1].error.ack_code == "AR"
    assert pool.worker_pids() == []


def test_a_killed_worker_is_replaced_and_its_messages_prepared_in_threads(preparer: Preparer) -> None:
    messages = _messages(6)
    pool = ParsePool(preparer, 1)
    try:
        pool.start()
        (pid,) = pool.worker_pids()

        async def run() -> tuple[list[Prepared], list[Prepared]]:
            try:
                first = await _prepare_all(pool, messages[:3])  # the loop talks to the worker
                os.kill(pid, signal.SIGKILL)
                return first, await _prepare_all(pool, messages[3:])
            finally:
                await pool.aclose()

        first, after = asyncio.run(run())
        assert pool.restarts == 1
    finally:
        pool.close()
    assert first + after == [preparer.prepare(m) for m in messages]


def test_no_workers_prepares_in_threads(preparer: Preparer) -> None:
    messages = _messages(3)
    pool = ParsePool(preparer, 0)
    pool.start()
    assert pool.worker_pids() == []
    assert asyncio.run(_prepare_all(pool, messages)) == [preparer.prepare(m) for m in messages]
    pool.close()


def test_the_plan_decided_in_the_worker_is_the_one_written(ctx: Context, settings: Settings) -> None:
    """With the plan's configuration, step 1 decides a new member's grouped-write plan in the worker (ids
    included); the group commit writes that plan, not one of its own."""
    processor = processor_for(ctx, settings)
    messages = _messages(5)
    prepared, _ = _through_one_worker(processor.preparer, messages)
    plans = [p.plan for p in prepared]
    assert all(p.planned for p in prepared) and all(plan is not None for plan in plans)
    outcomes = processor.commit(prepared)
    assert [outcome.code for outcome in outcomes] == ["AA"] * len(messages)
    written = [outcome.resources[0] for outcome in outcomes]
    assert written == [f"Patient/{plan.creates[0][1]}" for plan in plans if plan is not None]
    assert count(ctx, "ServiceRequest") == len(messages)


def test_a_workers_bundle_is_read_back_only_when_used(ctx: Context, settings: Settings) -> None:
    """A worker's answer carries its ``Mapped`` as a pickle of its own (``prepare._LazyMapped``): the group
    commit writes a planned message from its plan and never reads the Bundle back (the listener's event loop
    no longer rebuilds it: ~60 % of the unpickling); the per-message path reads it, equal to the original."""
    processor = processor_for(ctx, settings)
    messages = _messages(3)
    prepared, _ = _through_one_worker(processor.preparer, messages)
    assert all("mapped" not in vars(p) for p in prepared)  # not read back yet
    assert [outcome.code for outcome in processor.commit(prepared[:2])] == ["AA", "AA"]
    assert all("mapped" not in vars(p) for p in prepared[:2])  # written from the plans alone
    processor.grouped = False  # the per-message path reads the Bundle
    [outcome] = processor.commit(prepared[2:])
    assert outcome.code == "AA" and "mapped" in vars(prepared[2])
    assert prepared[2].mapped == processor.preparer.prepare(messages[2]).mapped
    assert count(ctx, "ServiceRequest") == 3
    unread = pickle.loads(pickle.dumps(pickle.loads(pickle.dumps(prepared[0]))))  # passed on unread
    assert unread.mapped == processor.preparer.prepare(messages[0]).mapped
