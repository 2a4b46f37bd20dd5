"""The audit trail's log (issue 5, docs/access-control.md "Audit"): accesses go to the append-only
``audit_log`` off the request path and become AuditEvents later, each access in exactly one AuditEvent
whichever process materializes it, after a crash too; an auditor's search sees every access at once."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import MetaData, Table, func, insert, select, update

from gateway.auth.grant import Grant
from gateway.fhir import audit_log
from gateway.fhir.audit import AuditRecord, AuditTrail, log_batch, log_rows
from gateway.fhir.audit_events import MAX_ENTITIES, audit_events, encode_rows, rows_of_batch
from gateway.fhir.context import Context
from gateway.fhir.core import build_context
from gateway.settings import Settings
from gateway.store.migrate import MIGRATIONS_DIR
from gateway.store.schema import audit_log_batch, audit_log_mark, resource
from tests.access.support import as_grant, body_of, grant

NURSE = Grant(
    subject="nurse", client_id="app", scope="user/*.rs", token_id="jti-1", expires_at=0, organization="hn-ccn"
)


def _minute() -> float:
    """The start of the current minute plus one second (records of a test stay within one minute)."""
    return (time.time() // 60) * 60 + 1


def _reads(count: int, *, start: float, caller: Grant = NURSE, status: int = 200) -> list[AuditRecord]:
    return [
        AuditRecord(caller, "read", "Condition", f"c-{n}", None, [], status, start + n / 1000) for n in range(count)
    ]


@pytest.fixture
def store(database_url: str) -> Iterator[Context]:
    """A store without the CalAIM layer (the audit does not need it)."""
    context = build_context(_settings(database_url))
    yield context
    context.repo.engine.dispose()


def _settings(database_url: str) -> Settings:
    return Settings(database_url=database_url, sqlite_synchronous="NORMAL", calaim_enabled=False)


def _stored_events(ctx: Context) -> list[dict[str, Any]]:
    with ctx.repo.connect() as conn:
        bodies = conn.execute(select(resource.c.body).where(resource.c.res_type == "AuditEvent")).scalars()
        return [orjson.loads(body) for body in bodies]


def _logged(ctx: Context) -> int:
    """Accesses in the audit log (materialized or not)."""
    with ctx.repo.connect() as conn:
        return int(conn.execute(select(func.coalesce(func.sum(audit_log_batch.c.count), 0))).scalar_one())


def _entities(events: list[dict[str, Any]]) -> list[str]:
    return sorted(e["what"]["reference"] for event in events for e in event.get("entity", []) if "what" in e)


def test_accesses_are_logged_then_become_audit_events_once(store: Context) -> None:
    trail = AuditTrail(store.repo, flush_interval=60, materialize_interval=3600)
    start = _minute()
    search = AuditRecord(NURSE, "search-type", "Condition", None, None, [("subject", "Patient/p")], 200, start)
    for record in [*_reads(250, start=start), *_reads(1, start=start, status=404), search]:
        trail.record(record)
    trail.write_log()
    assert _logged(store) == 252
    assert audit_log.pending_count(store.repo) == 252
    assert _stored_events(store) == []  # not materialized yet: the log alone is written off the request path

    assert trail.materialize() == 4  # 250 reads (200 + 50 entities), the 404 read, the search
    events = _stored_events(store)
    assert sorted(len(e["entity"]) for e in events) == [1, 1, 50, MAX_ENTITIES]
    assert _entities(events) == sorted([f"Condition/c-{n}" for n in range(250)] + ["Condition/c-0"])
    assert {(e["subtype"][0]["code"], e["outcome"]) for e in events} == {
        ("read", "0"),
        ("read", "4"),
        ("search-type", "0"),
    }
    assert audit_log.pending_count(store.repo) == 0
    assert trail.materialize() == 0  # exactly once
    trail.close()


def test_grouping_is_per_caller_interaction_outcome_and_minute() -> None:
    start = _minute()
    other = Grant(subject="clerk", client_id="app", scope="user/*.rs", token_id="jti-2", expires_at=0)
    records = [
        *_reads(3, start=start),
        *_reads(2, start=start + 60),  # the next minute
        *_reads(2, start=start, caller=other),
        *_reads(1, start=start, status=403),
    ]
    events = audit_events(log_rows(records))
    assert sorted(len(e["entity"]) for e in events) == [1, 2, 2, 3]
    three = next(e for e in events if len(e["entity"]) == 3)
    assert three["period"]["start"] < three["period"]["end"] == three["recorded"]


def test_an_auditor_sees_accesses_at_once(store: Context) -> None:
    store.audit = AuditTrail(store.repo, materialize_interval=3600, flush_interval=60)
    provider = grant("user/*.rs", organization="hn-ccn", name="nurse")
    assert as_grant(store, provider, "GET", "Patient/nobody").status == 404
    auditor = grant("user/AuditEvent.rs", organization="calop", name="auditor")
    for query in ([("entity", "Patient/nobody")], [("patient", "Patient/nobody")], [("altid", "nurse")]):
        found = body_of(as_grant(store, auditor, "GET", "AuditEvent", query=query)).get("entry", [])
        assert [(e["resource"]["outcome"], e["resource"]["outcomeDesc"]) for e in found] == [("4", "HTTP 404")], query
    store.audit.close()


def test_a_crashed_process_accesses_are_materialized_by_the_next(database_url: str) -> None:
    first = build_context(_settings(database_url))
    with first.repo.write() as tx:  # what the crashed process had written to the log
        audit_log.write_rows(tx.conn, log_rows(_reads(30, start=_minute())))
    first.repo.engine.dispose()

    second = build_context(_settings(database_url))
    try:
        assert second.audit is not None
        second.audit.record(_reads(1, start=_minute(), caller=Grant.internal())[0])  # starts its writer
        deadline = time.monotonic() + 30
        while (_logged(second), audit_log.pending_count(second.repo)) != (31, 0) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert audit_log.pending_count(second.repo) == 0
        assert _entities(_stored_events(second)) == sorted([f"Condition/c-{n}" for n in range(30)] + ["Condition/c-0"])
        second.audit.close()
    finally:
        second.repo.engine.dispose()


def test_concurrent_materializers_put_each_access_in_one_event(database_url: str) -> None:
    contexts = [build_context(_settings(database_url)) for _ in range(2)]
    try:
        trails = [AuditTrail(c.repo, materialize_interval=3600, materialize_chunk=50) for c in contexts]
        start = _minute()
        for n, record in enumerate(_reads(1000, start=start)):
            trails[n % 2].record(record)
        for trail in trails:
            trail.write_log()
        workers = [threading.Thread(target=trail.materialize) for trail in trails]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        assert audit_log.pending_count(contexts[0].repo) == 0
        assert _entities(_stored_events(contexts[0])) == sorted(f"Condition/c-{n}" for n in range(1000))
        for trail in trails:
            trail.close()
    finally:
        for context in contexts:
            context.repo.engine.dispose()


def test_materializing_waits_for_log_writes_in_flight(store: Context) -> None:
    """PostgreSQL assigns ids before commit: the materializer must not move its mark past a row of a log
    write still in flight (it would never become an AuditEvent)."""
    if store.repo.sqlite:
        pytest.skip("SQLite has one writer at a time: ids commit in order")
    early = AuditTrail(store.repo, materialize_interval=3600)
    late = AuditTrail(store.repo, materialize_interval=3600)
    start = _minute()
    with store.repo.write() as tx:
        audit_log.write_rows(tx.conn, log_rows(_reads(5, start=start)))  # smaller ids, committed last
        late.record(_reads(1, start=start, caller=Grant.internal())[0])
        late.write_log()  # larger id, committed first
        materializer = threading.Thread(target=early.materialize)
        materializer.start()
        materializer.join(0.5)
        assert materializer.is_alive()  # waits for the write in flight
    materializer.join()
    assert audit_log.pending_count(store.repo) == 0
    assert len(_entities(_stored_events(store))) == 6
    early.close()
    late.close()


def test_close_writes_what_is_queued_and_later_records_at_once(store: Context) -> None:
    trail = AuditTrail(store.repo, flush_interval=60, materialize_interval=3600)
    start = _minute()
    trail.record(_reads(1, start=start)[0])
    trail.close()
    assert _logged(store) == 1
    assert audit_log.pending_count(store.repo) == 0
    trail.record(_reads(1, start=start)[0])
    assert _logged(store) == 2  # after close, a record is written before record returns


def test_a_batch_is_one_row_of_compact_json(store: Context) -> None:
    """The writer puts each batch in one row (the accesses as JSON, each caller once) that reads back as
    exactly the accesses recorded."""
    other = Grant(subject="clerk", client_id="app", scope="user/*.rs", token_id="jti-2", expires_at=0)
    start = _minute()
    search = AuditRecord(other, "search-type", "Condition", None, None, [("subject", "Patient/p")], 200, start)
    records = [*_reads(40, start=start), search, *_reads(3, start=start, status=404)]
    trail = AuditTrail(store.repo, flush_interval=60, materialize_interval=3600)
    for record in records:
        trail.record(record)
    assert trail.write_log() == 44
    with store.repo.connect() as conn:
        rows = conn.execute(select(audit_log_batch.c.recorded, audit_log_batch.c.count, audit_log_batch.c.body)).all()
    assert [(recorded, count) for recorded, count, _ in rows] == [(int(start * 1_000_000), 44)]
    assert len(orjson.loads(rows[0][2])["callers"]) == 2
    assert rows_of_batch(rows[0][2]) == log_rows(records)
    recorded, count, body = log_batch(records)
    assert (recorded, count, rows_of_batch(body)) == (int(start * 1_000_000), 44, log_rows(records))
    assert rows_of_batch(encode_rows(log_rows(records))) == log_rows(records)
    trail.close()


def test_ids_of_batches_rolled_back_do_not_stall_materializing(store: Context) -> None:
    """PostgreSQL's sequence skips the id of a batch write that rolled back: the mark moves past the gap."""
    trail = AuditTrail(store.repo, flush_interval=60, materialize_interval=3600)
    start = _minute()
    with pytest.raises(RuntimeError), store.repo.write() as tx:
        audit_log.write_rows(tx.conn, log_rows(_reads(3, start=start)))
        raise RuntimeError("rolled back")
    for record in _reads(2, start=start):
        trail.record(record)
    trail.write_log()
    assert trail.materialize() == 1
    assert audit_log.pending_count(store.repo) == 0
    assert _entities(_stored_events(store)) == ["Condition/c-0", "Condition/c-1"]
    trail.close()


