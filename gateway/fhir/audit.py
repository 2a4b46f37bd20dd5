"""The audit trail: every access of a caller with a token becomes part of an AuditEvent
(https://hl7.org/fhir/R4/auditevent.html, type ``rest``, subtype from the restful-interaction code system).

Recording must cost the request nothing it can avoid (issue 5: SMART enforcement overhead ≤ 15 %), so it
happens in three steps (docs/access-control.md "Audit"):

1. ``AuditTrail.record`` appends the ``AuditRecord`` (a tuple) to an in-memory deque: no lock, no object
   building beyond the tuple, no I/O.
2. A background thread writes what is queued every ``flush_interval`` seconds (sooner once ``batch``
   records wait) into the append-only ``audit_log`` table, one narrow row per access, a batch per
   transaction (``gateway.fhir.audit_log.write_values``). A crash of the process loses at most the records
   of the last ``flush_interval`` seconds (plus the write in progress); a graceful stop writes them all.
   When ``max_queued`` records wait (the database is away), ``record`` waits instead of dropping them.
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
from typing import NamedTuple, cast
from urllib.parse import urlencode

from gateway.auth.grant import Grant
from gateway.fhir import audit_log
from gateway.fhir.audit_events import (
    ACTIONS,
    AUDIT_TYPE,
    CLIENT_ID_SYSTEM,
    INTERACTION_SYSTEM,
    JTI_SYSTEM,
    LOG_COLUMNS,
    MAX_ENTITIES,
    SUBTYPES,
    LogRow,
    audit_index,
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
    "audit_events",
    "audit_index",
    "log_rows",
    "log_values",
]

log = logging.getLogger("gateway.audit")


class AuditRecord(NamedTuple):
    """One guarded interaction (a tuple: building it is the only work the request does for the audit)."""

    grant: Grant
    interaction: str
    resource_type: str | None
    resource_id: str | None
    operation: str | None
    query: QueryParams
    status: int
    recorded: float
    """Seconds since the epoch."""
    address: str | None = None


def log_values(records: Iterable[AuditRecord]) -> list[object]:
    """The values of the ``audit_log`` rows of ``records``, flat (``gateway.fhir.audit_log.write_values``);
    the grant's columns are read once per grant object."""
    callers: dict[int, tuple[str, str, str, str | None, str | None, str | None]] = {}
    values: list[object] = []
    extend = values.extend
    for grant, interaction, res_type, res_id, operation, query, status, recorded, address in records:
        caller = callers.get(id(grant))  # ids are stable here: ``records`` keeps every grant alive
        if caller is None:
            caller = (
                grant.client_id,
                grant.subject,
                grant.token_id,
                grant.fhir_user,
                grant.organization,
                grant.patient,
            )
            callers[id(grant)] = caller
        query_text = urlencode(query) if query else None
        extend(
            (int(recorded * 1_000_000), *caller, interaction, res_type, res_id, operation, query_text, status, address)
        )
    return values


def log_rows(records: Iterable[AuditRecord]) -> list[LogRow]:
    """The ``audit_log`` rows of ``records``."""
    values, width = log_values(records), len(LOG_COLUMNS)
    return [cast(LogRow, tuple(values[i : i + width])) for i in range(0, len(values), width)]


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
        self._queue: deque[AuditRecord] = deque()
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

    def record(self, record: AuditRecord) -> None:
        """Queue ``record`` (waits while ``max_queued`` records wait for the database)."""
        queue = self._queue
        queue.append(record)  # deque.append is atomic: no lock on the request path
        if len(queue) >= self._limit:
            self._slow_path()

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
                    with self.repo.write() as tx:
                        audit_log.write_values(tx.conn, log_values(records), len(records))
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
