"""The audit trail: every access of a caller with a token becomes an AuditEvent
(https://hl7.org/fhir/R4/auditevent.html, type ``rest``, subtype from the restful-interaction code system).

Recording must not slow the request down: ``AuditTrail.record`` appends to a bounded in-memory queue,
and a background thread writes the queued records in batches, one transaction each, through the
repository. The accesses of one caller (token) with the same interaction and outcome within a batch
become one AuditEvent with an ``entity`` per access and a ``period`` spanning them: writing an
AuditEvent costs several reads, so one event per read would cost more than the read itself. The events
are stored, versioned and searchable like any resource; the guard lets plan auditors only read them, and
nobody write them. A graceful stop flushes the queue; a crash of the process loses at most the last
``flush_interval`` seconds (docs/access-control.md). When the queue is full, ``record`` waits
for the writer instead of dropping records.

What is recorded: who (client id, user or client ``sub``, fhirUser, organization, token jti), what (the
interaction, resource type and id, operation, the query string), when, the outcome (HTTP status). No log
line carries any of it (no PHI in logs).
"""

from __future__ import annotations

import base64
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlencode

from gateway import jsonutil
from gateway.auth.grant import Grant
from gateway.store.repository import IndexRows, Repository
from gateway.types import JSONObject, QueryParams

log = logging.getLogger("gateway.audit")

