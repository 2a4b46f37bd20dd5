"""Bulk lookups of stored resources for a chunk of writes (file rows, a batched referral intake): one query
per kind of lookup and chunk instead of one search per row (the import rate of issue 6 depends on it).

They read the search index tables the FHIR search itself reads (``gateway/store/schema.py``: token and
reference rows extracted from the current versions), so they find exactly what ``identifier=`` and
``beneficiary=`` searches would, inside the caller's transaction (its own buffered writes flushed first).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Column, ColumnElement, Connection, Table, select

from gateway.store.repository import StoredResource
from gateway.store.schema import idx_reference, idx_token, resource
from gateway.types import JSONObject

IN_LIMIT = 900
"""Most values bound in one IN list (SQLite allows 999 parameters by default in older builds)."""


@dataclass(frozen=True, slots=True)
class Found:
    """A current resource: its stored row and its JSON."""

    stored: StoredResource
    body: JSONObject


def _slices(values: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(values), IN_LIMIT):
        yield values[start : start + IN_LIMIT]


def _found(row: Sequence[Any]) -> Found:
    rid, res_type, res_id, version_id, last_updated, body = row
    data = bytes(body)
    stored = StoredResource(int(rid), str(res_type), str(res_id), int(version_id), int(last_updated), False, data)
    return Found(stored, orjson.loads(data))


_COLUMNS = (
    resource.c.rid,
    resource.c.res_type,
    resource.c.res_id,
    resource.c.version_id,
    resource.c.last_updated,
    resource.c.body,
)


def by_token(conn: Connection, res_type: str, param: str, system: str, codes: Iterable[str]) -> dict[str, list[Found]]:
    """Current resources of ``res_type`` whose ``param`` token is ``system|code``, by code."""
    t = idx_token
    return _by_index(conn, t, t.c.code, codes, t.c.res_type == res_type, t.c.param == param, t.c.system == system)


def by_reference(
    conn: Connection, res_type: str, param: str, target_type: str, target_ids: Iterable[str]
) -> dict[str, list[Found]]:
    """Current resources of ``res_type`` whose ``param`` references ``target_type/id``, by target id (oldest first)."""
    t = idx_reference
    conditions = (t.c.res_type == res_type, t.c.param == param, t.c.target_type == target_type)
    return _by_index(conn, t, t.c.target_id, target_ids, *conditions)


def _by_index(
    conn: Connection, table: Table, key: Column[Any], values: Iterable[str], *conditions: ColumnElement[bool]
) -> dict[str, list[Found]]:
    """Current resources with an index row of ``table`` meeting ``conditions`` whose ``key`` column is one of
    ``values``, by that value (oldest first); one query per slice of values."""
    out: dict[str, list[Found]] = {}
    for part in _slices(sorted(set(values))):
        query = (
            select(key, *_COLUMNS)
            .join(resource, resource.c.rid == table.c.rid)
            .where(*conditions, key.in_(part), resource.c.deleted.is_(False))
            .order_by(resource.c.rid)
        )
        for row in conn.execute(query):
            out.setdefault(str(row[0]), []).append(_found(row[1:]))
    return out


def by_id(conn: Connection, res_type: str, ids: Iterable[str]) -> dict[str, Found]:
    """Current (not deleted) resources of ``res_type`` by id."""
    wanted = sorted(set(ids))
    out: dict[str, Found] = {}
    for part in _slices(wanted):
        query = select(*_COLUMNS).where(
            resource.c.res_type == res_type, resource.c.res_id.in_(part), resource.c.deleted.is_(False)
        )
        for row in conn.execute(query):
            found = _found(row)
            out[found.stored.res_id] = found
    return out
