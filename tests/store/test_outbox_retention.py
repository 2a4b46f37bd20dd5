"""Outbox retention (gateway/store/outbox_retention.py, gateway/outbox_service.py), on SQLite and PostgreSQL.

Only delivered events past the retention are purged: never pending, claimed or dead ones, nor the events
of an outbound file not yet written, nor the newest event (SQLite would reuse its id). The purge works
in small batches, stops at the first recent event, runs beside delivering workers without losing or
repeating an event, skips rows another transaction holds (PostgreSQL), and runs in one instance at a time.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, func, select, text, update

from adapters.files import ledger
from gateway.cli import main
from gateway.fhir.context import Context
from gateway.outbox_service import RetentionService, retention_service
from gateway.settings import Settings
from gateway.store.leases import Lease
from gateway.store.outbox import OutboxEvent, OutboxWorker, claim, complete, database_now, enqueue, fail
from gateway.store.outbox_retention import DAY_SECONDS, LEASE_NAME, RetentionJob, purge
from gateway.store.schema import outbox

QUEUE = "test.change>receiver"
OTHER = "test.other>receiver"
DAY_US = DAY_SECONDS * 1_000_000


def _fill(engine: Engine, count: int, topic: str = QUEUE) -> list[int]:
    with engine.begin() as conn:
        first = conn.execute(select(func.coalesce(func.max(outbox.c.id), 0))).scalar_one()
        for n in range(count):
            enqueue(conn, topic=topic, payload={"n": n}, dedupe_key=f"change-{first}-{n}")
    with engine.connect() as conn:
        query = select(outbox.c.id).where(outbox.c.id > first).order_by(outbox.c.id)
        return list(conn.execute(query).scalars())


def _deliver_all(engine: Engine, topic: str = QUEUE) -> None:
    worker = OutboxWorker(engine, topic, lambda _event: None, batch=500)
    while worker.run_once():
        pass


def _age(engine: Engine, ids: list[int], days: float) -> None:
    """These events were created (and delivered, if they were) ``days`` ago."""
    with engine.begin() as conn:
        now = database_now(conn)
        c = outbox.c
        conn.execute(
            update(outbox)
            .where(c.id.in_(ids))
            .values(
                created_at=now - int(days * DAY_US),
                delivered_at=func.coalesce(c.delivered_at - c.delivered_at + now - int(days * DAY_US), None),
            )
        )


def _remaining(engine: Engine) -> list[int]:
    with engine.connect() as conn:
        return list(conn.execute(select(outbox.c.id).order_by(outbox.c.id)).scalars())


def test_purge_keeps_everything_not_delivered_long_ago(engine: Engine) -> None:
    old_delivered = _fill(engine, 4)
    in_unwritten_file, in_written_file = _fill(engine, 2)
    old_dead, old_claimed, old_pending = _fill(engine, 3, topic=OTHER)
    recent_delivered = _fill(engine, 2)
    newest = _fill(engine, 1)
    _deliver_all(engine)  # every event of QUEUE
    [dying] = claim(engine, topic=OTHER, worker_id="w", limit=1, lease_seconds=600)
    assert dying.id == old_dead and fail(engine, dying, "w", "AE", max_attempts=1)  # dead at the first failure
    [taken] = claim(engine, topic=OTHER, worker_id="w", limit=1, lease_seconds=600)
    assert taken.id == old_claimed
    for ids, status in (([in_unwritten_file], ledger.WRITING), ([in_written_file], ledger.WRITTEN)):
        with engine.begin() as conn:
            entry = ledger.record_outbound(
                conn, kind="k", recipient="hn", period="2026-11-24", name_of="f{sequence}", outbox_ids=ids
            )
        if status == ledger.WRITTEN:
            ledger.mark_written(engine, entry.id, rows=1, sha256="0" * 64)
    _age(engine, [*old_delivered, in_unwritten_file, in_written_file, old_pending, old_claimed, old_dead], 40)
    _age(engine, newest, 40)  # older than everything, but the newest id: SQLite would hand it out again

    result = purge(engine, older_than_seconds=30 * DAY_SECONDS)

    assert result.deleted == 5 and result.complete
    kept = [in_unwritten_file, old_dead, old_claimed, old_pending, *recent_delivered, *newest]
    assert _remaining(engine) == kept
    assert complete(engine, taken, "w")  # the claimed event is still there for its worker
    assert _fill(engine, 1)[0] > newest[0]  # ids are never reused


def test_purge_works_in_batches_and_stops_at_the_first_recent_event(engine: Engine) -> None:
    old = _fill(engine, 25)
    recent = _fill(engine, 30)
    _deliver_all(engine)
    _age(engine, old, 2)
    result = purge(engine, older_than_seconds=DAY_SECONDS, batch=10, pause_seconds=0)
    # Windows of ids: 1-10, 11-20, then 21-30 holds the first recent event: the scan ends there.
    assert (result.deleted, result.batches, result.complete) == (25, 3, True)
    assert _remaining(engine) == recent
    assert purge(engine, older_than_seconds=DAY_SECONDS, batch=10).deleted == 0
    bounded = purge(engine, older_than_seconds=0, batch=10, pause_seconds=0, max_batches=2)
    assert (bounded.deleted, bounded.batches, bounded.complete) == (20, 2, False)
    stopped = purge(engine, older_than_seconds=0, keep_going=lambda: False)
    assert (stopped.deleted, stopped.complete) == (0, False)
    with pytest.raises(ValueError, match="batch"):
        purge(engine, older_than_seconds=0, batch=0)


def test_purge_racing_workers_loses_and_repeats_nothing(engine: Engine) -> None:
    """Workers deliver while a purge with no retention at all runs again and again: every event is
    delivered exactly once (a purged pending or claimed event would never be), every completion finds
    its event, and in the end only the newest event is left."""
    ids = _fill(engine, 600)
    delivered: list[int] = []
    lock = threading.Lock()
    stop = threading.Event()

    def deliver(event: OutboxEvent) -> None:
        time.sleep(0.003)  # a receiver's round trip: the run lasts long enough for several purges
        with lock:
            delivered.append(event.id)

    workers = [OutboxWorker(engine, QUEUE, deliver, batch=20, lease_seconds=60) for _ in range(3)]
    completions: list[int] = []

    def work(worker: OutboxWorker) -> None:
        while (done := worker.run_once()) or not stop.is_set():
            completions.append(done)

    purged: list[int] = []

    def purge_loop() -> None:
        while not stop.is_set():
            purged.append(purge(engine, older_than_seconds=0, batch=50, pause_seconds=0).deleted)

    threads = [threading.Thread(target=work, args=(w,)) for w in workers] + [threading.Thread(target=purge_loop)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 120
    while len(delivered) < len(ids) and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(delivered) == ids  # each once
    assert sum(completions) == len(ids)  # and each marked delivered by its own worker
    purged.append(purge(engine, older_than_seconds=0).deleted)
    assert sum(purged) == len(ids) - 1 and _remaining(engine) == ids[-1:]
    assert sum(1 for n in purged if n) >= 2, "the purge did not run beside the workers"


def test_purge_skips_a_row_another_transaction_holds(database_url: str, engine: Engine) -> None:
    """PostgreSQL: ``FOR UPDATE SKIP LOCKED`` never waits for a writer; SQLite's writers take turns on
    the database lock instead (``BEGIN IMMEDIATE``), so this is PostgreSQL's test."""
    if not database_url.startswith("postgresql"):
        pytest.skip("row locks are PostgreSQL's")
    ids = _fill(engine, 5)
    _deliver_all(engine)
    with engine.connect() as holder:
        holder.execute(text("SET lock_timeout = '60s'"))
        holder.execute(select(outbox.c.id).where(outbox.c.id == ids[1]).with_for_update())
        started = time.monotonic()
        result = purge(engine, older_than_seconds=0)
        assert time.monotonic() - started < 5  # not the 10 s lock timeout: nothing waited
        assert result.deleted == 3 and _remaining(engine) == [ids[1], ids[4]]
        holder.rollback()
    assert purge(engine, older_than_seconds=0).deleted == 1


