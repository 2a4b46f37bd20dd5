"""The transactional outbox (DESIGN.md choice 4): what must go out is written with the change that causes it.

- ``enqueue`` inserts an event on the caller's connection, inside the caller's write transaction: the
  event exists if and only if the change committed. A repeated ``(topic, dedupe_key)`` is a no-op
  (``INSERT ... ON CONFLICT DO NOTHING``), so one change never yields two events. ``enqueue_many`` does
  the same for many events in one executemany (batched writes).
- ``claim`` takes due events in one short transaction and stamps a lease on them (``claimed_by``,
  ``claimed_until``). PostgreSQL picks the rows ``FOR UPDATE SKIP LOCKED``, so concurrent claimers neither
  wait for nor share rows; SQLite serializes claimers with ``BEGIN IMMEDIATE``. Either way a live lease
  belongs to exactly one worker (DESIGN.md choice 8).
- ``complete`` / ``fail`` / ``release`` are fenced by the lease: they change the event only while it is
  still claimed by the same worker *and the same claim* (its ``claimed_until`` is the fencing token), so
  a worker whose lease expired and was taken over cannot mark the event delivered or failed.
- Dead letters: the failure that reaches ``max_attempts`` (``CALAIM_OUTBOX_MAX_ATTEMPTS``) parks the event
  instead of scheduling a retry: ``dead_at`` is stamped and ``available_at`` moved to ``PARKED_AT``, so no
  claim takes it again. gateway/store/dead_letters.py lists and requeues dead events; delivered events are
  purged after the retention period by gateway/store/outbox_retention.py (docs/outbox.md).

Guarantees. Delivery is at least once: an event is marked delivered only after ``deliver`` returned, so
an event in flight when its worker crashes is delivered again once the lease expires; receivers dedupe by
a message id (HL7 v2 MSH-10, a file row key). Two live workers never deliver one event at the same time
as long as a delivery finishes within its lease (``OutboxWorker`` starts a delivery only while half the
lease remains). Ordering: events are claimed in id (commit) order and one worker delivers its batch in
that order; there is no order across workers, and an event that failed is retried after later ones.

Time. Every timestamp (microseconds since the epoch) comes from the database server's clock on PostgreSQL,
so instances on hosts with skewed clocks agree on when a lease expires; on SQLite every process shares
the one host, and its clock.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson
from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Connection,
    CursorResult,
    Engine,
    Executable,
    Integer,
    and_,
    bindparam,
    case,
    cast,
    extract,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from gateway import jsonutil
from gateway.store import driver
from gateway.store.database import write_transaction
from gateway.store.schema import outbox
from gateway.types import JSONObject

log = logging.getLogger(__name__)

BACKOFF_BASE_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 300.0
MAX_ERROR_CHARS = 200
MAX_TOPIC_CHARS = 64  # outbox.topic
MAX_DEDUPE_KEY_CHARS = 200  # outbox.dedupe_key
DEFAULT_MAX_ATTEMPTS = 25
"""Failed attempts after which an event is dead (``CALAIM_OUTBOX_MAX_ATTEMPTS``): with the backoff, about
an hour of retrying (9 doublings up to 5 min, then every 5 min), so a receiver's short outage parks nothing."""
PARKED_AT = 2**62
"""``available_at`` of a dead event: never due (microseconds: ~146,000 years from the epoch)."""
_MICROS = 1_000_000
_NEVER = 2**31 - 1  # max_attempts of "retry forever" (an INTEGER on both dialects)
_jitter = random.SystemRandom()  # the stdlib PRNG would do; this one keeps security linters quiet


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    """One claimed event. ``claimed_until`` identifies the claim: it is the fencing token."""

    id: int
    topic: str
    dedupe_key: str | None
    payload: JSONObject
    attempts: int  # failed attempts before this claim
    created_at: int
    claimed_until: int