def _migrate(ctx: Context, revision: str) -> None:
    """Move the store's schema to ``revision`` (Alembic, as ``gateway.store.migrate`` runs it)."""
    with ctx.repo.engine.connect() as connection:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        config.attributes["connection"] = connection
        if revision == "head":
            command.upgrade(config, "head")
        else:
            command.downgrade(config, revision)
        connection.commit()


def test_migration_0010_moves_the_pending_log_rows_into_batches(store: Context) -> None:
    """Upgrading from one row per access (0009) keeps every access not yet materialized, exactly once;
    downgrading puts the pending batches back into rows."""
    start = _minute()
    with store.repo.write() as tx:
        audit_log.write_rows(tx.conn, log_rows(_reads(3, start=start)))
    audit_log.materialize(store.repo)  # c-0..c-2 are AuditEvents
    with store.repo.write() as tx:
        audit_log.write_rows(tx.conn, log_rows(_reads(2, start=start + 60)))  # pending: c-0, c-1 a minute later
    _migrate(store, "0009")
    old_log = Table("audit_log", MetaData(), autoload_with=store.repo.engine)
    with store.repo.engine.begin() as conn:
        assert conn.execute(select(func.count()).select_from(old_log)).scalar_one() == 2
        assert conn.execute(select(audit_log_mark.c.last_id)).scalar_one() == 0
        row = dict(conn.execute(select(old_log).order_by(old_log.c.id)).mappings().first() or {})
        for n in range(2, 5):  # three more accesses logged by the old code, the first already materialized
            conn.execute(insert(old_log).values({**{k: v for k, v in row.items() if k != "id"}, "res_id": f"c-{n}"}))
        conn.execute(update(audit_log_mark).values(last_id=1))
    _migrate(store, "head")
    assert audit_log.pending_count(store.repo) == 4
    assert audit_log.materialize(store.repo) == 1
    assert _entities(_stored_events(store)) == sorted(
        [f"Condition/c-{n}" for n in range(3)] + ["Condition/c-1", "Condition/c-2", "Condition/c-3", "Condition/c-4"]
    )
    assert audit_log.pending_count(store.repo) == 0


def test_a_value_json_cannot_hold_does_not_hold_back_the_log(store: Context) -> None:
    """A lone surrogate in a recorded value is written as ``?``: the batch and every later one are written."""
    trail = AuditTrail(store.repo, flush_interval=60, materialize_interval=3600)
    start = _minute()
    trail.record(AuditRecord(NURSE, "read", "Condition", "c-\ud800", None, [], 404, start))
    trail.record(_reads(1, start=start)[0])
    assert trail.write_log() == 2
    assert trail.materialize() == 2
    assert _entities(_stored_events(store)) == ["Condition/c-0", "Condition/c-?"]
    trail.close()
