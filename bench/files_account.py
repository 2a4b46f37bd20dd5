"""What a first-import row writes, row by row (issue 6; docs/files.md "What a first-import row writes").

``bench.files --account`` prints it after the first import: every row the import added to the store
(the rows above the high-water marks ``bench.files_floor`` takes before the import), per table, resource
type and search parameter, divided by the file's rows, with what each index row has in common with the
others:

- **repeats** ``other``: for every resource of the type, the parameter's rows (text-only token rows aside)
  carry exactly the values of ``other``'s rows: a search on either could be answered from one set of
  rows. The structural repeats (ServiceRequest ``service`` = ``code``, ``patient`` = ``subject`` pointing
  at a Patient) are no longer written since session 12 (``gateway.search.sources``). Found in the data, so it
  names coincidences of the bench's data too (an HN that is its own member's ECM provider: ``requester``
  and ``performer``); docs/files.md tells the structural ones apart;
- **text only**: a token row without system and code (a CodeableConcept's ``text``), and **of which the
  same text is on a coded row**: the parameter's coded row of the same resource already holds that text,
  so a ``:text`` search finds the same resources without it;
- versions **superseded in the import**: a version the same import also wrote a later version of (the
  Task created, then moved by the decision: ``WriteTransaction.create_history``; its index rows are the
  last version's only).

Counts only: no value is printed (the bench's data is synthetic anyway).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.files_floor import Marks, _connect, _sqlite_tables, pg_rows_above

Written = dict[str, list[dict[str, Any]]]
"""Per table, the rows the import added, each as a dict of its columns."""

INDEX_KEY = ("rid", "res_type", "param")
"""The columns of an index row that are not its values."""


def sqlite_written(path: Path, marks: Marks) -> Written:
    """The rows of each table of the SQLite store at ``path`` above ``marks`` (rowid), as dicts."""
    out: Written = {}
    with _connect(path) as conn:
        for table in _sqlite_tables(conn):
            columns = [r[1] for r in conn.execute(f'PRAGMA table_xinfo("{table}")') if r[6] == 0]
            listed = ", ".join(f'"{c}"' for c in columns)
            sql = f'SELECT {listed} FROM "{table}" WHERE rowid > ? ORDER BY rowid'
            rows = [dict(zip(columns, row, strict=True)) for row in conn.execute(sql, (marks.get(table, 0),))]
            if rows:
                out[table] = rows
    return out


def pg_written(url: str, marks: Marks) -> Written:
    """The rows of each table of the PostgreSQL store at ``url`` above ``marks`` (``rid``, else ``id``; a
    keyless table whole when it was empty before), as dicts."""
    return {
        table: [dict(zip(columns, row, strict=True)) for row in rows]
        for table, (columns, rows) in pg_rows_above(url, marks).items()
    }


@dataclass(frozen=True, slots=True)
class Line:
    """One line of the account: ``count`` rows per file row of ``table`` (for ``res_type`` and ``what``:
    the search parameter, or the version and method), and what they have in common with other rows."""

    table: str
    res_type: str
    what: str
    count: float
    note: str = ""


def account(written: Written, file_rows: int) -> list[Line]:
    """The account of ``written`` (module docstring), per file row of an import of ``file_rows`` rows."""
    lines: list[Line] = []
    for table in sorted(written):
        rows = written[table]
        if table.startswith("idx_") and table != "idx_member":
            lines += _index_lines(table, rows, file_rows)
        elif table == "resource_version":
            lines += _version_lines(rows, file_rows)
        elif "res_type" in rows[0]:
            for res_type, n in sorted(Counter(r["res_type"] for r in rows).items()):
                lines.append(Line(table, res_type, "", n / file_rows))
        elif table == "outbox":
            for topic, n in sorted(Counter(r["topic"] for r in rows).items()):
                lines.append(Line(table, "", topic, n / file_rows))
        else:
            lines.append(Line(table, "", "", len(rows) / file_rows))
    return lines


def _values(row: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(v for k, v in row.items() if k not in INDEX_KEY)


def _index_lines(table: str, rows: list[dict[str, Any]], file_rows: int) -> list[Line]:
    """Per (type, parameter): rows per file row, repeats of another parameter, text-only rows."""
    by_param: dict[tuple[str, str], dict[Any, set[tuple[Any, ...]]]] = defaultdict(lambda: defaultdict(set))
    counts: Counter[tuple[str, str]] = Counter()
    texts: dict[tuple[Any, str], set[Any]] = defaultdict(set)  # (rid, param) -> texts of coded rows
    text_only: list[dict[str, Any]] = []
    for row in rows:
        key = (row["res_type"], row["param"])
        counts[key] += 1
        if table == "idx_token" and row["system"] is None and row["code"] is None:
            text_only.append(row)  # compared apart (below), not as a repeat
            continue
        by_param[key][row["rid"]].add(_values(row))
        if table == "idx_token" and row["text"]:
            texts[(row["rid"], row["param"])].add(row["text"])
    notes: dict[tuple[str, str], list[str]] = defaultdict(list)
    for key, per_rid in by_param.items():
        twins = [
            other[1]
            for other, others in by_param.items()
            if other[0] == key[0] and other[1] < key[1] and others == per_rid
        ]
        if twins:
            notes[key].append(f"repeats {', '.join(twins)}")
    only = Counter((r["res_type"], r["param"]) for r in text_only)
    same = Counter((r["res_type"], r["param"]) for r in text_only if r["text"] in texts[(r["rid"], r["param"])])
    for key, n in only.items():
        notes[key].append(f"{n / file_rows:g} text only, {same[key] / file_rows:g} of them the text of a coded row")
    return [
        Line(table, res_type, param, n / file_rows, "; ".join(notes[(res_type, param)]))
        for (res_type, param), n in sorted(counts.items())
    ]


def _version_lines(rows: list[dict[str, Any]], file_rows: int) -> list[Line]:
    """Per (type, version, method): rows per file row, and how many were superseded within the import."""
    last: dict[Any, int] = {}
    for row in rows:
        last[row["rid"]] = max(last.get(row["rid"], 0), int(row["version_id"]))
    counts: Counter[tuple[str, int, str]] = Counter()
    superseded: Counter[tuple[str, int, str]] = Counter()
    for row in rows:
        key = (row["res_type"], int(row["version_id"]), row["method"])
        counts[key] += 1
        superseded[key] += int(row["version_id"]) < last[row["rid"]]
    return [
        Line(
            "resource_version",
            res_type,
            f"version {version} ({method})",
            n / file_rows,
            f"{superseded[(res_type, version, method)] / file_rows:g} superseded in the import"
            if superseded[(res_type, version, method)]
            else "",
        )
        for (res_type, version, method), n in sorted(counts.items())
    ]


def table_text(lines: Iterable[Line]) -> str:
    """The account as a Markdown table."""
    out = ["| table | type | parameter / version / topic | rows per file row | note |", "|---|---|---|---|---|"]
    out += [f"| {x.table} | {x.res_type} | {x.what} | {x.count:g} | {x.note} |" for x in lines]
    return "\n".join(out)