@dataclass(frozen=True, slots=True)
class TopicStats:
    """Counts of one topic, for health checks and metrics."""

    pending: int  # not yet delivered
    claimed: int  # pending under a live lease (being delivered now)
    retrying: int  # pending after at least one failed attempt
    delivered: int
    oldest_pending_at: int | None  # created_at of the oldest pending event
    dead: int = 0  # parked after max_attempts failures: not pending, waiting for an operator's requeue


class DeliveryFailed(Exception):
    """Raised by a ``deliver`` callback with a short reason that holds no PHI (``"AE: unknown MSH-5"``).

    The reason is stored in ``outbox.last_error``. Any other exception is recorded by its class name only,
    since its message may quote the payload."""


_PG_NOW = cast(extract("epoch", func.statement_timestamp()) * _MICROS, BigInteger)


class _Sql:
    """The statements of one dialect, built once: SQLAlchemy then only binds parameters (building them per
    call took a third of a delivery's CPU time). ``now`` is the server's clock on PostgreSQL and a
    parameter holding ours on SQLite."""

    def __init__(self, dialect: str) -> None:
        self.client_clock = dialect != "postgresql"
        now: ColumnElement[int] = bindparam("now", type_=BigInteger) if self.client_clock else _PG_NOW
        c = outbox.c
        insert = sqlite.insert(outbox) if self.client_clock else postgresql.insert(outbox)
        self.insert = insert.values(
            topic=bindparam("p_topic"),
            dedupe_key=bindparam("p_key"),
            payload=bindparam("p_payload"),
            created_at=now,
            available_at=now,
            attempts=0,
        ).on_conflict_do_nothing(index_elements=[c.topic, c.dedupe_key])
        self.due = (
            select(c.id)
            .where(
                c.topic == bindparam("p_topic"),
                c.delivered_at.is_(None),
                c.dead_at.is_(None),  # also never due (available_at = PARKED_AT): belt and braces
                c.available_at <= now,
                or_(c.claimed_until.is_(None), c.claimed_until < now),
            )
            .order_by(c.id)
            .limit(bindparam("p_limit"))
            .with_for_update(skip_locked=True)  # PostgreSQL; SQLite already holds the database lock
        )
        self.stamp = (
            update(outbox)
            .where(c.id.in_(bindparam("p_ids", expanding=True)))
            .values(claimed_by=bindparam("p_worker"), claimed_until=now + bindparam("p_lease", type_=BigInteger))
            .returning(c.id, c.topic, c.dedupe_key, c.payload, c.attempts, c.created_at, c.claimed_until)
        )
        # Fencing: the same worker and the same claim (its claimed_until), still undelivered.
        ours = update(outbox).where(
            c.id == bindparam("p_id"),
            c.claimed_by == bindparam("p_worker"),
            c.claimed_until == bindparam("p_token"),
            c.delivered_at.is_(None),
        )
        self.complete = ours.values(delivered_at=now, claimed_until=None)
        last_attempt = c.attempts + 1 >= bindparam("p_max", type_=Integer)
        self.fail = ours.values(
            attempts=c.attempts + 1,
            last_error=bindparam("p_error"),
            claimed_by=None,
            claimed_until=None,
            available_at=case(
                (last_attempt, bindparam("p_parked", PARKED_AT, type_=BigInteger)),
                else_=now + bindparam("p_delay", type_=BigInteger),
            ),
            dead_at=case((last_attempt, now), else_=None),
        )
        self.release = ours.values(claimed_by=None, claimed_until=None)
        self.now = now


_SQL = {dialect: _Sql(dialect) for dialect in ("sqlite", "postgresql")}


def _execute(conn: Connection, statement: Executable, params: dict[str, Any]) -> CursorResult[Any]:
    sql = _SQL[conn.dialect.name]
    if sql.client_clock:
        params["now"] = time.time_ns() // 1000
    return conn.execute(statement, params)


