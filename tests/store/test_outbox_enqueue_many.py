"""``outbox.enqueue_many`` (gateway/store/outbox.py), on SQLite and PostgreSQL: the rows, their order and
the dedupe of one ``enqueue`` per event, in one executemany inside the caller's transaction."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from sqlalchemy import Engine, select

from gateway.fhir.context import Context
from gateway.store.outbox import MAX_DEDUPE_KEY_CHARS, NewEvent, enqueue, enqueue_many
from gateway.store.schema import outbox, resource
from tests.conftest import patient

EVENTS = [
    NewEvent("t.one", {"v": 1}, "ServiceRequest/1/_history/1"),
    NewEvent("t.one", {"v": 2}, "ServiceRequest/1/_history/1"),  # repeated key: ignored
    NewEvent("t.two", {"v": 3}, "ServiceRequest/1/_history/1"),  # same key, other topic: kept
    NewEvent("t.one", {"v": 4}),  # no key: never deduplicated
    NewEvent("t.one", {"v": 5}),
    NewEvent("t.one", {"v": 6}, "Task/9/_history/2"),
]


def _rows(engine: Engine) -> list[tuple[Any, ...]]:
    """Every outbox row as the delivery sees it, in id order (timestamps left out)."""
    c = outbox.c
    query = select(c.topic, c.dedupe_key, c.payload, c.attempts, c.delivered_at, c.claimed_by, c.dead_at)
    with engine.connect() as conn:
        return [(*row[:2], orjson.loads(row[2]), *row[3:]) for row in conn.execute(query.order_by(c.id))]


def test_enqueue_many_writes_what_one_enqueue_per_event_writes(engine: Engine) -> None:
    with engine.begin() as conn:
        enqueue_many(conn, EVENTS)
        enqueue_many(conn, EVENTS[:1])  # later in the same transaction: a no-op
    with engine.begin() as conn:
        enqueue_many(conn, [NewEvent("t.one", {"v": 7}, "Task/9/_history/2"), NewEvent("t.two", {"v": 8})])
    many = _rows(engine)
    # the reference: the same events through enqueue, one by one, in an emptied outbox
    with engine.begin() as conn:
        conn.execute(outbox.delete())
    with engine.begin() as conn:
        for event in EVENTS:
            enqueue(conn, topic=event.topic, payload=event.payload, dedupe_key=event.dedupe_key)
        enqueue(conn, topic="t.one", payload={"v": 1}, dedupe_key="ServiceRequest/1/_history/1")
    with engine.begin() as conn:
        enqueue(conn, topic="t.one", payload={"v": 7}, dedupe_key="Task/9/_history/2")
        enqueue(conn, topic="t.two", payload={"v": 8})
    assert many == _rows(engine)
    assert [row[2]["v"] for row in many] == [1, 3, 4, 5, 6, 8]


def test_enqueue_many_commits_and_rolls_back_with_the_change(ctx: Context) -> None:
    with pytest.raises(RuntimeError), ctx.repo.write() as tx:
        tx.create(patient())
        enqueue_many(tx.conn, EVENTS)
        raise RuntimeError("the change fails after its events were written")
    assert _rows(ctx.repo.engine) == []
    with ctx.repo.write() as tx:
        tx.create(patient())
        enqueue_many(tx.conn, EVENTS)
        enqueue_many(tx.conn, [])
    assert len(_rows(ctx.repo.engine)) == 5
    with ctx.repo.engine.connect() as conn:
        assert len(conn.execute(select(resource.c.rid)).all()) == 1


def test_enqueue_many_checks_every_event_before_writing_any(engine: Engine) -> None:
    too_long = NewEvent("t.one", {"v": 2}, "k" * (MAX_DEDUPE_KEY_CHARS + 1))
    for bad in (too_long, NewEvent("", {"v": 2}), NewEvent("t" * 65, {"v": 2})):
        with engine.begin() as conn, pytest.raises(ValueError):
            enqueue_many(conn, [NewEvent("t.one", {"v": 1}), bad])
    assert _rows(engine) == []


def test_enqueue_many_keeps_the_order_and_dedupe_of_a_large_batch(engine: Engine) -> None:
    """Thousands of events (a chunk of an HN file: one statement from arrays on PostgreSQL), consumers
    sharing one payload object, repeated keys interleaved, keyless events: the rows of one ``enqueue``
    per event, in the same order."""
    events: list[NewEvent] = []
    for i in range(1500):
        shared = {"v": i, "text": "x" * (i % 7)}
        events += [
            NewEvent("t.a>files", shared, f"Task/{i}/_history/1"),
            NewEvent("t.a>hl7v2", shared, f"Task/{i}/_history/1"),
        ]
        if i % 5 == 0:
            events.append(NewEvent("t.a>files", {"v": -i}, f"Task/{i // 2}/_history/1"))  # taken: skipped
        if i % 11 == 0:
            events.append(NewEvent("t.b", {"v": i}))
    with engine.begin() as conn:
        enqueue_many(conn, events)
    many = _rows(engine)
    with engine.begin() as conn:
        conn.execute(outbox.delete())
    with engine.begin() as conn:
        for event in events:
            enqueue(conn, topic=event.topic, payload=event.payload, dedupe_key=event.dedupe_key)
    assert many == _rows(engine)
    assert len(many) == 3000 + len(range(0, 1500, 11))
