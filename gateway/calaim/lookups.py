"""Bulk lookups of stored resources for a chunk of writes (file rows, a batched referral intake): one query
per kind of lookup and chunk instead of one search per row (the import rate of issue 6 depends on it).

They read the search index tables the FHIR search itself reads (``gateway/store/schema.py``: token and
reference rows extracted from the current versions), so they find exactly what ``identifier=`` and
``beneficiary=`` searches would, inside the caller's transaction (its own buffered writes flushed first).
A parameter answered by other parameters' rows (``gateway.search.sources``: Coverage ``patient`` is
``beneficiary``'s rows) is looked up in those, each resource found once.

They run once per chunk or commit group on the hot paths of issues 6 and 7 (the HN file import, the HL7 v2
group commit), where building and compiling a SQLAlchemy statement per call cost more than the query
(1-3 ms under load). So their SQL is compiled once per dialect, kind and IN-list size (sizes padded to a
power of two by repeating the last value, at most ``IN_LIMIT``, so a handful of shapes cover every call)
and runs on the connection's DBAPI cursor (``gateway.store.driver``) inside the caller's transaction; a
connection not in a transaction yet begins one, as SQLAlchemy's autobegin would.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Connection, bindparam, select
from sqlalchemy.sql import Select

from gateway.search.sources import params_for_target, sources
from gateway.store import driver
from gateway.store.repository import StoredResource
from gateway.store.schema import conditional_key, idx_reference, idx_token, resource
from gateway.types import JSONObject

IN_LIMIT = 900
"""Most values bound in one IN list (SQLite allows 999 parameters by default in older builds)."""


@dataclass(frozen=True, slots=True)
class Found:
    """A current resource: its stored row and its JSON."""

    stored: StoredResource
    body: JSONObject


def _size(count: int) -> int:
    """The IN-list size a call of ``count`` values is padded to."""
    size = 8
    while size < count:
        size *= 2
    return min(size, IN_LIMIT)


def _slices(values: Iterable[str]) -> Iterable[list[str]]:
    """``values`` sorted and deduplicated, in slices of at most ``IN_LIMIT``, each padded to its size (the
    padding repeats a value: an IN list matches a value once however often it is listed)."""
    ordered = sorted(set(values))
    for start in range(0, len(ordered), IN_LIMIT):
        part = ordered[start : start + IN_LIMIT]
        yield part + [part[-1]] * (_size(len(part)) - len(part))


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

_SQL: dict[tuple[str, str, int], tuple[str, tuple[str, ...]]] = {}

_INDEXED = {"token": (idx_token, "code", "system"), "reference": (idx_reference, "target_id", "target_type")}
"""Look-ups by an index table: (table, the column of the values looked up, the column fixed by name)."""


def _statement(kind: str, size: int) -> Select[Any]:
    """The query of ``kind`` with ``size`` IN-list parameters ``v0``… and the fixed ones by name."""
    values: list[Any] = [bindparam(f"v{i}") for i in range(size)]
    if kind in _INDEXED:
        table, key, fixed = _INDEXED[kind]
        c = table.c
        return (
            select(c[key], *_COLUMNS)
            .join(resource, resource.c.rid == c.rid)
            .where(
                c.res_type == bindparam("res_type"),
                c.param == bindparam("param"),
                c[fixed] == bindparam(fixed),
                c[key].in_(values),
                resource.c.deleted.is_(False),
            )
            .order_by(resource.c.rid)
        )
    if kind == "id":
        c = resource.c
        return select(*_COLUMNS).where(c.res_type == bindparam("res_type"), c.res_id.in_(values), c.deleted.is_(False))
    k = conditional_key.c
    return select(k.key_hash).where(k.res_type == bindparam("res_type"), k.key_hash.in_(values))


def _fetch(conn: Connection, kind: str, part: list[str], **fixed: str) -> list[tuple[Any, ...]]:
    """Rows of the ``kind`` query for the values ``part`` (a padded slice), in the caller's transaction."""
    key = (conn.dialect.name, kind, len(part))
    compiled = _SQL.get(key)
    if compiled is None:
        compiled = _SQL[key] = driver.compile_positional(conn, _statement(kind, len(part)))
    sql, order = compiled
    bound = {**fixed, **{f"v{i}": value for i, value in enumerate(part)}}
    if not conn.in_transaction():
        conn.begin()  # what SQLAlchemy's autobegin does for a statement it runs: one snapshot for the caller
    return driver.fetch(conn, sql, [bound[name] for name in order])


def by_token(conn: Connection, res_type: str, param: str, system: str, codes: Iterable[str]) -> dict[str, list[Found]]:
    """Current resources of ``res_type`` whose ``param`` token is ``system|code``, by code (oldest first)."""
    out: dict[str, list[Found]] = {}
    stored = tuple(dict.fromkeys(s.param for s in sources(res_type, param)))
    for part in _slices(codes):
        for source in stored:
            for row in _fetch(conn, "token", part, res_type=res_type, param=source, system=system):
                out.setdefault(str(row[0]), []).append(_found(row[1:]))
    return _once(out) if len(stored) > 1 else out


def by_reference(
    conn: Connection, res_type: str, param: str, target_type: str, target_ids: Iterable[str]
) -> dict[str, list[Found]]:
    """Current resources of ``res_type`` whose ``param`` references ``target_type/id``, by target id (oldest first)."""
    out: dict[str, list[Found]] = {}
    stored = params_for_target(res_type, (param,), target_type)
    for part in _slices(target_ids):
        for source in stored:
            for row in _fetch(conn, "reference", part, res_type=res_type, param=source, target_type=target_type):
                out.setdefault(str(row[0]), []).append(_found(row[1:]))
    return _once(out) if len(stored) > 1 else out


def _once(found: dict[str, list[Found]]) -> dict[str, list[Found]]:
    """Each key's resources once, oldest first (a resource found through two stored parameters)."""
    return {
        key: sorted({f.stored.rid: f for f in items}.values(), key=lambda f: f.stored.rid)
        for key, items in found.items()
    }


def by_id(conn: Connection, res_type: str, ids: Iterable[str]) -> dict[str, Found]:
    """Current (not deleted) resources of ``res_type`` by id."""
    out: dict[str, Found] = {}
    for part in _slices(ids):
        for row in _fetch(conn, "id", part, res_type=res_type):
            found = _found(row)
            out[found.stored.res_id] = found
    return out


def held_keys(conn: Connection, res_type: str, keys: Iterable[str]) -> set[str]:
    """The uniqueness keys (``conditional_key.key_hash``) among ``keys`` some ``res_type`` already holds."""
    held: set[str] = set()
    for part in _slices(keys):
        held.update(str(row[0]) for row in _fetch(conn, "key", part, res_type=res_type))
    return held
