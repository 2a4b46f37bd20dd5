"""Statements run on the DBAPI cursor of a SQLAlchemy connection, for the hot paths of the store.

SQLAlchemy's execution layer (events, parameter processing per row, result objects) costs 20-40 µs per
statement on top of SQLite's 2-5 µs; a write touches a dozen statements. The statements here are plain
SQL with positional parameters in the driver's own style (PEP 249 ``paramstyle``: ``qmark`` for sqlite3,
``format`` for psycopg), executed on the connection's DBAPI cursor *inside* the transaction SQLAlchemy
began, so they commit or roll back with everything else on that connection.

Driver errors are re-raised as SQLAlchemy's (``IntegrityError``, ``OperationalError``, ...) with
``sqlalchemy.exc.DBAPIError.instance``, so callers and ``repository.translate_db_errors`` see the same
exceptions whichever path ran the statement.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import ClauseElement, Connection, Insert, Table, bindparam, insert
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.compiler import SQLCompiler

Params = Sequence[Any]


_POSITIONAL: dict[str, Dialect] = {}


def compile_positional(conn: Connection, statement: ClauseElement) -> tuple[str, tuple[str, ...]]:
    """``statement`` as driver SQL with positional parameters, and the bind names in their order.

    The dialect is the connection's with the driver's positional paramstyle (PEP 249: ``qmark`` for
    sqlite3, ``format`` for psycopg), so the SQL is still SQLAlchemy's, compiled once by the caller."""
    name = conn.dialect.name
    dialect = _POSITIONAL.get(name)
    if dialect is None:
        style = "qmark" if name == "sqlite" else "format"
        dialect_class: Any = type(conn.dialect)
        dialect = _POSITIONAL[name] = dialect_class(paramstyle=style)
    compiled = statement.compile(dialect=dialect)
    assert isinstance(compiled, SQLCompiler)
    return str(compiled), tuple(compiled.positiontup or ())


def literal_values(conn: Connection, statement: ClauseElement) -> dict[str, Any]:
    """The values SQLAlchemy bound for the literals of ``statement`` (``attempts=0`` becomes a parameter
    with its value), by bind name, to complete the parameters of ``compile_positional``'s SQL."""
    return dict(statement.compile(dialect=conn.dialect).params)


def insert_statement(table: Table, columns: Sequence[str]) -> Insert:
    """``INSERT INTO table (columns) VALUES (...)`` with one bind parameter per column, named after it."""
    return insert(table).values({column: bindparam(column) for column in columns})


@contextmanager
def _translated(sql: str, params: Any, conn: Connection) -> Iterator[None]:
    dbapi = conn.dialect.loaded_dbapi
    try:
        yield
    except dbapi.Error as exc:
        raise DBAPIError.instance(sql, params, exc, dbapi.Error, dialect=conn.dialect) from None


def execute(conn: Connection, sql: str, params: Params = ()) -> int:
    """Run one statement; the number of rows it changed."""
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    with _translated(sql, params, conn):
        cursor.execute(sql, params)
        count = int(cursor.rowcount)
    cursor.close()
    return count


def fetch(conn: Connection, sql: str, params: Params = ()) -> list[tuple[Any, ...]]:
    """Every row of one query."""
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    with _translated(sql, params, conn):
        cursor.execute(sql, params)
        rows = [tuple(row) for row in cursor.fetchall()]
    cursor.close()
    return rows


def executemany(conn: Connection, sql: str, rows: Sequence[Params]) -> None:
    """Run one statement for each parameter tuple (sqlite3 steps a prepared statement; psycopg 3
    pipelines the rows in one round trip)."""
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    with _translated(sql, rows[:1], conn):
        cursor.executemany(sql, rows)
    cursor.close()


def copy_rows(conn: Connection, table: str, columns: Sequence[str], rows: Sequence[Params]) -> None:
    """PostgreSQL only: ``COPY table (columns) FROM STDIN`` of ``rows`` in one stream (psycopg 3's
    ``Cursor.copy``, https://www.psycopg.org/psycopg3/docs/basic/copy.html): the server takes the rows
    as one statement, where an executemany runs one INSERT per row."""
    quote = conn.dialect.identifier_preparer.quote
    sql = f"COPY {quote(table)} ({', '.join(quote(c) for c in columns)}) FROM STDIN"
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    with _translated(sql, rows[:1], conn), cursor.copy(sql) as copy:
        for row in rows:
            copy.write_row(row)
    cursor.close()
