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

PAGE = 20


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


def _day_micros(day: str) -> int:
    moment = datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC)
    return int(moment.timestamp()) * 1_000_000


def _bundle(conn: sqlite3.Connection, base: str, matches: list[int], included: list[int], total: int | None) -> bytes:
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


def _page(conn: sqlite3.Connection, sql: str, args: tuple[object, ...]) -> tuple[list[int], int | None]:
    """The first page of the row ids ``sql`` selects (column ``rid``), live resources only, by row id."""
    page = (
        f"SELECT DISTINCT m.rid FROM ({sql}) AS m JOIN resource AS r ON r.rid = m.rid "
        f"WHERE r.deleted = 0 ORDER BY m.rid LIMIT {PAGE + 1}"
    )
    rids = [row[0] for row in conn.execute(page, args)]
    return rids[:PAGE], (len(rids) if len(rids) <= PAGE else None)


def identifier(conn: sqlite3.Connection, q: BareQuery, base: str) -> bytes:
    """``Patient?identifier=system|code``."""
    system, code = _token(q.first("identifier"))
    sql = "SELECT rid FROM idx_token WHERE res_type = ? AND param = 'identifier' AND code = ? AND system = ?"
    rids, total = _page(conn, sql, (q.res_type, code, system))
    return _bundle(conn, base, rids, [], total)


def subject(conn: sqlite3.Connection, q: BareQuery, base: str) -> bytes:
    """``ServiceRequest?subject=Patient/id``."""
    target_type, _, target_id = q.first("subject").partition("/")
    sql = "SELECT rid FROM idx_reference WHERE res_type = ? AND param = 'subject' AND target_id = ? AND target_type = ?"
    rids, total = _page(conn, sql, (q.res_type, target_id, target_type))
    return _bundle(conn, base, rids, [], total)


def date_range(conn: sqlite3.Connection, q: BareQuery, base: str) -> bytes:
    """``Encounter?date=geA&date=ltB`` (days), with the prefixes of https://hl7.org/fhir/R4/search.html#prefix:
    ``ge`` = ends after day A or starts on/after it; ``lt`` = starts before day B."""
    values = q.all("date")
    low = _day_micros(next(v[2:] for v in values if v.startswith("ge")))
    high = _day_micros(next(v[2:] for v in values if v.startswith("lt")))
    day_end = low + 86_400_000_000 - 1
    sql = "SELECT rid FROM idx_date WHERE res_type = ? AND param = 'date' AND (high > ? OR low >= ?) AND low < ?"
    rids, total = _page(conn, sql, (q.res_type, day_end, low, high))
    return _bundle(conn, base, rids, [], total)


def family(conn: sqlite3.Connection, q: BareQuery, base: str) -> bytes:
    """``Patient?family=prefix`` (ASCII data: lower-casing is the gateway's folding)."""
    prefix = q.first("family").lower()
    upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    sql = "SELECT rid FROM idx_string WHERE res_type = ? AND param = 'family' AND value >= ? AND value < ?"
    rids, total = _page(conn, sql, (q.res_type, prefix, upper))
    return _bundle(conn, base, rids, [], total)


def chained(conn: sqlite3.Connection, q: BareQuery, base: str) -> bytes:
    """``ServiceRequest?subject:Patient.identifier=system|code``."""
    system, code = _token(q.first("subject:Patient.identifier"))
    sql = (
        "SELECT ref.rid AS rid FROM idx_token t JOIN resource p ON p.rid = t.rid AND p.deleted = 0 "
        "JOIN idx_reference ref ON ref.res_type = ? AND ref.param = 'subject' AND ref.target_type = 'Patient' "
        "AND ref.target_id = p.res_id WHERE t.res_type = 'Patient' AND t.param = 'identifier' AND t.code = ? "
        "AND t.system = ?"
    )
    rids, total = _page(conn, sql, (q.res_type, code, system))
    return _bundle(conn, base, rids, [], total)


def include(conn: sqlite3.Connection, q: BareQuery, base: str) -> bytes:
    """``Task?patient=Patient/id&_include=Task:focus``."""
    _, _, target_id = q.first("patient").partition("/")
    sql = "SELECT rid FROM idx_reference WHERE res_type = ? AND param = 'patient' AND target_id = ?"
    rids, total = _page(conn, sql + " AND target_type = 'Patient'", (q.res_type, target_id))
    included: list[int] = []
    if rids:
        marks = ",".join("?" * len(rids))
        inc_sql = (
            "SELECT DISTINCT r.rid FROM idx_reference ref JOIN resource r ON r.res_type = ref.target_type "
            f"AND r.res_id = ref.target_id AND r.deleted = 0 WHERE ref.rid IN ({marks}) AND ref.param = 'focus'"
        )
        included = [row[0] for row in conn.execute(inc_sql, rids) if row[0] not in rids]
    return _bundle(conn, base, rids, included, total)


SHAPES: dict[str, Callable[[sqlite3.Connection, BareQuery, str], bytes]] = {
    "Patient?identifier": identifier,
    "ServiceRequest?subject": subject,
    "Encounter?date": date_range,
    "Patient?family": family,
    "ServiceRequest?subject:Patient.identifier": chained,
    "Task?_include&patient": include,
}
"""Search shape (type + sorted parameter names) → its hand-written answer."""
