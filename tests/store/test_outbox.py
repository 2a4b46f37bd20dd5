"""The transactional outbox (gateway/store/outbox.py), on SQLite and PostgreSQL.

Events are written atomically with the change that causes them; real worker processes drain one outbox
concurrently and deliver every event exactly once to a real TCP receiver; a worker killed mid-batch loses
nothing (its in-flight event is delivered again: at least once, the receiver dedupes by message id);
failures back off; a worker whose lease was taken over can no longer mark the event.
"""

from __future__ import annotations

import signal
import threading
import time

import pytest
from sqlalchemy import Engine, select

from gateway.fhir.context import Context
from gateway.store.outbox import (
    BACKOFF_MAX_SECONDS,
    DeliveryFailed,
    OutboxEvent,
    OutboxWorker,
    backoff_seconds,
    claim,
    complete,
    enqueue,
    fail,
    pending_count,
    release,
    stats,
)
from gateway.store.schema import outbox, resource
from tests.conftest import patient
from tests.store.background_procs import Client, Receiver, spawn

TOPIC = "test.deliveries"
SHORT_LEASE = 0.2


def _fill(engine: Engine, count: int, topic: str = TOPIC) -> list[int]:
    """Enqueue ``count`` events in one transaction; their ids in order."""
    with engine.begin() as conn:
        for n in range(count):
            enqueue(conn, topic=topic, payload={"n": n}, dedupe_key=f"change-{n}")
    with engine.connect() as conn:
        return list(conn.execute(select(outbox.c.id).where(outbox.c.topic == topic).order_by(outbox.c.id)).scalars())


def _row(engine: Engine, event_id: int) -> dict[str, object]:
    with engine.connect() as conn:
        return dict(conn.execute(select(outbox).where(outbox.c.id == event_id)).one()._mapping)


def test_enqueue_commits_and_rolls_back_with_the_change(ctx: Context) -> None:
    with ctx.repo.write() as tx:
        stored = tx.create(patient())
        enqueue(tx.conn, topic=TOPIC, payload={"ref": f"Patient/{stored.res_id}"}, dedupe_key="p1")
    assert pending_count(ctx.repo.engine, TOPIC) == 1

    with pytest.raises(RuntimeError), ctx.repo.write() as tx:
        tx.create(patient(family="Roe", cin="91000002B"))
        enqueue(tx.conn, topic=TOPIC, payload={"ref": "Patient/rolled-back"}, dedupe_key="p2")
        raise RuntimeError("the change fails after the event was written")
    assert pending_count(ctx.repo.engine, TOPIC) == 1
    with ctx.repo.engine.connect() as conn:
        assert len(conn.execute(select(resource.c.rid)).all()) == 1  # the change rolled back with its event


def test_enqueue_dedupes_within_a_topic(engine: Engine) -> None:
    with engine.begin() as conn:
        enqueue(conn, topic=TOPIC, payload={"v": 1}, dedupe_key="ServiceRequest/1/_history/1")
        enqueue(conn, topic=TOPIC, payload={"v": 2}, dedupe_key="ServiceRequest/1/_history/1")
    with engine.begin() as conn:  # a later transaction, e.g. a retried message
        enqueue(conn, topic=TOPIC, payload={"v": 3}, dedupe_key="ServiceRequest/1/_history/1")
        enqueue(conn, topic="other.topic", payload={"v": 4}, dedupe_key="ServiceRequest/1/_history/1")
        enqueue(conn, topic=TOPIC, payload={"v": 5})
        enqueue(conn, topic=TOPIC, payload={"v": 6})  # no key: never deduplicated
    events = claim(engine, topic=TOPIC, worker_id="w", limit=10, lease_seconds=30)
    assert [e.payload["v"] for e in events] == [1, 5, 6]
    assert pending_count(engine, "other.topic") == 1
    with pytest.raises(ValueError, match="topic"), engine.begin() as conn:
        enqueue(conn, topic="x" * 65, payload={})