@contextmanager
def _write(engine: Engine) -> Iterator[tuple[Connection, _Sql]]:
    """A short write transaction with the statements of its dialect."""
    with write_transaction(engine) as conn:
        yield conn, _SQL[conn.dialect.name]


def enqueue(conn: Connection, *, topic: str, payload: JSONObject, dedupe_key: str | None = None) -> None:
    """Add an event inside the caller's write transaction; a repeated ``(topic, dedupe_key)`` is ignored.

    ``dedupe_key`` names the change (e.g. ``"ServiceRequest/123/_history/2"``); without one every call adds
    an event. The conflict is resolved by the unique key ``uq_outbox_dedupe`` (DESIGN.md choice 3), so it
    holds for concurrent transactions too and never aborts the caller's transaction.
    """
    # SQLite would store longer strings; PostgreSQL would abort the caller's whole transaction.
    if not 0 < len(topic) <= MAX_TOPIC_CHARS:
        raise ValueError(f"outbox topic must be 1-{MAX_TOPIC_CHARS} characters: {topic!r}")
    if dedupe_key is not None and len(dedupe_key) > MAX_DEDUPE_KEY_CHARS:
        raise ValueError(f"outbox dedupe_key longer than {MAX_DEDUPE_KEY_CHARS} characters")
    sql, names, literals = _insert_sql(conn)
    params = {**literals, "p_topic": topic, "p_key": dedupe_key, "p_payload": jsonutil.dumps(payload)}
    params["now"] = _now_micros()
    driver.execute(conn, sql, tuple(params[name] for name in names))


class NewEvent(NamedTuple):
    """An event to enqueue (``enqueue_many``): the arguments of one ``enqueue`` (a tuple: a batched write
    makes five per row of an HN file)."""

    topic: str
    payload: JSONObject
    dedupe_key: str | None = None


def enqueue_many(conn: Connection, events: Sequence[NewEvent]) -> None:
    """``enqueue`` of each of ``events``, in order, in one statement execution (the rows, their order and the
    ``ON CONFLICT DO NOTHING`` of a repeated ``(topic, dedupe_key)`` are those of one ``enqueue`` per event:
    sqlite3 steps ``enqueue``'s prepared statement for each, PostgreSQL inserts them all from arrays in one
    statement, ``_PG_INSERT_ALL``). Used by the batched writes of the workflow
    (``gateway.calaim.referral_batch``, the HN file), where the events of a chunk are five per row. Every
    event is checked before any is written; they share one ``created_at``."""
    if not events:
        return
    for event in events:
        if not 0 < len(event.topic) <= MAX_TOPIC_CHARS:
            raise ValueError(f"outbox topic must be 1-{MAX_TOPIC_CHARS} characters: {event.topic!r}")
        if event.dedupe_key is not None and len(event.dedupe_key) > MAX_DEDUPE_KEY_CHARS:
            raise ValueError(f"outbox dedupe_key longer than {MAX_DEDUPE_KEY_CHARS} characters")
    if conn.dialect.name == "postgresql":
        _enqueue_all_pg(conn, events)
        return
    sql, names, literals = _insert_sql(conn)
    params = {**literals, "now": _now_micros(), "p_topic": None, "p_key": None, "p_payload": None}
    template = [params[name] for name in names]
    at_topic, at_key, at_payload = (names.index(name) for name in ("p_topic", "p_key", "p_payload"))
    rows = []
    last: JSONObject | None = None  # a topic's consumers share one payload object (events.events_of)
    data = b""
    for event in events:
        if event.payload is not last:
            last, data = event.payload, jsonutil.dumps(event.payload)
        row = template.copy()
        row[at_topic], row[at_key], row[at_payload] = event.topic, event.dedupe_key, data
        rows.append(tuple(row))
    driver.executemany(conn, sql, rows)


