"""The store floor of a first import (issue 6): what the rows an import wrote cost the database alone.

After ``bench.files`` imports a file, the rows that import wrote are taken from the gateway's own store
(every table: ``resource``, ``resource_version``, the ``idx_*`` tables, ``idx_member``,
``conditional_key``, ``outbox``, the ledger's ``file_inbound``, ``file_record``, ``file_row_error``) and
inserted raw, as prepared tuples, into a fresh store of the same schema, in as many transactions as the
importer committed (one per chunk of file rows: the rows carrying a ``rid`` by the resources' row-id
ranges, each table's other rows in equal parts in key order), each moving the ledger's position as a
chunk does. Only the inserts and commits are timed: a chunk's rows are read from the store before its
transaction (so memory holds one chunk's rows, at any file size). No Python of the gateway runs in the
timed part, so its rate is what one writer of these rows reaches on this machine: the import's rate over
it is the share of the floor the gateway reaches.

- SQLite (``high_water``, ``insert_floor``): the rows whose rowid is above the table's high-water mark
  taken just before the import; the fresh file is made with the store's own ``CREATE`` statements and the
  gateway's connection pragmas (WAL and its checkpoint size, ``synchronous`` as ``Settings`` says, 64 MiB
  cache); one
  ``sqlite3`` ``executemany`` per table and transaction.
- PostgreSQL (``pg_high_water``, ``pg_insert_floor``): the rows above each table's high-water mark of
  ``rid``, else ``id`` (a table with neither is taken whole when it was empty before); the fresh database
  is migrated like the store (``gateway.store.database.make_engine``); one ``COPY`` per table and
  transaction (how the gateway writes from ``gateway.store.repository.COPY_MIN_ROWS`` rows on).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.settings import Settings
from gateway.store.database import JOURNAL_SIZE_LIMIT

Marks = dict[str, int]
"""Per table, its high-water mark before the import (largest rowid, ``rid`` or ``id``; else its row count)."""
Rows = list[tuple[Any, ...]]

FIRST = ("resource", "resource_version")
"""Tables inserted first in each transaction (then the others by name), as the gateway flushes them."""


@dataclass(frozen=True)
class _Table:
    """A table the import wrote to: its inserted columns (generated ones left out), how its new rows are
    told (``key`` above ``mark``; no key: all rows) and split into chunks (by ``rid`` when it has one)."""

    name: str
    columns: list[str]
    key: str | None
    mark: int
    bounds: list[Any]
    """Chunk k holds the rows whose split value v has ``bounds[k - 1] <= v < bounds[k]`` (open ends)."""
    split: str | None
    """The column the bounds apply to (``rid``, or ``key``), None: the whole table in the first chunk."""
    count: int


Fetch = Callable[[_Table, int], Rows]
Insert = Callable[[str, list[str], Rows], None]


def _bounds(values: list[Any], chunks: int) -> list[Any]:
    """``chunks - 1`` split values cutting sorted ``values`` into equal parts."""
    return [values[(k * len(values)) // chunks] for k in range(1, chunks)] if values else []


def _where(table: _Table, chunk: int, param: str) -> tuple[str, list[Any]]:
    """The condition (with ``param`` placeholders) selecting ``table``'s new rows of ``chunk``."""
    parts, args = [], []
    if table.key is not None:
        parts.append(f'"{table.key}" > {param}')
        args.append(table.mark)
    if table.split is not None:
        if chunk > 0:
            parts.append(f'"{table.split}" >= {param}')
            args.append(table.bounds[chunk - 1])
        if chunk < len(table.bounds):
            parts.append(f'"{table.split}" < {param}')
            args.append(table.bounds[chunk])
    order = f' ORDER BY "{table.key}"' if table.key else ""
    return (" WHERE " + " AND ".join(parts) if parts else "") + order, args


def _select(table: _Table, chunk: int, param: str) -> tuple[str, list[Any]]:
    """The query (with ``param`` placeholders) reading ``table``'s new rows of ``chunk``, and its arguments."""
    where, args = _where(table, chunk, param)
    listed = ", ".join(f'"{c}"' for c in table.columns)
    return f'SELECT {listed} FROM "{table.name}"{where}', args


def _timed(tables: list[_Table], chunks: int, fetch: Fetch, execute: Callable[[str], None], insert: Insert) -> float:
    """Seconds to write ``tables``' new rows in ``chunks`` transactions (``BEGIN``, one ``insert`` per table,
    the ledger's position moved from the second chunk on, ``COMMIT``); each chunk's rows read before it."""
    order = sorted(tables, key=lambda t: (FIRST.index(t.name) if t.name in FIRST else len(FIRST), t.name))
    ledger = None
    seconds = 0.0
    for k in range(chunks):
        part = [(t, fetch(t, k)) for t in order if t.split is not None or k == 0]
        if ledger is None and any(t.name == "file_inbound" for t, _ in part):
            table, rows = next((t, r) for t, r in part if t.name == "file_inbound")
            entry = int(rows[0][table.columns.index("id")])
            ledger = f"UPDATE file_inbound SET position = position WHERE id = {entry}"
        started = time.perf_counter()
        execute("BEGIN")
        for table, rows in part:
            if rows:
                insert(table.name, table.columns, rows)
        if ledger is not None and k:
            execute(ledger)
        execute("COMMIT")
        seconds += time.perf_counter() - started
    return seconds