def test_one_instance_purges_at_a_time(engine: Engine) -> None:
    ids = _fill(engine, 3)
    _deliver_all(engine)
    _age(engine, ids, 40)
    other = Lease(engine, LEASE_NAME, holder="other-instance")
    assert other.acquire()
    job = RetentionJob(engine, retention_days=30, lease_ttl_seconds=5)
    assert job.run_once() is None  # another instance holds the lease
    other.release()
    result = job.run_once()
    assert result is not None and result.deleted == 2
    assert other.acquire(), "the job released the lease after its purge"
    other.release()


def test_service_purges_in_the_background(settings: Settings, ctx: Context) -> None:
    assert retention_service(ctx, settings.model_copy(update={"outbox_retention_days": 0})) is None
    assert isinstance(retention_service(ctx, settings), RetentionService)
    engine = ctx.repo.engine
    ids = _fill(engine, 4)
    _deliver_all(engine)
    _age(engine, ids[:2], settings.outbox_retention_days + 1)
    service = RetentionService(ctx, settings, first_run_after=0)

    async def run() -> None:
        await service.start()
        deadline = time.monotonic() + 30
        while service.runs == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await service.stop()

    asyncio.run(run())
    assert service.runs >= 1
    assert _remaining(engine) == ids[2:]


def test_cli_purge(database_url: str, engine: Engine) -> None:
    ids = _fill(engine, 3)
    _deliver_all(engine)
    _age(engine, ids[:1], 3)
    runner = CliRunner()
    done = runner.invoke(main, ["outbox", "purge", "--older-than-days", "2", "--database-url", database_url])
    assert done.exit_code == 0, done.output
    assert "purged 1 delivered event(s) older than 2 days" in done.output
    assert _remaining(engine) == ids[1:]