AUDIT_TYPE = {
    "system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
    "code": "rest",
    "display": "RESTful Operation",
}
INTERACTION_SYSTEM = "http://hl7.org/fhir/restful-interaction"
CLIENT_ID_SYSTEM = "urn:ietf:params:oauth:client-id"
JTI_SYSTEM = "urn:ietf:params:oauth:jti"
SUBTYPES = {
    "read": "read",
    "vread": "vread",
    "history-instance": "history-instance",
    "history-type": "history-type",
    "history-system": "history-system",
    "search-type": "search-type",
    "search-type-post": "search-type",
    "search-system": "search-system",
    "search-system-post": "search-system",
    "create": "create",
    "update": "update",
    "patch": "patch",
    "delete": "delete",
    "conditional-update": "update",
    "conditional-patch": "patch",
    "conditional-delete": "delete",
    "batch-transaction": "transaction",
    "operation-system": "operation",
    "operation-type": "operation",
    "operation-instance": "operation",
    "capabilities": "capabilities",
}
ACTIONS = {"create": "C", "update": "U", "patch": "U", "delete": "D", "operation": "E", "transaction": "E"}


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One guarded interaction."""

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


MAX_ENTITIES = 200
"""Most accesses one AuditEvent lists (``entity``); more make another event."""


def group_key(record: AuditRecord) -> tuple[object, ...]:
    """Records with the same key become one AuditEvent: one caller (token), interaction, outcome."""
    return (record.grant, SUBTYPES.get(record.interaction, "operation"), record.status, record.address)


def audit_event(records: list[AuditRecord]) -> JSONObject:
    """The AuditEvent of ``records`` (same ``group_key``): each access is an ``entity`` (its resource, or
    the type and query of a search), ``period`` spans them; ``recorded`` is when they were written."""
    first = records[0]
    subtype = SUBTYPES.get(first.interaction, "operation")
    grant = first.grant
    who: JSONObject = (
        {"reference": grant.fhir_user}
        if grant.fhir_user
        else {"identifier": {"system": CLIENT_ID_SYSTEM, "value": grant.client_id}}
    )
    agent: JSONObject = {
        "who": who,
        "altId": grant.subject,
        "requestor": True,
        "policy": [f"{JTI_SYSTEM}:{grant.token_id}"],
    }
    if first.address:
        agent["network"] = {"address": first.address[:64], "type": "2"}
    agents = [
        agent,
        {"who": {"identifier": {"system": CLIENT_ID_SYSTEM, "value": grant.client_id}}, "requestor": False},
    ]
    if grant.organization:
        agents.append({"who": {"reference": f"Organization/{grant.organization}"}, "requestor": False})
    entities = [entity for entity in map(_entity, records) if entity]
    if grant.patient:
        entities.append({"what": {"reference": f"Patient/{grant.patient}"}, "role": {"code": "1"}})
    event: JSONObject = {
        "resourceType": "AuditEvent",
        "type": AUDIT_TYPE,
        "subtype": [{"system": INTERACTION_SYSTEM, "code": subtype}],
        "action": ACTIONS.get(subtype, "R"),
        "period": {
            "start": _instant(min(r.recorded for r in records)),
            "end": _instant(max(r.recorded for r in records)),
        },
        "recorded": _instant(time.time()),
        "outcome": "0" if first.status < 400 else ("4" if first.status < 500 else "8"),
        "outcomeDesc": f"HTTP {first.status}",
        "agent": agents,
        "source": {
            "observer": {"display": "calaim-gateway"},
            "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "3"}],
        },
    }
    if entities:
        event["entity"] = entities
    return event


def _entity(record: AuditRecord) -> JSONObject:
    entity: JSONObject = {}
    if record.resource_type and record.resource_id:
        entity["what"] = {"reference": f"{record.resource_type}/{record.resource_id}"}
    elif record.resource_type:
        entity["name"] = record.resource_type
    if record.operation:
        entity["description"] = record.operation[:64]
    if record.query:
        entity["query"] = base64.b64encode(urlencode(record.query).encode()).decode()
    return entity


def _instant(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")


def audit_events(records: list[AuditRecord]) -> list[JSONObject]:
    """The AuditEvents of ``records``: one per ``group_key`` and at most ``MAX_ENTITIES`` accesses each."""
    groups: dict[tuple[object, ...], list[AuditRecord]] = {}
    for record in records:
        groups.setdefault(group_key(record), []).append(record)
    return [
        audit_event(group[i : i + MAX_ENTITIES])
        for group in groups.values()
        for i in range(0, len(group), MAX_ENTITIES)
    ]


def audit_index(event: JSONObject, indexer: Callable[[JSONObject], IndexRows]) -> IndexRows:
    """The search-index rows of an AuditEvent made by ``audit_event``, as ``indexer`` would give them.

    Evaluating the AuditEvent search parameters' FHIRPath for each of up to 200 accesses costs more than
    the access itself; only ``entity.what`` differs between them. So the indexer runs on the event with
    its entities reduced to their distinct other parts, and the ``entity`` and ``patient`` reference
    rows of each ``what`` are added directly (tests/access/test_audit_index.py checks the result equals
    the indexer's on the whole event)."""
    others: dict[bytes, JSONObject] = {}
    targets: list[tuple[str, str]] = []
    for entity in event.get("entity", ()):
        rest = {k: v for k, v in entity.items() if k != "what"}
        if rest:
            others.setdefault(jsonutil.dumps(rest), rest)
        reference = (entity.get("what") or {}).get("reference", "")
        res_type, _, res_id = reference.partition("/")
        if res_id:
            targets.append((res_type, res_id))
    rows = indexer({**event, "entity": list(others.values())} if others else _without_entities(event))
    references = rows.setdefault("reference", [])
    seen = {(r["param"], r["target_type"], r["target_id"]) for r in references if r["param"] in TARGET_PARAMS}
    for res_type, res_id in targets:
        for param in ("entity", "patient") if res_type == "Patient" else ("entity",):
            if (param, res_type, res_id) not in seen:
                seen.add((param, res_type, res_id))
                references.append({**EMPTY_REFERENCE, "param": param, "target_type": res_type, "target_id": res_id})
    return rows


TARGET_PARAMS = frozenset({"entity", "patient"})
EMPTY_REFERENCE = {"url": None, "identifier_system": None, "identifier_value": None}


def _without_entities(event: JSONObject) -> JSONObject:
    return {k: v for k, v in event.items() if k != "entity"}


class AuditTrail:
    """Queues audit records and writes them as AuditEvents from a background thread."""

    def __init__(
        self, repo: Repository, *, flush_interval: float = 0.5, batch: int = 500, max_queued: int = 20_000
    ) -> None:
        self.repo = repo
        self.indexer = repo.indexer
        self.flush_interval = flush_interval
        self.batch = batch
        self.max_queued = max_queued
        self._queue: deque[AuditRecord] = deque()
        self._lock = threading.Condition()
        self._writing = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False

    def record(self, record: AuditRecord) -> None:
        """Queue ``record`` (waits while the queue is full)."""
        with self._lock:
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
                self._thread.start()
            while len(self._queue) >= self.max_queued and not self._closed:
                self._lock.wait(0.1)
            self._queue.append(record)
            if len(self._queue) >= self.batch:
                self._lock.notify_all()
        if self._closed:
            self.flush()

    def flush(self) -> int:
        """Write everything queued now (and wait for a write in progress); returns how many AuditEvents
        this call wrote."""
        written = 0
        with self._writing:
            while True:
                with self._lock:
                    records = [self._queue.popleft() for _ in range(min(self.batch, len(self._queue)))]
                    self._lock.notify_all()
                if not records:
                    return written
                self._write(records)
                written += len(records)

    def close(self) -> None:
        """Stop the writer thread after writing what is queued."""
        with self._lock:
            self._closed = True
            self._lock.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.flush()

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._queue and not self._closed:
                    self._lock.wait(self.flush_interval)
                closed = self._closed
            try:
                self.flush()
            except Exception:  # the database is away: keep the records and retry
                log.exception("writing audit events failed; retrying")
                time.sleep(self.flush_interval)
            if closed:
                return

    def _write(self, records: list[AuditRecord]) -> None:
        try:
            with self.repo.write() as tx:
                for event in audit_events(records):
                    tx.create(event, res_id=uuid.uuid4().hex, method="POST", index=audit_index(event, self.indexer))
        except Exception:
            with self._lock:
                self._queue.extendleft(reversed(records))
            raise
