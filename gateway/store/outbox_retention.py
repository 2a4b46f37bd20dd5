"""Outbox retention: delivered events older than ``CALAIM_OUTBOX_RETENTION_DAYS`` are deleted (docs/outbox.md).

What is purged: events with ``delivered_at`` before the cutoff (now minus the retention, by the outbox
clock: the server's on PostgreSQL). What is never purged:

- events not delivered: pending, claimed (under a lease) or dead (gateway/store/dead_letters.py);
- events carried by an outbound file not yet written (``file_outbound_event`` of a ``file_outbound`` whose
  status is not ``written``): a crash between recording such a file and writing it rewrites the file from
  these events' payloads (adapters/files/exports.py). Once the file is written its event list stays as the
  record of what it carried; the ids it names may then be gone from ``outbox``;
- the newest event of the table: SQLite gives a new row ``max(id) + 1``, so deleting the newest event would
  hand its id out again, and ids are what receivers dedupe on (MSH-10 ``RRI`` + id) and what the file
  ledger remembers. PostgreSQL's identity never reuses ids; the rule costs one row there.

``hl7v2_message.outbox_id`` is kept as it is: the message log holds the RRI itself (bytes, ACK, status), so
it needs nothing from the event and outlives it; the id becomes a plain record of which event it was.

How, without blocking writers: in id order (the primary key; ids grow with time, so the scan stops at the
first event created after the cutoff), ``batch`` ids per short write transaction, each a single
``DELETE`` whose rows are picked ``FOR UPDATE SKIP LOCKED`` on PostgreSQL (a row some transaction holds is
skipped, never waited for) and under ``BEGIN IMMEDIATE`` on SQLite, with a pause between batches so queued
writers take the database lock in between. One instance purges at a time: ``RetentionJob`` holds the lease
``outbox-retention`` (gateway/store/leases.py) and stops when it can no longer renew it.

After the retention period a change's dedupe key (``Type/id/_history/n``) is forgotten with its event:
enqueueing the same key again adds a new event. Units of work are retried within minutes, not months.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import BigInteger, BindParameter, Connection, Delete, Engine, bindparam, delete, exists, func, select

from gateway.store.database import write_transaction
from gateway.store.leases import Lease
from gateway.store.outbox import database_now
from gateway.store.schema import file_outbound, file_outbound_event, outbox

log = logging.getLogger(__name__)

LEASE_NAME = "outbox-retention"
DEFAULT_BATCH = 500
DEFAULT_PAUSE_SECONDS = 0.05
DAY_SECONDS = 86_400
_MICROS = 1_000_000
WRITTEN = "written"  # file_outbound.status of a finished file (adapters/files/ledger.py WRITTEN)


@dataclass(frozen=True, slots=True)
class PurgeResult:
    """What one purge did."""

    deleted: int
    batches: int
    complete: bool  # False: stopped early (lease lost, ``max_batches`` reached)


def _param(name: str) -> BindParameter[int]:
    return bindparam(name, type_=BigInteger)


def _purge_statement(dialect: str) -> Delete:
    """``DELETE`` the purgeable events with ids in ``(p_after, p_last]`` (see the module docstring)."""
    candidate = outbox.alias("candidate")
    c = candidate.c
    in_unwritten_file = exists().where(
        file_outbound_event.c.outbox_id == c.id,
        file_outbound.c.id == file_outbound_event.c.file_id,
        file_outbound.c.status != WRITTEN,
    )
    picked = select(c.id).where(
        c.id > _param("p_after"),
        c.id <= _param("p_last"),
        c.id < _param("p_newest"),
        c.delivered_at.is_not(None),
        c.delivered_at < _param("p_cutoff"),
        ~in_unwritten_file,
    )
    if dialect == "postgresql":
        picked = picked.with_for_update(of=candidate, skip_locked=True)
    return delete(outbox).where(outbox.c.id.in_(picked.scalar_subquery()))


_PURGE = {dialect: _purge_statement(dialect) for dialect in ("sqlite", "postgresql")}
_WINDOW = select(outbox.c.id, outbox.c.created_at).where(outbox.c.id > _param("p_after")).order_by(outbox.c.id)


def cutoff_of(conn: Connection, older_than_seconds: float) -> int:
    """The purge cutoff (outbox clock, microseconds): events delivered before it are old enough."""
    return database_now(conn) - int(older_than_seconds * _MICROS)


def purge(
    engine: Engine,
    *,
    older_than_seconds: float,
    batch: int = DEFAULT_BATCH,
    pause_seconds: float = DEFAULT_PAUSE_SECONDS,
    max_batches: int | None = None,
    keep_going: Callable[[], bool] = lambda: True,
) -> PurgeResult:
    """Delete the events delivered more than ``older_than_seconds`` ago, ``batch`` ids per transaction.

    Safe beside workers, writers and another purge (each batch re-checks every condition in its ``DELETE``);
    run it under ``RetentionJob`` so that only one instance spends the effort. ``keep_going`` is asked
    before each batch (a lease renewal); ``max_batches`` bounds one call.
    """
    if batch < 1 or older_than_seconds < 0:
        raise ValueError("purge needs batch >= 1 and older_than_seconds >= 0")
    with engine.connect() as conn:
        cutoff = cutoff_of(conn, older_than_seconds)
        newest = conn.execute(select(func.max(outbox.c.id))).scalar()
    if newest is None:
        return PurgeResult(0, 0, True)
    deleted = batches = 0
    after = 0
    while max_batches is None or batches < max_batches:
        if batches and pause_seconds:
            time.sleep(pause_seconds)  # SQLite: let the writers queued on the database lock in
        if not keep_going():
            return PurgeResult(deleted, batches, False)
        with engine.connect() as conn:
            window = conn.execute(_WINDOW.limit(batch), {"p_after": after}).all()
        if not window:
            return PurgeResult(deleted, batches, True)
        last = int(window[-1].id)
        with write_transaction(engine) as conn:
            params = {"p_after": after, "p_last": last, "p_newest": int(newest), "p_cutoff": cutoff}
            deleted += conn.execute(_PURGE[conn.dialect.name], params).rowcount
        batches += 1
        # Ids grow with time: past the first event created after the cutoff nothing is old enough.
        if len(window) < batch or any(row.created_at >= cutoff for row in window):
            return PurgeResult(deleted, batches, True)
        after = last
    return PurgeResult(deleted, batches, False)


class RetentionJob:
    """One purge at a time across every instance: the lease ``outbox-retention`` held during the purge."""

    def __init__(
        self,
        engine: Engine,
        *,
        retention_days: float,
        batch: int = DEFAULT_BATCH,
        pause_seconds: float = DEFAULT_PAUSE_SECONDS,
        lease_ttl_seconds: float = 60.0,
        holder: str | None = None,
    ) -> None:
        self.engine = engine
        self.retention_seconds = retention_days * DAY_SECONDS
        self.batch = batch
        self.pause_seconds = pause_seconds
        self.lease = Lease(engine, LEASE_NAME, holder=holder, ttl_seconds=lease_ttl_seconds)

    def run_once(
        self, *, max_batches: int | None = None, keep_going: Callable[[], bool] = lambda: True
    ) -> PurgeResult | None:
        """Purge under the lease; None when another instance holds it (it is purging now).

        The purge stops early when the lease cannot be renewed or ``keep_going`` (a stop flag) says so."""
        if not self.lease.acquire():
            return None
        renewed = time.monotonic()
        renew_every = self.lease.ttl_seconds / 3

        def still_ours() -> bool:
            nonlocal renewed
            if not keep_going():
                return False
            if time.monotonic() - renewed < renew_every:
                return self.lease.held
            renewed = time.monotonic()
            return self.lease.renew()

        try:
            result = purge(
                self.engine,
                older_than_seconds=self.retention_seconds,
                batch=self.batch,
                pause_seconds=self.pause_seconds,
                max_batches=max_batches,
                keep_going=still_ours,
            )
        finally:
            self.lease.release()
        if result.deleted:
            log.info("outbox retention: %d delivered events purged in %d batches", result.deleted, result.batches)
        return result