def _plan(
    names: dict[str, list[str]], marks: Marks, keys: Callable[[str, str, int], list[Any]], chunks: int
) -> list[_Table]:
    """The tables with new rows and their chunk bounds (``keys(table, column, mark)``: the sorted values of
    ``column`` of the rows above ``mark``; the key column is ``rowid`` on SQLite, ``rid``/``id`` on PostgreSQL)."""
    rids = keys("resource", "rid", marks.get("resource", 0)) if "resource" in names else []
    rid_bounds = _bounds(rids, chunks)
    out: list[_Table] = []
    for name, columns in names.items():
        key = "rowid" if "rowid" in columns else "rid" if "rid" in columns else "id" if "id" in columns else None
        mark = marks.get(name, 0)
        if key is None and mark:
            continue  # rows there before cannot be told from the import's: left out
        inserted = [c for c in columns if c != "rowid"]
        found = keys(name, key, mark) if key else keys(name, "", 0)
        if not found:
            continue
        if "rid" in inserted and rids:
            table = _Table(name, inserted, key, mark, rid_bounds, "rid", len(found))
        elif key is not None and name != "file_inbound":
            table = _Table(name, inserted, key, mark, _bounds(found, chunks), key, len(found))
        else:  # the ledger entry (opened before the first chunk), or a keyless table: in the first chunk
            table = _Table(name, inserted, key, mark, [], None, len(found))
        out.append(table)
    return out


# --- SQLite -------------------------------------------------------------------------------------------


@contextmanager
def _connect(path: Path) -> Iterator[sqlite3.Connection]:
    with closing(sqlite3.connect(str(path), isolation_level=None)) as conn:
        yield conn


def _sqlite_tables(conn: sqlite3.Connection) -> list[str]:
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
    return sorted(name for (name,) in rows)


def high_water(path: Path) -> Marks:
    """The largest rowid of each table of the SQLite store at ``path`` (taken just before the import)."""
    with _connect(path) as conn:
        tables = _sqlite_tables(conn)
        return {t: int(conn.execute(f'SELECT coalesce(max(rowid), 0) FROM "{t}"').fetchone()[0]) for t in tables}


def insert_floor(source: Path, target: Path, marks: Marks, *, chunks: int, synchronous: str = "FULL") -> dict[str, Any]:
    """Insert the rows the import wrote into the SQLite store ``source`` (above ``marks``) into the fresh
    file ``target`` in ``chunks`` transactions: the seconds taken (inserts and commits) and rows per table."""
    with _connect(source) as src, _connect(target) as conn:
        schema = src.execute(
            "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%' "
            "ORDER BY CASE type WHEN 'table' THEN 0 ELSE 1 END, rowid"
        ).fetchall()
        for (sql,) in schema:
            conn.execute(sql)
        checkpoint = f"wal_autocheckpoint={Settings().sqlite_wal_autocheckpoint}"
        limit = f"journal_size_limit={JOURNAL_SIZE_LIMIT}"
        for pragma in ("journal_mode=WAL", checkpoint, limit, f"synchronous={synchronous}", "foreign_keys=ON"):
            conn.execute(f"PRAGMA {pragma}")
        conn.execute("PRAGMA cache_size=-65536")
        # Generated columns (table_xinfo hidden 2 and 3) are computed by SQLite, not inserted.
        names = {
            t: ["rowid", *(r[1] for r in src.execute(f'PRAGMA table_xinfo("{t}")') if r[6] == 0)]
            for t in _sqlite_tables(src)
        }

        def keys(table: str, column: str, mark: int) -> list[Any]:
            sql = f'SELECT "{column}" FROM "{table}" WHERE rowid > ? ORDER BY "{column}"'
            return [v for (v,) in src.execute(sql, (mark,))]

        tables = _plan(names, marks, keys, max(1, chunks))

        def fetch(table: _Table, chunk: int) -> Rows:
            return src.execute(*_select(table, chunk, "?")).fetchall()

        def insert(table: str, columns: list[str], rows: Rows) -> None:
            params = ", ".join("?" * len(columns))
            conn.executemany(f'INSERT INTO "{table}" ({", ".join(columns)}) VALUES ({params})', rows)

        def execute(sql: str) -> None:
            conn.execute("BEGIN IMMEDIATE" if sql == "BEGIN" else sql)

        seconds = _timed(tables, max(1, chunks), fetch, execute, insert)
    return {"seconds": seconds, "tables": {t.name: t.count for t in tables}}