@pytest.mark.parametrize("workers", [2, 4])
def test_worker_processes_deliver_every_event_exactly_once(database_url: str, engine: Engine, workers: int) -> None:
    ids = _fill(engine, 2000)
    with Receiver() as receiver:
        procs = [spawn("outbox", database_url, TOPIC, str(receiver.port), "--batch", "25") for _ in range(workers)]
        try:
            errors = [p.communicate(timeout=120)[1].decode() for p in procs if p.wait(timeout=120) != 0]
        finally:
            for p in procs:
                p.kill()
        assert not errors, errors[0]
        counts = receiver.counts()
    assert counts == {str(i): 1 for i in ids}  # every event, none twice
    assert pending_count(engine, TOPIC) == 0
    with engine.connect() as conn:
        deliverers = set(conn.execute(select(outbox.c.claimed_by)).scalars())
    assert len(deliverers) >= 2, "the processes did not work side by side"


def test_killed_worker_loses_nothing(database_url: str, engine: Engine) -> None:
    """A worker is SIGKILLed mid-batch. Its claimed events wait for the lease to expire (no concurrent
    delivery), then another worker delivers them. The one in flight at the kill is delivered twice:
    at least once, and the receiver dedupes it by message id."""
    ids = _fill(engine, 60)
    lease = 1.5
    with Receiver() as receiver:
        options = ["--batch", "20", "--lease", str(lease), "--stall-after", "5"]
        stalled = spawn("outbox", database_url, TOPIC, str(receiver.port), *options)
        try:
            receiver.wait_for("stalled")
        finally:
            stalled.send_signal(signal.SIGKILL)
            stalled.wait()
        in_flight = ids[5]
        client = Client(receiver.port)
        seen: list[int] = []

        def deliver(event: OutboxEvent) -> None:
            client.send(str(event.id))
            seen.append(event.id)

        survivor = OutboxWorker(engine, TOPIC, deliver, batch=100, lease_seconds=30)
        assert survivor.run_once() == 40
        assert seen == ids[20:], "events under the dead worker's lease were taken before it expired"
        deadline = time.monotonic() + lease + 10
        while pending_count(engine, TOPIC) and time.monotonic() < deadline:
            survivor.run_once()
            time.sleep(0.1)
        counts = receiver.counts()
    assert pending_count(engine, TOPIC) == 0
    assert seen[40:] == ids[5:20]
    assert counts[str(in_flight)] == 2
    assert {line: n for line, n in counts.items() if n != 1} == {str(in_flight): 2}
    assert set(counts) == {str(i) for i in ids} | {"stalled"}


