"""Dead letters of the outbox: events parked after ``CALAIM_OUTBOX_MAX_ATTEMPTS`` failed attempts (docs/outbox.md).

An event whose delivery keeps failing (the receiver rejects it, a reference cannot be read) is not retried
forever: the failure that reaches the limit stamps ``dead_at`` and moves ``available_at`` to
``PARKED_AT`` (gateway/store/outbox.py ``fail``), so no worker claims it again and it is never purged
(only delivered events are). An operator lists dead events (``calaim-gateway outbox dead``) and, once the
cause is fixed, requeues them (``calaim-gateway outbox requeue``): the same row, the same id, so the
receiver's dedupe by message id (MSH-10 ``RRI`` + id, a file's event list) still holds, and a requeued
event is delivered once like any other (DESIGN.md choice 4).

Listings never show payloads (they may hold PHI): id, queue, dedupe key (``Type/id/_history/n``),
attempts, the last error (a status or an error class) and the times.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Engine, func, select, update

from gateway.store.database import write_transaction
from gateway.store.outbox import database_now
from gateway.store.schema import outbox

REQUEUE_CHUNK = 500


@dataclass(frozen=True, slots=True)
class DeadEvent:
    """A dead event as an operator sees it (no payload)."""

    id: int
    topic: str
    dedupe_key: str | None
    attempts: int
    last_error: str | None
    created_at: int  # microseconds since the epoch
    dead_at: int


def list_dead(engine: Engine, *, topic: str | None = None, after_id: int = 0, limit: int = 100) -> list[DeadEvent]:
    """Dead events (of ``topic``, or all), oldest id first, ``limit`` at a time after ``after_id``."""
    c = outbox.c
    query = (
        select(c.id, c.topic, c.dedupe_key, c.attempts, c.last_error, c.created_at, c.dead_at)
        .where(c.dead_at.is_not(None), c.id > after_id)  # the predicate of the partial index ix_outbox_dead
        .order_by(c.id)
        .limit(limit)
    )
    if topic is not None:
        query = query.where(c.topic == topic)
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    return [DeadEvent(r.id, r.topic, r.dedupe_key, r.attempts, r.last_error, r.created_at, r.dead_at) for r in rows]


def dead_count(engine: Engine, *, topic: str | None = None) -> int:
    """How many events are dead (of ``topic``, or all)."""
    query = select(func.count()).where(outbox.c.dead_at.is_not(None))
    if topic is not None:
        query = query.where(outbox.c.topic == topic)
    with engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def requeue(engine: Engine, ids: Sequence[int]) -> int:
    """Make the dead events ``ids`` due again, with a fresh count of attempts; returns how many were dead.

    Ids that are not dead (unknown, pending, delivered, already requeued) are left alone, so running the
    same requeue twice, or two operators at once, hands each event to the workers once. ``last_error`` is
    kept until the next attempt overwrites it.
    """
    c = outbox.c
    changed = 0
    for start in range(0, len(ids), REQUEUE_CHUNK):
        part = list(ids[start : start + REQUEUE_CHUNK])
        with write_transaction(engine) as conn:
            statement = (
                update(outbox)
                .where(c.id.in_(part), c.dead_at.is_not(None), c.delivered_at.is_(None))
                .values(dead_at=None, attempts=0, available_at=database_now(conn), claimed_by=None, claimed_until=None)
            )
            changed += conn.execute(statement).rowcount
    return changed


def requeue_topic(engine: Engine, topic: str) -> int:
    """Requeue every dead event of ``topic`` (``requeue --all --topic``); returns how many."""
    return requeue(engine, list(_dead_ids(engine, topic)))


def _dead_ids(engine: Engine, topic: str | None) -> list[int]:
    c = outbox.c
    query = select(c.id).where(c.dead_at.is_not(None)).order_by(c.id)
    if topic is not None:
        query = query.where(c.topic == topic)
    with engine.connect() as conn:
        return list(conn.execute(query).scalars())
