"""The set-based look-ups of a group commit (``adapters.hl7v2.batch``): which member identifiers, county
referral ids, uniqueness keys and message keys of a group the store already has, one query each for the
whole group.

They run on the commit thread once per group, so their SQL is compiled once per dialect and IN-list size
(sizes padded to a power of two by repeating a value, so a handful of shapes cover every group) and run
on the connection's DBAPI cursor (``gateway.store.driver``), as ``adapters.hl7v2.messagelog`` does.

They only decide which messages the group writes itself: a value found (even in an index row of a resource
deleted since, which the FHIR search would not match) sends that message to the per-message path, which
searches as the FHIR core does. So a look-up here may over-report, never under-report.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Connection, bindparam, select

from gateway.store import driver
from gateway.store.schema import conditional_key, hl7v2_message, idx_token

_MAX_IN = 512
"""Most values bound in one IN list; longer lists take several queries."""

_SQL: dict[tuple[str, str, int], tuple[str, tuple[str, ...]]] = {}


def _size(count: int) -> int:
    size = 8
    while size < count:
        size *= 2
    return size


def _chunks(values: Iterable[str]) -> Iterable[list[str]]:
    ordered = sorted(set(values))
    for start in range(0, len(ordered), _MAX_IN):
        part = ordered[start : start + _MAX_IN]
        yield part + [part[-1]] * (_size(len(part)) - len(part))


def _compiled(conn: Connection, name: str, size: int) -> tuple[str, tuple[str, ...]]:
    key = (conn.dialect.name, name, size)
    found = _SQL.get(key)
    if found is None:
        values: list[Any] = [bindparam(f"v{i}") for i in range(size)]
        statement: Any
        if name == "token":
            t = idx_token.c
            statement = select(t.system, t.code).where(
                t.res_type == bindparam("res_type"), t.param == bindparam("param"), t.code.in_(values)
            )
        elif name == "key":
            k = conditional_key.c
            statement = select(k.key_hash).where(k.res_type == bindparam("res_type"), k.key_hash.in_(values))
        else:
            m = hl7v2_message.c
            statement = select(m.control_id).where(
                m.direction == bindparam("res_type"), m.sender == bindparam("sender"), m.control_id.in_(values)
            )
        found = _SQL[key] = driver.compile_positional(conn, statement)
    return found


def _fetch(conn: Connection, name: str, part: Sequence[str], **fixed: str) -> list[tuple[Any, ...]]:
    sql, order = _compiled(conn, name, len(part))
    bound = {**fixed, **{f"v{i}": value for i, value in enumerate(part)}}
    return driver.fetch(conn, sql, [bound[n] for n in order])


def identifiers(conn: Connection, res_type: str, pairs: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
    """The (system, value) pairs some ``res_type`` has an ``identifier`` index row for."""
    wanted = set(pairs)
    found: set[tuple[str, str]] = set()
    for part in _chunks(value for _, value in wanted):
        rows = _fetch(conn, "token", part, res_type=res_type, param="identifier")
        found.update(pair for pair in ((str(r[0]), str(r[1])) for r in rows) if pair in wanted)
    return found


def held_keys(conn: Connection, keys: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
    """The uniqueness keys (res_type, key_hash) among ``keys`` some resource holds."""
    wanted = set(keys)
    found: set[tuple[str, str]] = set()
    for res_type in sorted({t for t, _ in wanted}):
        for part in _chunks(key for t, key in wanted if t == res_type):
            found.update((res_type, str(r[0])) for r in _fetch(conn, "key", part, res_type=res_type))
    return found & wanted


def logged(conn: Connection, direction: str, keys: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
    """The message keys (sender, control id) among ``keys`` the message log has a row for."""
    wanted = set(keys)
    found: set[tuple[str, str]] = set()
    for sender in sorted({s for s, _ in wanted}):
        for part in _chunks(control for s, control in wanted if s == sender):
            rows = _fetch(conn, "logged", part, res_type=direction, sender=sender)
            found.update((sender, str(r[0])) for r in rows)
    return found & wanted