def test_fail_counts_the_attempt_and_backs_off(engine: Engine) -> None:
    [event_id] = _fill(engine, 1)
    [event] = claim(engine, topic=TOPIC, worker_id="w1", limit=5, lease_seconds=30)
    before = time.time_ns() // 1000
    assert fail(engine, event, "w1", "AE: receiver rejected the message " + "x" * 500)
    row = _row(engine, event_id)
    assert row["attempts"] == 1 and row["claimed_by"] is None and row["delivered_at"] is None
    assert str(row["last_error"]).startswith("AE: receiver rejected") and len(str(row["last_error"])) == 200
    delay = int(str(row["available_at"])) - before
    assert 400_000 <= delay <= 1_100_000  # first retry after 0.5-1 s (clocks of one host)
    assert claim(engine, topic=TOPIC, worker_id="w2", limit=5, lease_seconds=30) == []  # backing off
    time.sleep((int(str(row["available_at"])) - time.time_ns() // 1000) / 1e6 + 0.05)
    [again] = claim(engine, topic=TOPIC, worker_id="w2", limit=5, lease_seconds=30)
    assert again.attempts == 1
    assert not fail(engine, event, "w1", "stale")  # the old claim is gone


def test_backoff_is_exponential_jittered_and_bounded() -> None:
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (5, 16.0), (9, 256.0), (10, 300.0), (1000, 300.0)]:
        delays = [backoff_seconds(attempt) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 100  # jittered, so failing workers do not retry in step
    assert backoff_seconds(10_000) <= BACKOFF_MAX_SECONDS


def test_a_taken_over_claim_cannot_be_marked(engine: Engine) -> None:
    [event_id] = _fill(engine, 1)
    [old] = claim(engine, topic=TOPIC, worker_id="slow", limit=1, lease_seconds=SHORT_LEASE)
    assert claim(engine, topic=TOPIC, worker_id="fast", limit=1, lease_seconds=30) == []  # the lease holds
    time.sleep(SHORT_LEASE + 0.05)  # "slow" hangs past its lease
    [new] = claim(engine, topic=TOPIC, worker_id="fast", limit=1, lease_seconds=30)
    assert new.id == old.id == event_id
    assert not complete(engine, old, "slow")
    assert not fail(engine, old, "slow", "timeout")
    assert not release(engine, old, "slow")
    assert not complete(engine, new, "slow")  # the right claim, the wrong worker
    assert complete(engine, new, "fast")
    assert not complete(engine, new, "fast")  # once
    assert _row(engine, event_id)["claimed_by"] == "fast"


def test_an_expired_claim_not_taken_over_can_still_complete(engine: Engine) -> None:
    """Nobody else delivered it meanwhile, so marking it delivered only saves a duplicate."""
    _fill(engine, 1)
    [event] = claim(engine, topic=TOPIC, worker_id="w", limit=1, lease_seconds=SHORT_LEASE)
    time.sleep(SHORT_LEASE + 0.05)
    assert complete(engine, event, "w")
    assert claim(engine, topic=TOPIC, worker_id="other", limit=1, lease_seconds=30) == []


def test_worker_records_failures_without_their_messages(engine: Engine) -> None:
    ids = _fill(engine, 3)

    def deliver(event: OutboxEvent) -> None:
        if event.payload["n"] == 0:
            raise DeliveryFailed("AR: application reject")
        if event.payload["n"] == 1:
            raise ValueError("Doe, Jane 1980-02-03")  # e.g. a parser quoting the message: not stored

    worker = OutboxWorker(engine, TOPIC, deliver, worker_id="w", batch=10, lease_seconds=30)
    assert worker.run_once() == 1
    assert [_row(engine, i)["last_error"] for i in ids] == ["AR: application reject", "ValueError", None]
    assert [_row(engine, i)["attempts"] for i in ids] == [1, 1, 0]
    assert worker.run_once() == 0  # both failed events are backing off
    assert pending_count(engine, TOPIC) == 2


def test_worker_hands_back_the_batch_when_half_the_lease_is_gone(engine: Engine) -> None:
    ids = _fill(engine, 4)
    worker = OutboxWorker(engine, TOPIC, lambda _event: time.sleep(0.3), worker_id="w", batch=4, lease_seconds=0.5)
    assert worker.run_once() == 1
    rows = [_row(engine, i) for i in ids[1:]]
    assert all(r["claimed_by"] is None and r["attempts"] == 0 for r in rows)  # free for anyone, untried
    assert [e.id for e in claim(engine, topic=TOPIC, worker_id="x", limit=9, lease_seconds=30)] == ids[1:]


def test_run_forever_delivers_until_stopped(engine: Engine) -> None:
    delivered: list[int] = []
    stop = threading.Event()
    worker = OutboxWorker(engine, TOPIC, lambda event: delivered.append(event.payload["n"]), batch=3)
    thread = threading.Thread(target=worker.run_forever, args=(stop, 0.05))
    thread.start()
    try:
        _fill(engine, 7)
        deadline = time.monotonic() + 10
        while len(delivered) < 7 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not thread.is_alive()
    assert delivered == list(range(7))  # one worker: FIFO


def test_stats_per_topic(engine: Engine) -> None:
    _fill(engine, 5)
    _fill(engine, 1, topic="other.topic")
    first, second, *_ = claim(engine, topic=TOPIC, worker_id="w", limit=3, lease_seconds=30)
    complete(engine, first, "w")
    fail(engine, second, "w", "timeout")
    by_topic = stats(engine)
    mine = by_topic[TOPIC]
    assert (mine.pending, mine.claimed, mine.retrying, mine.delivered) == (4, 1, 1, 1)
    assert mine.oldest_pending_at is not None and mine.oldest_pending_at == _row(engine, second.id)["created_at"]
    assert by_topic["other.topic"].pending == 1
