"""PostgreSQL: the current rows of resources replaced by one statement, however many (every update and
delete of the store; issue 6, the HN file's CHG rows; docs/performance.md "HN file import", session 6).

``WriteTransaction`` (gateway/store/repository.py ``_rewrite_current``) replaces the current row of each
resource it updates or deletes: drop the resource's search-index rows and conditional keys, then update
its ``resource`` row (the index rows of the new version are buffered and inserted afterwards, as for a
create). One statement of data-modifying CTEs per resource, which psycopg pipelines but the server still
plans and runs once per row, cost ~660 µs per CHG row of an HN file (two resources), a third of its time.
``rewrite_current`` does it for all of them in one statement: the new values
travel as arrays (binary parameters, ``%b``: no text escaping of the bodies), every index table
(``idx_member`` included) and ``conditional_key`` loses the rows of those rids in one ``DELETE ... WHERE
rid = ANY(...)`` each (the ``ix_*_rid`` indexes), and ``resource`` is updated from ``unnest`` of the arrays.

The effect is the per-row statements' (tests/store/test_pg_bulk.py): the rows of a rid that is not in
``resource`` are left alone; a rid appears at most once (``update_many`` checks it).
All parts of one statement see the same snapshot (https://www.postgresql.org/docs/15/queries-with.html
"Data-Modifying Statements in WITH"); they touch different tables, so none reads another's change. Rows
are locked in ``rid`` order (the ``FOR UPDATE`` of the first CTE), so two such statements cannot deadlock
on each other's rows.
"""

# S608: the SQL text is assembled from the schema's table names and placeholders; every value is bound.
# ruff: noqa: S608
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from sqlalchemy import Connection

from gateway.store import driver
from gateway.store.schema import REWRITTEN_TABLES, resource


class Rewrite(NamedTuple):
    """The new current state of one stored resource (its ``resource`` row by ``rid``)."""

    rid: int
    version_id: int
    last_updated: int
    deleted: bool
    body: bytes | None


def _rewrite_sql() -> str:
    """``REWRITE_SQL``: lock the rows in rid order, delete their index rows and keys, update them."""
    tables = [table.name for table in REWRITTEN_TABLES]
    locked = f"locked AS (SELECT rid FROM {resource.name} WHERE rid = ANY(%b::bigint[]) ORDER BY rid FOR UPDATE)"
    deletes = [f"d{n} AS (DELETE FROM {name} WHERE rid = ANY(%b::bigint[]))" for n, name in enumerate(tables)]
    return (
        f"WITH {', '.join([locked, *deletes])} "
        f"UPDATE {resource.name} AS r SET version_id = u.version_id, last_updated = u.last_updated, "
        "deleted = u.deleted, body = u.body "
        "FROM unnest(%b::bigint[], %b::integer[], %b::bigint[], %b::boolean[], %b::bytea[]) "
        "AS u(rid, version_id, last_updated, deleted, body) "
        "WHERE r.rid = u.rid AND r.rid IN (SELECT rid FROM locked)"
    )


REWRITE_SQL = _rewrite_sql()
"""The statement of ``rewrite_current``: parameters the rids once per CTE (the lock, then each delete: an
array compared with ``= ANY`` is an index scan of ``ix_*_rid``, where a join to a CTE could be planned as
a scan of a whole index table), then the five arrays of ``Rewrite``."""
_DELETES = len(REWRITTEN_TABLES)


def rewrite_current(conn: Connection, rows: Sequence[Rewrite]) -> int:
    """Replace the current row of each of ``rows`` in the caller's PostgreSQL transaction: its index rows and
    conditional keys deleted, its ``resource`` row set to the new values, in one statement. The number
    of ``resource`` rows updated."""
    if not rows:
        return 0
    if conn.dialect.name != "postgresql":
        raise ValueError("pg_bulk.rewrite_current runs on PostgreSQL only")
    rids = [row.rid for row in rows]
    columns = (
        rids,
        [row.version_id for row in rows],
        [row.last_updated for row in rows],
        [row.deleted for row in rows],
        [row.body for row in rows],
    )
    return driver.execute(conn, REWRITE_SQL, (rids, *[rids] * _DELETES, *columns))
