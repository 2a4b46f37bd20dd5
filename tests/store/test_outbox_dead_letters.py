"""Dead letters of the outbox (gateway/store/outbox.py ``fail``, gateway/store/dead_letters.py, the
``calaim-gateway outbox`` commands), on SQLite and PostgreSQL.

An event failing ``max_attempts`` times is parked (never claimed again), logged without PHI and counted;
an operator lists it and requeues it, after which it is delivered exactly once.
"""

from __future__ import annotations

import logging
import threading

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, select, update

from gateway.cli import main
from gateway.store.dead_letters import dead_count, list_dead, requeue, requeue_topic
from gateway.store.outbox import (
    PARKED_AT,
    DeliveryFailed,
    OutboxEvent,
    OutboxWorker,
    claim,
    enqueue,
    fail,
    is_last_attempt,
    pending_count,
    release,
    stats,
)
from gateway.store.schema import outbox

QUEUE = "test.change>receiver"
OTHER = "test.change>other"


def _fill(engine: Engine, count: int, topic: str = QUEUE) -> list[int]:
    with engine.begin() as conn:
        for n in range(count):
            enqueue(conn, topic=topic, payload={"n": n, "name": "Doe, Jane"}, dedupe_key=f"Patient/{n}/_history/1")
    with engine.connect() as conn:
        return list(conn.execute(select(outbox.c.id).where(outbox.c.topic == topic).order_by(outbox.c.id)).scalars())


def _row(engine: Engine, event_id: int) -> dict[str, object]:
    with engine.connect() as conn:
        return dict(conn.execute(select(outbox).where(outbox.c.id == event_id)).one()._mapping)


def _time_passes(engine: Engine) -> None:
    """The backoff of every retrying (not dead) event is over."""
    with engine.begin() as conn:
        c = outbox.c
        conn.execute(update(outbox).where(c.dead_at.is_(None), c.delivered_at.is_(None)).values(available_at=0))


def _kill(engine: Engine, ids: list[int], topic: str = QUEUE, attempts: int = 2) -> None:
    """Fail the events ``ids`` until they are dead."""
    for _ in range(attempts):
        _time_passes(engine)
        for event in claim(engine, topic=topic, worker_id="w", limit=100, lease_seconds=30):
            if event.id in ids:
                assert fail(engine, event, "w", "AE 101", max_attempts=attempts)
            else:
                assert release(engine, event, "w")


def test_the_last_allowed_failure_parks_the_event(engine: Engine) -> None:
    [event_id, healthy] = _fill(engine, 2)
    for attempt in (1, 2, 3):
        _time_passes(engine)
        claimed = {e.id: e for e in claim(engine, topic=QUEUE, worker_id="w", limit=5, lease_seconds=30)}
        assert release(engine, claimed.pop(healthy), "w")
        event = claimed[event_id]
        assert event.attempts == attempt - 1
        assert is_last_attempt(event, 3) == (attempt == 3)
        assert fail(engine, event, "w", f"AE attempt {attempt}", max_attempts=3)
        row = _row(engine, event_id)
        assert row["attempts"] == attempt
        assert (row["dead_at"] is not None) == (attempt == 3)
    assert row["available_at"] == PARKED_AT and row["claimed_by"] is None and row["delivered_at"] is None
    assert row["last_error"] == "AE attempt 3"
    _time_passes(engine)
    with engine.begin() as conn:  # even due by its time, a dead event is not claimed
        conn.execute(update(outbox).where(outbox.c.id == event_id).values(available_at=0))
    assert [e.id for e in claim(engine, topic=QUEUE, worker_id="w2", limit=5, lease_seconds=30)] == [healthy]
    assert pending_count(engine, QUEUE) == 1  # the healthy one, claimed; the dead one is not pending
    mine = stats(engine)[QUEUE]
    assert (mine.pending, mine.dead, mine.retrying, mine.delivered) == (1, 1, 0, 0)


def test_no_limit_retries_forever(engine: Engine) -> None:
    [event_id] = _fill(engine, 1)
    for _ in range(4):
        _time_passes(engine)
        [event] = claim(engine, topic=QUEUE, worker_id="w", limit=1, lease_seconds=30)
        assert not is_last_attempt(event, 0) and not is_last_attempt(event, None)
        assert fail(engine, event, "w", "timeout", max_attempts=0 if event.attempts % 2 else None)
    row = _row(engine, event_id)
    assert row["attempts"] == 4 and row["dead_at"] is None


