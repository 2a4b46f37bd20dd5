"""The commit thread's work besides committing (docs/performance.md "County HL7 v2", session 10): a committed
message is freed by reference counting, not left to Python's cyclic garbage collector; the listener's other
writes (its lease's renewal) run in the commit thread between two groups."""

from __future__ import annotations

import asyncio
import gc
import pickle
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

from adapters.hl7v2.prepare import Prepared
from adapters.hl7v2.processor import InboundProcessor
from adapters.hl7v2.server import GroupCommitter, MllpServer
from gateway.fhir.context import Context
from gateway.settings import Settings
from tests.hl7v2.support import count, msa, processor_for, ref_i12


@contextmanager
def collector_off() -> Iterator[None]:
    """Only reference counting frees objects meanwhile (a cycle stays until the collector runs)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def test_a_committed_message_is_freed_without_the_collector(ctx: Context, settings: Settings) -> None:
    """A planned message refers to its plan and the plan back to it: after its commit the listener drops the
    plan, so the message (Bundle, locations, plan rows) goes as soon as nothing uses it."""
    processor: InboundProcessor = processor_for(ctx, settings)
    with collector_off():
        committer = GroupCommitter(processor)
        try:
            # as the event loop gets it from a parse worker: unpickled, with its plan
            prepared: Prepared = pickle.loads(pickle.dumps(processor.prepare(ref_i12("F1", cin="91000101A").encode())))
            assert prepared.planned and prepared.plan is not None and prepared.plan.prepared is prepared
            freed = weakref.ref(prepared)
            outcome = committer.submit(prepared).result(30)
            assert outcome.code == "AA"
            del prepared
        finally:
            committer.close()  # its thread's frame let go of the last group
        assert freed() is None
    assert count(ctx, "ServiceRequest") == 1


def test_a_released_message_committed_again_is_planned_again(ctx: Context, settings: Settings) -> None:
    """``Prepared.release`` leaves a message that can still be committed: planned again, the same outcome
    (here a resend: the stored ACK, nothing written twice)."""
    processor = processor_for(ctx, settings)
    prepared = processor.prepare(ref_i12("F2", cin="91000102A").encode())
    [first] = processor.commit([prepared])
    prepared.release()
    assert prepared.plan is None and not prepared.planned
    [again] = processor.commit([prepared])
    assert (msa(first.ack), again.ack, again.duplicate) == (("AA", "F2"), first.ack, True)
    assert count(ctx, "ServiceRequest") == 1


def test_work_between_groups_runs_in_the_commit_thread_after_the_group_in_progress(
    ctx: Context, settings: Settings
) -> None:
    processor = processor_for(ctx, settings)
    committer = GroupCommitter(processor)
    done: list[str] = []
    try:
        message = committer.submit(
            processor.prepare(ref_i12("F3", cin="91000103A").encode()), lambda _: done.append("ack")
        )
        call = committer.call(lambda: done.append(threading.current_thread().name))
        assert call.result(30) is None
        assert message.result(30).code == "AA"
        failing = committer.call(lambda: 1 // 0)
        assert isinstance(failing.exception(30), ZeroDivisionError)  # the caller's to judge; the thread goes on
        assert committer.call(lambda: "still committing").result(30) == "still committing"
    finally:
        committer.close()
    assert done == ["ack", "hl7v2-commit"]
    late = committer.call(lambda: "never")  # after the stop: cancelled, not left waiting
    committer.close()
    assert late.cancelled()


def test_the_listener_runs_work_between_groups_or_in_a_thread_when_stopped(ctx: Context, settings: Settings) -> None:
    """``MllpServer.between_groups``: what the lease renewal of ``Hl7v2Service`` uses while listening."""
    server = MllpServer(processor_for(ctx, settings), max_message_bytes=1 << 20, parse_workers=0)

    async def scenario() -> tuple[str, str]:
        await server.start("127.0.0.1", 0)
        try:
            listening = await server.between_groups(lambda: threading.current_thread().name)
        finally:
            await server.stop()
        stopped = await server.between_groups(lambda: threading.current_thread().name)
        return listening, stopped

    listening, stopped = asyncio.run(scenario())
    assert listening == "hl7v2-commit"
    assert stopped not in ("hl7v2-commit", threading.current_thread().name)