def sqlite_rows(path: Path, marks: Marks) -> dict[str, Rows]:
    """The rows of each table of the SQLite store at ``path`` above ``marks`` (rowid order), generated
    columns left out: what ``insert_floor`` copies (for checking it)."""
    out: dict[str, Rows] = {}
    with _connect(path) as conn:
        for table in _sqlite_tables(conn):
            columns = [r[1] for r in conn.execute(f'PRAGMA table_xinfo("{table}")') if r[6] == 0]
            listed = ", ".join(f'"{c}"' for c in columns)
            sql = f'SELECT {listed} FROM "{table}" WHERE rowid > ? ORDER BY rowid'
            rows = conn.execute(sql, (marks.get(table, 0),)).fetchall()
            if rows:
                out[table] = rows
    return out


# --- PostgreSQL ---------------------------------------------------------------------------------------


@contextmanager
def _pg_connect(url: str) -> Iterator[Any]:
    import psycopg
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    conninfo = f"host={parsed.host} port={parsed.port} user={parsed.username} dbname={parsed.database}"
    with psycopg.connect(conninfo, autocommit=True) as conn:
        yield conn


def _pg_columns(conn: Any) -> dict[str, list[str]]:
    """The inserted columns (not generated) of each table of the public schema, in their order."""
    rows = conn.execute(
        "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public' "
        "AND is_generated = 'NEVER' ORDER BY table_name, ordinal_position"
    ).fetchall()
    out: dict[str, list[str]] = {}
    for table, column in rows:
        out.setdefault(table, []).append(column)
    return out


def _pg_key(columns: list[str]) -> str | None:
    return "rid" if "rid" in columns else "id" if "id" in columns else None


def pg_high_water(url: str) -> Marks:
    """Per table of the PostgreSQL store at ``url``: the largest ``rid``, else ``id``, else its row count."""
    with _pg_connect(url) as conn:
        out: Marks = {}
        for table, columns in _pg_columns(conn).items():
            key = _pg_key(columns)
            sql = f'SELECT coalesce(max("{key}"), 0) FROM "{table}"' if key else f'SELECT count(*) FROM "{table}"'
            out[table] = int(conn.execute(sql).fetchone()[0])
        return out


def pg_rows(url: str, marks: Marks) -> dict[str, Rows]:
    """The rows of each table of the PostgreSQL store at ``url`` above ``marks`` (key order; a keyless table
    whole when it was empty before): what ``pg_insert_floor`` copies (for checking it)."""
    return {table: rows for table, (_, rows) in pg_rows_above(url, marks).items()}


def pg_rows_above(url: str, marks: Marks) -> dict[str, tuple[list[str], Rows]]:
    """``pg_rows`` with each table's column names (``bench.files_account`` reads rows as dicts)."""
    out: dict[str, tuple[list[str], Rows]] = {}
    with _pg_connect(url) as conn:
        for table, columns in _pg_columns(conn).items():
            key, mark = _pg_key(columns), marks.get(table, 0)
            if key is None and mark:
                continue
            listed = ", ".join(f'"{c}"' for c in columns)
            where = f' WHERE "{key}" > {int(mark)} ORDER BY "{key}"' if key else ""
            rows = [tuple(row) for row in conn.execute(f'SELECT {listed} FROM "{table}"{where}').fetchall()]
            if rows:
                out[table] = (list(columns), rows)
    return out


def pg_insert_floor(source_url: str, target_url: str, marks: Marks, *, chunks: int) -> dict[str, Any]:
    """``insert_floor`` on PostgreSQL: the rows above ``marks`` in ``source_url`` copied into the fresh
    database ``target_url`` (migrated first, not timed) in ``chunks`` transactions of one COPY per table."""
    from gateway.fhir.core import engine_options
    from gateway.settings import Settings
    from gateway.store.database import make_engine

    make_engine(target_url, engine_options(Settings(database_url=target_url))).dispose()  # the schema
    with _pg_connect(source_url) as src, _pg_connect(target_url) as conn:
        names = _pg_columns(src)

        def keys(table: str, column: str, mark: int) -> list[Any]:
            if not column:
                return [n for (n,) in src.execute(f'SELECT 1 FROM "{table}"')]
            sql = f'SELECT "{column}" FROM "{table}" WHERE "{column}" > %s ORDER BY "{column}"'
            return [v for (v,) in src.execute(sql, (mark,))]

        tables = _plan(names, marks, keys, max(1, chunks))

        def fetch(table: _Table, chunk: int) -> Rows:
            return [tuple(r) for r in src.execute(*_select(table, chunk, "%s")).fetchall()]

        def insert(table: str, columns: list[str], rows: Rows) -> None:
            listed = ", ".join(f'"{c}"' for c in columns)
            with conn.cursor() as cursor, cursor.copy(f'COPY "{table}" ({listed}) FROM STDIN') as copy:
                for row in rows:
                    copy.write_row(row)

        def execute(sql: str) -> None:
            conn.execute(sql)

        seconds = _timed(tables, max(1, chunks), fetch, execute, insert)
    return {"seconds": seconds, "tables": {t.name: t.count for t in tables}}
