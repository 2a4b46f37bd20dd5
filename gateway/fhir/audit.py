"""The audit trail: every access of a caller with a token becomes part of an AuditEvent
(https://hl7.org/fhir/R4/auditevent.html, type ``rest``, subtype from the restful-interaction code system).

Recording must cost the request nothing it can avoid (issue 5: SMART enforcement overhead ≤ 15 %), so it
happens in three steps (docs/access-control.md "Audit"):

1. ``AuditTrail.record`` appends the ``AuditRecord`` (a tuple) to an in-memory deque: no lock, no object
   building beyond the tuple, no I/O.
2. A background thread writes what is queued every ``flush_interval`` seconds (sooner once ``batch``
   records wait) into the append-only audit log, one row of table ``audit_log_batch`` per batch (the
   accesses as compact JSON: ``log_batch``), a batch per transaction (``gateway.fhir.audit_log.write_batch``:
   ~1 µs of the thread's CPU per access, a quarter of what a row per access cost). A crash of the process
   loses at most the records of the last ``flush_interval`` seconds (plus the write in progress); a
   graceful stop writes them all. When ``max_queued`` records wait (the database is away), ``record``
   waits instead of dropping them.
3. The same thread materializes the log into AuditEvents every ``materialize_interval`` seconds
   (``gateway.fhir.audit_log.materialize``): the accesses of one caller with the same interaction and
   outcome within a minute become one AuditEvent (``gateway.fhir.audit_events``), stored, versioned and
   searchable like any resource, each access exactly once whichever process does it. ``flush`` and
   ``catch_up`` materialize at once (the guard calls ``catch_up`` before an auditor reads AuditEvents, so
   they see every access already logged); the guard lets plan auditors only read them, and nobody write them.

What is recorded: who (client id, user or client ``sub``, fhirUser, organization, token jti, launch
patient), what (the interaction, resource type and id, operation, the query string), when, the outcome
(HTTP status), the caller's address. No log line carries any of it (no PHI in logs).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterable
from typing import NamedTuple
from urllib.parse import urlencode

from gateway.auth.grant import Grant
from gateway.fhir import audit_log
from gateway.fhir.audit_events import (
    ACTIONS,
    AUDIT_TYPE,
    CLIENT_ID_SYSTEM,
    INTERACTION_SYSTEM,
    JTI_SYSTEM,
    MAX_ENTITIES,
    SUBTYPES,
    Access,
    Caller,
    LogRow,
    audit_index,
    encode_batch,
)
from gateway.fhir.audit_events import audit_events as events_of_rows
from gateway.settings import Settings
from gateway.store.repository import Repository
from gateway.types import JSONObject, QueryParams

__all__ = [
    "ACTIONS",
    "AUDIT_TYPE",
    "CLIENT_ID_SYSTEM",
    "INTERACTION_SYSTEM",
    "JTI_SYSTEM",
    "MAX_ENTITIES",
    "SUBTYPES",
    "AuditRecord",
    "AuditTrail",
    "RecordFields",
    "audit_events",
    "audit_index",
    "log_batch",
    "log_rows",
]

log = logging.getLogger("gateway.audit")


class AuditRecord(NamedTuple):
    """One guarded interaction (a tuple: building it is the only work the request does for the audit).

    The guard queues a plain tuple of these fields whose caller is ``Grant.audit_caller`` and whose query
    is ``None`` when empty (``gateway.fhir.guard._audit``): then every item is a string, number or
    ``None``, so the garbage collector stops following the queued record at its first collection instead
    of walking every queued record in each older collection (a namedtuple never leaves the collector's
    lists; docs/performance.md "After (session 9)")."""

    grant: Grant | Caller
    """The caller: its grant, or the grant's ``audit_caller``."""
    interaction: str
    resource_type: str | None
    resource_id: str | None
    operation: str | None
    query: QueryParams | None
    status: int
    recorded: float
    """Seconds since the epoch."""
    address: str | None = None


RecordFields = tuple[
    Grant | Caller, str, str | None, str | None, str | None, QueryParams | None, int, float, str | None
]
"""An ``AuditRecord`` or the plain tuple of its fields the guard queues."""


def log_batch(records: Iterable[RecordFields]) -> tuple[int, int, str]:
    """The ``audit_log_batch`` row of ``records``: first access (µs since the epoch), count, and the JSON
    (``gateway.fhir.audit_events.encode_batch``); the grant's columns are read once per grant object."""
    callers: dict[int, int] = {}
    caller_rows: list[Caller] = []
    accesses: list[Access] = []
    append = accesses.append
    for grant, interaction, res_type, res_id, operation, query, status, recorded, address in records:
        caller = callers.get(id(grant))  # ids are stable here: ``records`` keeps every caller alive
        if caller is None:
            caller = callers[id(grant)] = len(caller_rows)
            caller_rows.append(grant.audit_caller if isinstance(grant, Grant) else grant)
        query_text = urlencode(query) if query else None
        append(
            (int(recorded * 1_000_000), caller, interaction, res_type, res_id, operation, query_text, status, address)
        )
    return (accesses[0][0] if accesses else 0), len(accesses), encode_batch(caller_rows, accesses)


