"""AuditEvents built from rows of the audit log (https://hl7.org/fhir/R4/auditevent.html, type ``rest``,
subtype from the restful-interaction code system); pure functions, no I/O.

A ``LogRow`` is one access of the audit log (``gateway.fhir.audit_log``), flat. The accesses
of one caller (token) with the same interaction and outcome within one minute become one AuditEvent with
an ``entity`` per access (at most ``MAX_ENTITIES``) and a ``period`` spanning them: writing an AuditEvent
costs several reads, so one event per read would cost more than the read itself. The grouping depends on
the rows alone, so whichever process materializes them, and whenever, the events are the same (up to
their ids and where a materialization run cut a minute in two).

The log stores accesses in batches (table ``audit_log_batch``, one row per batch the writer flushes):
``encode_batch`` writes a batch's accesses as compact JSON, each caller's six columns once
(``{"callers": [[client id, subject, jti, fhirUser, organization, patient], ...], "accesses": [[recorded,
caller index, interaction, type, id, operation, query, status, address], ...]}``), and ``rows_of_batch``
reads one back into the rows ``grouped`` makes the AuditEvents' groups of. A report straight from the
database can unnest it with the dialect's JSON functions (``json_each`` on SQLite, ``json_array_elements``
on PostgreSQL).
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any

import orjson

from gateway import jsonutil
from gateway.store.repository import IndexRows
from gateway.types import JSONObject

LogRow = tuple[
    int,
    str,
    str,
    str,
    str | None,
    str | None,
    str | None,
    str,
    str | None,
    str | None,
    str | None,
    str | None,
    int,
    str | None,
]
"""One access: recorded (µs since the epoch), client id, subject, token jti, fhirUser, organization, launch
patient, interaction (route name), resource type, resource id, operation, query (urlencoded), HTTP status,
caller address (the columns of the former one-row-per-access ``audit_log``, in this order)."""

AUDIT_TYPE = {
    "system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
    "code": "rest",
    "display": "RESTful Operation",
}
INTERACTION_SYSTEM = "http://hl7.org/fhir/restful-interaction"
CLIENT_ID_SYSTEM = "urn:ietf:params:oauth:client-id"
JTI_SYSTEM = "urn:ietf:params:oauth:jti"
SOURCE = {
    "observer": {"display": "calaim-gateway"},
    "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "3"}],
}
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

MAX_ENTITIES = 200
"""Most accesses one AuditEvent lists (``entity``); more make another event."""
GROUP_MICROS = 60_000_000
"""Accesses are grouped per minute (of their ``recorded`` time, UTC)."""


GroupKey = tuple[str, str, str, str | None, str | None, str | None, str, int, str | None, int]
"""client id, subject, token jti, fhirUser, organization, launch patient, subtype, HTTP status, address, minute."""
Entry = Sequence[Any]
"""One access of a group: recorded (µs), resource type, resource id, operation, query (``LogRow`` 0, 8-11)."""


def group_key(row: LogRow) -> GroupKey:
    """Rows with the same key become one AuditEvent: one caller (token), interaction, outcome, address
    and minute."""
    return (*row[1:7], SUBTYPES.get(row[7], "operation"), row[12], row[13], row[0] // GROUP_MICROS)


def grouped(rows: Iterable[LogRow]) -> dict[GroupKey, list[Entry]]:
    """The accesses of ``rows`` by ``group_key`` (the log's batches: ``grouped`` of their ``rows_of_batch``)."""
    groups: dict[GroupKey, list[Entry]] = {}
    for row in rows:
        entry = (row[0], row[8], row[9], row[10], row[11])
        key = group_key(row)
        found = groups.get(key)
        if found is None:
            groups[key] = [entry]
        else:
            found.append(entry)
    return groups


Caller = tuple[str, str, str, str | None, str | None, str | None]
"""client id, subject, token jti, fhirUser, organization, launch patient (``LogRow`` 1-6)."""
Access = tuple[int, int, str, str | None, str | None, str | None, str | None, int, str | None]
"""One access of a batch: recorded (µs), index of its caller in the batch, interaction, resource type,
resource id, operation, query, HTTP status, address."""


def encode_batch(callers: Sequence[Caller], accesses: Sequence[Access]) -> str:
    """The JSON text of a batch of the audit log (``audit_log_batch.body``). A string JSON cannot hold (a
    lone surrogate) is written with ``?`` in its place: a batch that cannot be written would hold back
    every later access."""
    batch = {"callers": callers, "accesses": accesses}
    try:
        return orjson.dumps(batch).decode()
    except orjson.JSONEncodeError:
        return orjson.dumps(_valid_text(batch)).decode()


def _valid_text(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode()
    if isinstance(value, dict):
        return {key: _valid_text(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_valid_text(item) for item in value]
    return value


def encode_rows(rows: Sequence[LogRow]) -> str:
    """``encode_batch`` of log rows (tests, tools: the writer encodes its records directly)."""
    callers: dict[Caller, int] = {}
    accesses: list[Access] = []
    for recorded, *caller, interaction, res_type, res_id, operation, query, status, address in rows:
        index = callers.setdefault(tuple(caller), len(callers))  # type: ignore[arg-type]
        accesses.append((recorded, index, interaction, res_type, res_id, operation, query, status, address))
    return encode_batch(list(callers), accesses)


def rows_of_batch(body: str | bytes) -> list[LogRow]:
    """The log rows of a batch's JSON text (reports, tests)."""
    decoded = orjson.loads(body)
    callers = decoded["callers"]
    return [
        (recorded, *callers[caller], interaction, res_type, res_id, operation, query, status, address)
        for recorded, caller, interaction, res_type, res_id, operation, query, status, address in decoded["accesses"]
    ]


def events_of_groups(groups: Mapping[GroupKey, Sequence[Entry]]) -> list[JSONObject]:
    """One AuditEvent per group and ``MAX_ENTITIES`` accesses (in time order)."""
    events: list[JSONObject] = []
    for key, entries in groups.items():
        ordered = sorted(entries, key=_recorded)
        events.extend(audit_event(key, ordered[i : i + MAX_ENTITIES]) for i in range(0, len(ordered), MAX_ENTITIES))
    return events


def audit_events(rows: Iterable[LogRow]) -> list[JSONObject]:
    """The AuditEvents of ``rows``: one per ``group_key`` and at most ``MAX_ENTITIES`` accesses each."""
    return events_of_groups(grouped(rows))


def audit_event(key: GroupKey, entries: Sequence[Entry]) -> JSONObject:
    """The AuditEvent of the accesses ``entries`` of the group ``key``: each access is an ``entity`` (its
    resource, or the type and query of a search), ``period`` spans them, ``recorded`` is the last access's
    time (so date searches find accesses at their time, not at when the event was materialized)."""
    client_id, subject, token_id, fhir_user, organization, patient, subtype, status, address, _ = key
    who: JSONObject = (
        {"reference": fhir_user} if fhir_user else {"identifier": {"system": CLIENT_ID_SYSTEM, "value": client_id}}
    )
    agent: JSONObject = {"who": who, "altId": subject, "requestor": True, "policy": [f"{JTI_SYSTEM}:{token_id}"]}
    if address:
        agent["network"] = {"address": address[:64], "type": "2"}
    agents = [agent, {"who": {"identifier": {"system": CLIENT_ID_SYSTEM, "value": client_id}}, "requestor": False}]
    if organization:
        agents.append({"who": {"reference": f"Organization/{organization}"}, "requestor": False})
    entities = [entity for entity in map(_entity, entries) if entity]
    if patient:
        entities.append({"what": {"reference": f"Patient/{patient}"}, "role": {"code": "1"}})
    end = _instant(max(entry[0] for entry in entries))
    event: JSONObject = {
        "resourceType": "AuditEvent",
        "type": AUDIT_TYPE,
        "subtype": [{"system": INTERACTION_SYSTEM, "code": subtype}],
        "action": ACTIONS.get(subtype, "R"),
        "period": {"start": _instant(min(entry[0] for entry in entries)), "end": end},
        "recorded": end,
        "outcome": "0" if status < 400 else ("4" if status < 500 else "8"),
        "outcomeDesc": f"HTTP {status}",
        "agent": agents,
        "source": SOURCE,
    }
    if entities:
        event["entity"] = entities
    return event


def _entity(entry: Entry) -> JSONObject:
    _, res_type, res_id, operation, query = entry
    if res_id and res_type and not operation and not query:  # a read: the common case
        return {"what": {"reference": f"{res_type}/{res_id}"}}
    entity: JSONObject = {}
    if res_type and res_id:
        entity["what"] = {"reference": f"{res_type}/{res_id}"}
    elif res_type:
        entity["name"] = res_type
    if operation:
        entity["description"] = operation[:64]
    if query:
        entity["query"] = base64.b64encode(query.encode()).decode()
    return entity


_recorded = itemgetter(0)


def _instant(micros: int) -> str:
    return datetime.fromtimestamp(micros / 1_000_000, UTC).isoformat(timespec="milliseconds")


def audit_index(event: JSONObject, indexer: Callable[[JSONObject], IndexRows]) -> IndexRows:
    """The search-index rows of an AuditEvent made by ``audit_event``, as ``indexer`` would give them.

    Evaluating the AuditEvent search parameters' FHIRPath for each of up to 200 accesses costs more than
    the access itself; only ``entity.what`` differs between them. So the indexer runs on the event with
    its entities reduced to their distinct other parts, and the ``entity`` and ``patient`` reference
    rows of each ``what`` are added directly (tests/access/test_audit_index.py checks the result equals
    the indexer's on the whole event)."""
    others: dict[bytes, JSONObject] = {}
    targets: dict[str, None] = {}  # distinct references, in order (a read's entity is ``what`` alone)
    for entity in event.get("entity", ()):
        what = entity.get("what")
        if what is None or len(entity) > 1:
            rest = {k: v for k, v in entity.items() if k != "what"}
            others.setdefault(jsonutil.dumps(rest), rest)
        if what is not None:
            targets[what.get("reference", "")] = None
    rows = dict(indexer({**event, "entity": list(others.values())} if others else _without_entities(event)))
    references = list(rows.get("reference", ()))
    seen = {(r[0], r[1], r[2]) for r in references if r[0] in TARGET_PARAMS}
    for target in targets:
        res_type, _, res_id = target.partition("/")
        if not res_id:
            continue
        for param in ("entity", "patient") if res_type == "Patient" else ("entity",):
            if (param, res_type, res_id) not in seen:
                seen.add((param, res_type, res_id))
                references.append((param, res_type, res_id, None, None, None))  # no url, identifier
    rows["reference"] = references
    return rows


TARGET_PARAMS = frozenset({"entity", "patient"})


def _without_entities(event: JSONObject) -> JSONObject:
    return {k: v for k, v in event.items() if k != "entity"}
