"""Hand-written SQL for the six search shapes of the benchmark, on the gateway's index tables.

Each answers the first page (20, ordered by row id like the gateway's default) and splices the
stored bytes into a searchset Bundle. They know exactly one query shape each, which is what makes
them the limit; the gateway must parse any query and build its SQL.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson

from gateway.store.date_spans import SPAN_BOUNDS, SPAN_CLASSES, TOP_CLASS

PAGE = 20
DAY = 86_400_000_000
"""A day in microseconds."""


@dataclass
class BareQuery:
    """A search request: type and query pairs; ``shape`` is the type plus the sorted parameter names."""

    res_type: str
    params: list[tuple[str, str]] = field(default_factory=list)

    @property
    def shape(self) -> str:
        """E.g. ``Patient?identifier``, ``Task?_include&patient``."""
        return self.res_type + "?" + "&".join(sorted({name for name, _ in self.params}))

    def first(self, name: str) -> str:
        """The first value of ``name``."""
        return next(value for key, value in self.params if key == name)

    def all(self, name: str) -> list[str]:
        """Every value of ``name``."""
        return [value for key, value in self.params if key == name]


def _token(value: str) -> tuple[str, str]:
    system, _, code = value.rpartition("|")
    return system, code


def day_micros(day: str) -> int:
    moment = datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC)
    return int(moment.timestamp()) * 1_000_000


def bundle(conn: sqlite3.Connection, base: str, matches: list[int], included: list[int], total: int | None) -> bytes:
    wanted = matches + included
    bodies: dict[int, tuple[str, str, bytes]] = {}
    if wanted:
        marks = ",".join("?" * len(wanted))
        sql = f"SELECT rid, res_type, res_id, body FROM resource WHERE rid IN ({marks})"
        bodies = {rid: (t, i, b) for rid, t, i, b in conn.execute(sql, wanted)}
    entries = []
    for rids, mode in ((matches, b"match"), (included, b"include")):
        for rid in rids:
            res_type, res_id, body = bodies[rid]
            entries.append(
                b'{"fullUrl":"'
                + f"{base}/{res_type}/{res_id}".encode()
                + b'","resource":'
                + body
                + b',"search":{"mode":"'
                + mode
                + b'"}}'
            )
    head: dict[str, object] = {"resourceType": "Bundle", "type": "searchset"}
    if total is not None:
        head["total"] = total
    return orjson.dumps(head)[:-1] + b',"entry":[' + b",".join(entries) + b"]}"


def first_page(conn: sqlite3.Connection, sql: str, args: tuple[object, ...]) -> tuple[list[int], int | None]:
    """The first page of the row ids ``sql`` selects (column ``rid``), live resources only, by row id."""
    page = (
        f"SELECT DISTINCT m.rid FROM ({sql}) AS m JOIN resource AS r ON r.rid = m.rid "
        f"WHERE r.deleted = 0 ORDER BY m.rid LIMIT {PAGE + 1}"
    )
    rids = [row[0] for row in conn.execute(page, args)]
    return rids[:PAGE], (len(rids) if len(rids) <= PAGE else None)


def first_page_in(conn: sqlite3.Connection, sql: str, args: tuple[object, ...]) -> tuple[list[int], int | None]:
    """``first_page`` for many matches: ``rid IN (sql)`` in ``rid`` order lets SQLite stop after the page
    (21 primary-key look-ups) where the join of ``first_page`` looks up every match first (3x faster for
    the ~250 matches of a one-week window at 100k resources)."""
    page = f"SELECT rid FROM resource WHERE deleted = 0 AND rid IN ({sql}) ORDER BY rid LIMIT {PAGE + 1}"
    rids = [row[0] for row in conn.execute(page, args)]
    return rids[:PAGE], (len(rids) if len(rids) <= PAGE else None)


def identifier(conn: sqlite3.Connection, q: BareQuery, base: str) -> bytes:
    """``Patient?identifier=system|code``."""
    system, code = _token(q.first("identifier"))
    sql = "SELECT rid FROM idx_token WHERE res_type = ? AND param = 'identifier' AND code = ? AND system = ?"
    rids, total = first_page(conn, sql, (q.res_type, code, system))
    return bundle(conn, base, rids, [], total)


def subject(conn: sqlite3.Connection, q: BareQuery, base: str) -> bytes:
    """``ServiceRequest?subject=Patient/id``."""
    target_type, _, target_id = q.first("subject").partition("/")
    sql = "SELECT rid FROM idx_reference WHERE res_type = ? AND param = 'subject' AND target_id = ? AND target_type = ?"
    rids, total = first_page(conn, sql, (q.res_type, target_id, target_type))
    return bundle(conn, base, rids, [], total)


def date_range(conn: sqlite3.Connection, q: BareQuery, base: str) -> bytes:
    """``Encounter?date=geA&date=ltB`` (days), with the prefixes of https://hl7.org/fhir/R4/search.html#prefix:
    ``ge`` = ends after day A or starts on/after it; ``lt`` = starts before day B.

    The best plan on this schema, the gateway's own (``gateway/search/date_ranges.py``): one range scan
    of ``(res_type, param, span_class, low)`` per span class, the start bounded above by ``B`` and below by
    ``A``, or by the end of day A minus the longest span of the class when that is earlier
    (``gateway/store/date_spans.py``); the page in ``rid`` order as the gateway reads it."""
    values = q.all("date")
    low = day_micros(next(v[2:] for v in values if v.startswith("ge")))
    high = day_micros(next(v[2:] for v in values if v.startswith("lt")))
    day_end = low + DAY - 1
    branches: list[str] = []
    args: list[object] = []
    for k in SPAN_CLASSES:
        scan = "AND low >= ? " if k < TOP_CLASS else ""
        branches.append(
            f"SELECT rid FROM idx_date WHERE res_type = ? AND param = 'date' AND span_class = {k} {scan}"
            "AND low < ? AND (high > ? OR +low >= ?)"
        )
        args += [q.res_type, *([min(low, day_end + 1 - SPAN_BOUNDS[k])] if k < TOP_CLASS else []), high, day_end, low]
    rids, total = first_page_in(conn, " UNION ALL ".join(branches), tuple(args))
    return bundle(conn, base, rids, [], total)


def family(conn: sqlite3.Connection, q: BareQuery, base: str) -> bytes:
    """``Patient?family=prefix`` (ASCII data: lower-casing is the gateway's folding)."""
    prefix = q.first("family").lower()
    upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    sql = "SELECT rid FROM idx_string WHERE res_type = ? AND param = 'family' AND value >= ? AND value < ?"
    rids, total = first_page(conn, sql, (q.res_type, prefix, upper))
    return bundle(conn, base, rids, [], total)


def chained(conn: sqlite3.Connection, q: BareQuery, base: str) -> bytes:
    """``ServiceRequest?subject:Patient.identifier=system|code``."""
    system, code = _token(q.first("subject:Patient.identifier"))
    sql = (
        "SELECT ref.rid AS rid FROM idx_token t JOIN resource p ON p.rid = t.rid AND p.deleted = 0 "
        "JOIN idx_reference ref ON ref.res_type = ? AND ref.param = 'subject' AND ref.target_type = 'Patient' "
        "AND ref.target_id = p.res_id WHERE t.res_type = 'Patient' AND t.param = 'identifier' AND t.code = ? "
        "AND t.system = ?"
    )
    rids, total = first_page(conn, sql, (q.res_type, code, system))
    return bundle(conn, base, rids, [], total)


def include(conn: sqlite3.Connection, q: BareQuery, base: str) -> bytes:
    """``Task?patient=Patient/id&_include=Task:focus``."""
    _, _, target_id = q.first("patient").partition("/")
    # ``patient`` is ``subject``'s rows pointing at a Patient (gateway/search/sources.py, session 12)
    sql = "SELECT rid FROM idx_reference WHERE res_type = ? AND param = 'subject' AND target_id = ?"
    rids, total = first_page(conn, sql + " AND target_type = 'Patient'", (q.res_type, target_id))
    included: list[int] = []
    if rids:
        marks = ",".join("?" * len(rids))
        inc_sql = (
            "SELECT DISTINCT r.rid FROM idx_reference ref JOIN resource r ON r.res_type = ref.target_type "
            f"AND r.res_id = ref.target_id AND r.deleted = 0 WHERE ref.rid IN ({marks}) AND ref.param = 'focus'"
        )
        included = [row[0] for row in conn.execute(inc_sql, rids) if row[0] not in rids]
    return bundle(conn, base, rids, included, total)


SHAPES: dict[str, Callable[[sqlite3.Connection, BareQuery, str], bytes]] = {
    "Patient?identifier": identifier,
    "ServiceRequest?subject": subject,
    "Encounter?date": date_range,
    "Patient?family": family,
    "ServiceRequest?subject:Patient.identifier": chained,
    "Task?_include&patient": include,
}
"""Search shape (type + sorted parameter names) → its hand-written answer."""
