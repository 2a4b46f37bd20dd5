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
from sqlalchemy import func, select

from gateway.auth.grant import Grant
from gateway.fhir import audit_log
from gateway.fhir.audit import AuditRecord, AuditTrail, log_rows
from gateway.fhir.audit_events import MAX_ENTITIES, audit_events
from gateway.fhir.context import Context
from gateway.fhir.core import build_context
from gateway.settings import Settings
from gateway.store.schema import audit_log as audit_log_table
from gateway.store.schema import resource
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
    with ctx.repo.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(audit_log_table)).scalar_one())


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