_PG_INSERT_ALL = (
    "INSERT INTO outbox (topic, dedupe_key, payload, created_at, available_at, attempts) "
    "SELECT e.topic, e.dedupe_key, e.payload, c.stamp, c.stamp, 0 "
    "FROM unnest(%b::varchar[], %b::varchar[], %b::bytea[]) WITH ORDINALITY AS e(topic, dedupe_key, payload, position) "
    "CROSS JOIN (SELECT CAST(EXTRACT(epoch FROM statement_timestamp()) * 1000000 AS BIGINT) AS stamp) AS c "
    "ORDER BY e.position "
    "ON CONFLICT (topic, dedupe_key) DO NOTHING"
)
"""``enqueue_many`` on PostgreSQL: the events as three arrays, inserted by one statement in their order
(ids are drawn as the ordered rows are inserted); a row whose ``(topic, dedupe_key)`` is taken, by an
earlier transaction or an earlier event of the same call, is skipped as ``enqueue`` skips it. One
statement instead of one per event: pipelined, each cost the server ~0.1 ms (parse, bind, executor, the
speculative insert), 1.1 ms per row of an HN file's first import (docs/performance.md)."""


def _enqueue_all_pg(conn: Connection, events: Sequence[NewEvent]) -> None:
    """``enqueue_many`` on PostgreSQL (``_PG_INSERT_ALL``); every event shares the statement's time."""
    topics: list[str] = []
    keys: list[str | None] = []
    payloads: list[bytes] = []
    last: JSONObject | None = None
    data = b""
    for event in events:
        if event.payload is not last:
            last, data = event.payload, jsonutil.dumps(event.payload)
        topics.append(event.topic)
        keys.append(event.dedupe_key)
        payloads.append(data)
    driver.execute(conn, _PG_INSERT_ALL, (topics, keys, payloads))


_INSERT_SQL: dict[str, tuple[str, tuple[str, ...], dict[str, Any]]] = {}


def _insert_sql(conn: Connection) -> tuple[str, tuple[str, ...], dict[str, Any]]:
    """The insert of ``enqueue`` as driver SQL (``gateway.store.driver``: it runs on every write of the
    workflow, where SQLAlchemy's execution cost more than the statement), compiled once per dialect, with
    the values of its literals."""
    found = _INSERT_SQL.get(conn.dialect.name)
    if found is None:
        statement = _SQL[conn.dialect.name].insert
        sql, names = driver.compile_positional(conn, statement)
        found = _INSERT_SQL[conn.dialect.name] = (sql, names, driver.literal_values(conn, statement))
    return found


def _now_micros() -> int:
    return time.time_ns() // 1000


def claim(engine: Engine, *, topic: str, worker_id: str, limit: int, lease_seconds: float) -> list[OutboxEvent]:
    """Lease up to ``limit`` due events of ``topic`` to ``worker_id``, oldest first.

    Due: not delivered, ``available_at`` reached, and never claimed or claimed under an expired lease
    (the claimer crashed or hung). The lease lasts ``lease_seconds`` by the database clock.
    """
    if limit < 1 or lease_seconds <= 0:
        raise ValueError("claim needs limit >= 1 and lease_seconds > 0")
    with _write(engine) as (conn, sql):
        ids = list(_execute(conn, sql.due, {"p_topic": topic, "p_limit": limit}).scalars())
        if not ids:
            return []
        params = {"p_ids": ids, "p_worker": worker_id, "p_lease": int(lease_seconds * _MICROS)}
        rows = _execute(conn, sql.stamp, params).all()
    events = [
        OutboxEvent(r.id, r.topic, r.dedupe_key, orjson.loads(r.payload), r.attempts, r.created_at, r.claimed_until)
        for r in rows
    ]
    events.sort(key=lambda event: event.id)  # RETURNING promises no order
    return events


def _fenced(
    engine: Engine, pick: Callable[[_Sql], Executable], event: OutboxEvent, worker_id: str, **params: Any
) -> bool:
    """Run one of the fenced updates; True when it changed the event (the claim was still ours)."""
    with _write(engine) as (conn, sql):
        params.update(p_id=event.id, p_worker=worker_id, p_token=event.claimed_until)
        return _execute(conn, pick(sql), params).rowcount == 1