def log_rows(records: Iterable[RecordFields]) -> list[LogRow]:
    """The log rows of ``records``, one per access (``gateway.fhir.audit_events.LogRow``: tests, tools)."""
    return [
        (
            int(recorded * 1_000_000),
            *(grant.audit_caller if isinstance(grant, Grant) else grant),
            interaction,
            res_type,
            res_id,
            operation,
            urlencode(query) if query else None,
            status,
            address,
        )
        for grant, interaction, res_type, res_id, operation, query, status, recorded, address in records
    ]


def audit_events(records: list[AuditRecord]) -> list[JSONObject]:
    """The AuditEvents ``records`` become (``gateway.fhir.audit_events.audit_events`` of their log rows)."""
    return events_of_rows(log_rows(records))


class AuditTrail:
    """Queues audit records, writes them to the audit log and materializes AuditEvents from a background
    thread (started by the first record)."""

    def __init__(
        self,
        repo: Repository,
        *,
        flush_interval: float = 0.5,
        batch: int = 5_000,
        max_queued: int = 50_000,
        materialize_interval: float = 60.0,
        materialize_chunk: int = 5_000,
    ) -> None:
        self.repo = repo
        self.flush_interval = flush_interval
        self.batch = batch
        self.max_queued = max_queued
        self.materialize_interval = materialize_interval
        self.materialize_chunk = materialize_chunk
        self._queue: deque[RecordFields] = deque()
        self._limit = 0
        """``record`` takes its slow path once the queue is this long; 0 until the writer runs and after
        ``close`` (then every record is written at once)."""
        self._space = threading.Condition()
        self._wake = threading.Event()
        self._writing = threading.Lock()
        self._materializing = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False

    @classmethod
    def from_settings(cls, repo: Repository, settings: Settings) -> AuditTrail:
        """The trail with the intervals of ``settings`` (``CALAIM_AUDIT_*``)."""
        return cls(
            repo,
            flush_interval=settings.audit_flush_interval_s,
            materialize_interval=settings.audit_materialize_interval_s,
        )

    def record(self, record: RecordFields) -> None:
        """Queue ``record`` (waits while ``max_queued`` records wait for the database)."""
        queue = self._queue
        queue.append(record)  # deque.append is atomic: no lock on the request path
        if len(queue) >= self._limit:
            self._slow_path()

    def queued(self) -> list[RecordFields]:
        """A copy of the records waiting to be written (tests, tools)."""
        return list(self._queue)

    def _slow_path(self) -> None:
        queue = self._queue
        with self._space:
            if self._closed:
                self._limit = 0
            else:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
                    self._thread.start()
                if len(queue) >= self.batch:
                    self._wake.set()
                while len(queue) >= self.max_queued and not self._closed:
                    self._space.wait(0.1)
                self._limit = self.max_queued if len(queue) >= self.batch else self.batch
        if self._closed:
            self.write_log()

    def write_log(self) -> int:
        """Write everything queued now to the audit log (after a write in progress); returns how many
        accesses this call wrote."""
        written = 0
        queue = self._queue
        with self._writing:
            while queue:
                records = [queue.popleft() for _ in range(min(self.batch, len(queue)))]
                try:
                    recorded, count, body = log_batch(records)
                    with self.repo.write() as tx:
                        audit_log.write_batch(tx.conn, recorded, count, body)
                except Exception:
                    queue.extendleft(reversed(records))
                    raise
                written += len(records)
                with self._space:
                    if not self._closed:
                        self._limit = self.batch
                    self._space.notify_all()
        return written

    def materialize(self) -> int:
        """Create the AuditEvents of every access already in the audit log (of any process); returns how
        many AuditEvents this call created."""
        with self._materializing:
            return audit_log.materialize(self.repo, chunk=self.materialize_chunk)

    def catch_up(self) -> int:
        """Make every access recorded so far (in this process) or logged (by any process) searchable as
        AuditEvents: ``write_log`` then ``materialize``. Returns the AuditEvents created."""
        self.write_log()
        return self.materialize()

    def flush(self) -> int:
        """``catch_up``: write what is queued and materialize it (tests, tools, shutdown)."""
        return self.catch_up()

    def close(self) -> None:
        """Stop the writer thread after writing what is queued, and materialize the log."""
        with self._space:
            self._closed = True
            self._limit = 0
            self._space.notify_all()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.flush()

    def _run(self) -> None:
        next_materialize = time.monotonic()  # at start: what a crashed process left unmaterialized
        while True:
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            closed = self._closed
            try:
                self.write_log()
                if not closed and time.monotonic() >= next_materialize:
                    self.materialize()
                    next_materialize = time.monotonic() + self.materialize_interval
            except Exception:  # the database is away: keep the records and retry
                log.exception("writing the audit log failed; retrying")
                time.sleep(self.flush_interval)
            if closed:
                return