def test_worker_logs_the_dead_event_without_phi(engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    [first, second] = _fill(engine, 2)

    def deliver(event: OutboxEvent) -> None:
        if event.id == first:
            raise ValueError(f"cannot map {event.payload['name']}")  # a message quoting PHI: never stored or logged
        raise DeliveryFailed("AR 207")

    worker = OutboxWorker(engine, QUEUE, deliver, worker_id="w", batch=10, lease_seconds=30, max_attempts=2)
    with caplog.at_level(logging.WARNING, logger="gateway.store.outbox"):
        assert worker.run_once() == 0
        assert dead_count(engine) == 0
        _time_passes(engine)
        assert worker.run_once() == 0
    assert dead_count(engine, topic=QUEUE) == 2
    dead_lines = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(dead_lines) == 2
    assert f"event {first} is dead after 2 attempts" in dead_lines[0]
    assert "topic test.change, consumer receiver, last error ValueError" in dead_lines[0]
    assert "last error DeliveryFailed" in dead_lines[1]
    assert not any("Doe" in r.getMessage() for r in caplog.records)
    listed = list_dead(engine, topic=QUEUE)
    assert [(d.id, d.attempts, d.last_error, d.dedupe_key) for d in listed] == [
        (first, 2, "ValueError", "Patient/0/_history/1"),
        (second, 2, "AR 207", "Patient/1/_history/1"),
    ]
    assert worker.run_once() == 0  # parked: nothing to claim


def test_requeue_delivers_exactly_once(engine: Engine) -> None:
    ids = _fill(engine, 3)
    others = _fill(engine, 2, topic=OTHER)
    _kill(engine, [ids[0], ids[2]])
    _kill(engine, others, topic=OTHER)
    assert requeue(engine, [ids[0], ids[0], ids[1], 999_999]) == 1  # only the dead one, once
    assert requeue(engine, [ids[0]]) == 0  # already requeued
    row = _row(engine, ids[0])
    assert row["dead_at"] is None and row["attempts"] == 0 and row["last_error"] == "AE 101"

    delivered: list[int] = []
    worker = OutboxWorker(engine, QUEUE, lambda e: delivered.append(e.id), batch=10, max_attempts=2)
    assert worker.run_once() == 2  # ids[1] was never dead; ids[2] still is
    assert sorted(delivered) == [ids[0], ids[1]]
    assert requeue(engine, [ids[0]]) == 0  # delivered events are not dead
    assert worker.run_once() == 0
    assert [d.id for d in list_dead(engine)] == [ids[2], *others]

    assert requeue_topic(engine, OTHER) == 2
    assert [d.id for d in list_dead(engine)] == [ids[2]]
    again: list[int] = []
    assert OutboxWorker(engine, OTHER, lambda e: again.append(e.id)).run_once() == 2
    assert again == others and pending_count(engine, OTHER) == 0


def test_concurrent_requeues_hand_each_event_back_once(engine: Engine) -> None:
    ids = _fill(engine, 40)
    _kill(engine, ids)
    counts: list[int] = []
    barrier = threading.Barrier(4)

    def operator() -> None:
        barrier.wait()
        counts.append(requeue(engine, ids))

    threads = [threading.Thread(target=operator) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sum(counts) == 40
    delivered: list[int] = []
    worker = OutboxWorker(engine, QUEUE, lambda e: delivered.append(e.id), batch=100)
    while worker.run_once():
        pass
    assert sorted(delivered) == ids


def test_cli_lists_requeues_and_counts(database_url: str, engine: Engine) -> None:
    ids = _fill(engine, 3)
    _kill(engine, ids[:2])
    runner = CliRunner()
    url = ["--database-url", database_url]

    listed = runner.invoke(main, ["outbox", "dead", "--topic", QUEUE, *url])
    assert listed.exit_code == 0, listed.output
    lines = [line for line in listed.stdout.splitlines() if line]
    assert [line.split("\t")[0] for line in lines] == [str(i) for i in ids[:2]]
    assert "attempts=2" in lines[0] and "error=AE 101" in lines[0] and "Doe" not in listed.output
    assert "2 dead event(s)" in listed.stderr

    stats_out = runner.invoke(main, ["outbox", "stats", *url])
    assert stats_out.exit_code == 0, stats_out.output
    [queue_line] = [line for line in stats_out.output.splitlines() if line.startswith(QUEUE)]
    assert queue_line.split()[1:6] == ["1", "0", "0", "2", "0"]  # pending claimed retrying dead delivered

    assert runner.invoke(main, ["outbox", "requeue", *url]).exit_code == 2  # ids or --all
    assert runner.invoke(main, ["outbox", "requeue", "--all", *url]).exit_code == 2  # --all needs --topic
    one = runner.invoke(main, ["outbox", "requeue", str(ids[0]), str(ids[2]), *url])
    assert one.exit_code == 0 and "requeued 1 dead event(s)" in one.stdout and "1 id(s) were not dead" in one.stderr
    rest = runner.invoke(main, ["outbox", "requeue", "--all", "--topic", QUEUE, *url])
    assert rest.exit_code == 0 and "requeued 1 dead event(s)" in rest.stdout
    assert dead_count(engine) == 0 and pending_count(engine, QUEUE) == 3