def complete(engine: Engine, event: OutboxEvent, worker_id: str) -> bool:
    """Mark ``event`` delivered if this claim is still ours; False when another worker took it over.

    A lease that expired without a takeover still counts: nobody else delivered the event meanwhile, and
    marking it saves a duplicate. ``claimed_by`` is kept as the record of who delivered it.
    """
    return _fenced(engine, lambda sql: sql.complete, event, worker_id)


def fail(
    engine: Engine, event: OutboxEvent, worker_id: str, error: str, *, max_attempts: int | None = DEFAULT_MAX_ATTEMPTS
) -> bool:
    """Record a failed attempt and hand the event back for a retry after a backoff; fenced like ``complete``.

    The failure that makes ``max_attempts`` attempts parks the event as dead instead (``is_last_attempt``);
    ``None`` or 0 retries forever. ``error`` must hold no payload or PHI (a status, a receiver's ack code, an
    exception class name).
    """
    delay = int(backoff_seconds(event.attempts + 1) * _MICROS)
    params = {"p_error": error[:MAX_ERROR_CHARS], "p_delay": delay, "p_max": max_attempts or _NEVER}
    return _fenced(engine, lambda sql: sql.fail, event, worker_id, **params)


def is_last_attempt(event: OutboxEvent, max_attempts: int | None) -> bool:
    """True when failing ``event`` now parks it as dead (its claim's attempt is the last one allowed)."""
    return bool(max_attempts) and event.attempts + 1 >= (max_attempts or _NEVER)


def release(engine: Engine, event: OutboxEvent, worker_id: str) -> bool:
    """Give a claimed event back untried (no attempt counted): any worker may claim it at once."""
    return _fenced(engine, lambda sql: sql.release, event, worker_id)


def backoff_seconds(attempt: int) -> float:
    """Delay before retry number ``attempt`` (1, 2, ...): exponential from 1 s, capped at 5 min, "equal
    jitter" (a uniform draw in the upper half), so failing events of many workers do not retry in step."""
    ceiling = min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2.0 ** min(max(attempt, 1) - 1, 30))
    return ceiling / 2 + _jitter.random() * ceiling / 2


def pending_count(engine: Engine, topic: str) -> int:
    """How many events of ``topic`` are not delivered yet (claimed ones included, dead ones not)."""
    c = outbox.c
    query = select(func.count()).where(c.topic == topic, c.delivered_at.is_(None), c.dead_at.is_(None))
    with engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def stats(engine: Engine) -> dict[str, TopicStats]:
    """Counts per topic (one scan of the outbox: for health checks, not for hot paths)."""
    pending = and_(outbox.c.delivered_at.is_(None), outbox.c.dead_at.is_(None))
    with engine.connect() as conn:
        now = _SQL[conn.dialect.name].now
        query = select(
            outbox.c.topic,
            func.sum(case((pending, 1), else_=0)).label("pending"),
            func.sum(case((and_(pending, outbox.c.claimed_until >= now), 1), else_=0)).label("claimed"),
            func.sum(case((and_(pending, outbox.c.attempts > 0), 1), else_=0)).label("retrying"),
            func.count(outbox.c.delivered_at).label("delivered"),
            func.min(case((pending, outbox.c.created_at), else_=None)).label("oldest"),
            func.count(outbox.c.dead_at).label("dead"),
        ).group_by(outbox.c.topic)
        rows = _execute(conn, query, {}).all()
    return {
        row.topic: TopicStats(
            int(row.pending),
            int(row.claimed),
            int(row.retrying),
            int(row.delivered),
            None if row.oldest is None else int(row.oldest),
            int(row.dead),
        )
        for row in rows
    }


def database_now(conn: Connection) -> int:
    """The outbox clock, in microseconds since the epoch: the server's on PostgreSQL, ours on SQLite."""
    sql = _SQL[conn.dialect.name]
    if sql.client_clock:
        return time.time_ns() // 1000
    return int(conn.execute(select(sql.now)).scalar_one())


def default_worker_id() -> str:
    """``host:pid:random``: unique per worker object, readable in ``outbox.claimed_by``."""
    return f"{socket.gethostname()[:32]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


Deliver = Callable[[OutboxEvent], None]
"""Sends one event to its receiver and returns once the receiver has accepted it; raises on failure."""


class OutboxWorker:
    """Delivers the events of one topic: claim a batch, deliver each in order, complete or fail each.

    ``deliver`` must give up (time out) within ``lease_seconds / 2``: a delivery is started only while at
    least half of the batch's lease remains, and the rest of the batch is handed back, so no event is
    still being delivered when its lease lets another worker take it. The failure that makes
    ``max_attempts`` attempts parks the event as dead and logs it (ids, topic, consumer, attempts and the
    error class: never the payload); ``None`` or 0 retries forever.
    """

    def __init__(
        self,
        engine: Engine,
        topic: str,
        deliver: Deliver,
        *,
        worker_id: str | None = None,
        batch: int = 50,
        lease_seconds: float = 30.0,
        max_attempts: int | None = DEFAULT_MAX_ATTEMPTS,
    ) -> None:
        self.engine = engine
        self.topic = topic
        self.deliver = deliver
        self.worker_id = worker_id or default_worker_id()
        self.batch = batch
        self.lease_seconds = lease_seconds
        self.max_attempts = max_attempts

    def run_once(self) -> int:
        """Claim one batch and work through it; returns how many events were delivered (0: idle or failing)."""
        # The local clock starts before the database stamps the lease, so this deadline is never late.
        start_by = time.monotonic() + self.lease_seconds / 2
        events = claim(
            self.engine, topic=self.topic, worker_id=self.worker_id, limit=self.batch, lease_seconds=self.lease_seconds
        )
        delivered = 0
        for position, event in enumerate(events):
            if time.monotonic() > start_by:
                for rest in events[position:]:
                    release(self.engine, rest, self.worker_id)
                break
            try:
                self.deliver(event)
            except Exception as exc:  # any failure of the receiver is retried; the worker goes on
                reason = str(exc) if isinstance(exc, DeliveryFailed) else type(exc).__name__
                log.warning(
                    "outbox %s: event %d failed (attempt %d): %s", self.topic, event.id, event.attempts + 1, reason
                )
                failed = fail(self.engine, event, self.worker_id, reason, max_attempts=self.max_attempts)
                if failed and is_last_attempt(event, self.max_attempts):
                    _log_dead(event, type(exc).__name__)
                continue
            if complete(self.engine, event, self.worker_id):
                delivered += 1
            else:
                log.warning("outbox %s: event %d was taken over before it was marked delivered", self.topic, event.id)
        return delivered

    def run_forever(self, stop: threading.Event, idle_sleep: float = 1.0) -> None:
        """Deliver until ``stop`` is set, sleeping ``idle_sleep`` whenever a round delivered nothing."""
        while not stop.is_set():
            try:
                delivered = self.run_once()
            except SQLAlchemyError:
                # The database is unreachable or busy: the claimed events come back when their lease ends.
                log.exception("outbox %s: database error, retrying after %.1f s", self.topic, idle_sleep)
                delivered = 0
            if delivered == 0:
                stop.wait(idle_sleep)


def _log_dead(event: OutboxEvent, error_class: str) -> None:
    """One error line per dead event, without PHI: the queue ``topic>consumer`` split, ids and counts."""
    topic, _, consumer = event.topic.partition(">")
    log.error(
        "outbox: event %d is dead after %d attempts (topic %s, consumer %s, last error %s);"
        " requeue it with `calaim-gateway outbox requeue %d`",
        event.id,
        event.attempts + 1,
        topic,
        consumer or "-",
        error_class,
        event.id,
    )
