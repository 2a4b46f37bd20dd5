"""No foreign keys from a resource's own rows to ``resource.rid`` (docs/scaling.md "Foreign keys").

``resource_version``, the index tables (``idx_*``, ``idx_member``) and ``conditional_key`` referenced
``resource.rid``. Every one of those rows is written by ``WriteTransaction`` in the transaction that
writes its resource row, with the rid it allocated, and no code deletes a ``resource`` row (a FHIR delete
keeps the row, marked deleted): the constraints could only ever catch a bug of the repository, which
``tests/store/test_orphans.py`` looks for instead, while costing every inserted row a look-up of its
resource (PostgreSQL: a referential-integrity trigger running ``SELECT ... FOR KEY SHARE`` per row, a
quarter of the server's CPU per ingested resource).

PostgreSQL drops the constraints in place (``<table>_rid_fkey``). SQLite cannot drop a constraint, so
each table is rebuilt by SQLite's own procedure for it (``_rebuild_sqlite``; Alembic's batch mode would
copy ``idx_date``'s generated column, which SQLite refuses): on a large store this copies every history
body once, so run it in a maintenance window. The downgrade adds them back.

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-24
"""

from __future__ import annotations

import re
from collections.abc import Callable

from alembic import op

revision = "0014"
down_revision: str | None = "0013"
branch_labels: str | None = None
depends_on: str | None = None

TABLES = (
    "resource_version",
    "idx_token",
    "idx_string",
    "idx_date",
    "idx_reference",
    "idx_uri",
    "idx_number",
    "idx_quantity",
    "idx_member",
    "conditional_key",
)
"""The tables whose ``rid`` referenced ``resource.rid`` at revision 0013."""

_FOREIGN_KEY = re.compile(r",\s*FOREIGN KEY\s*\(rid\)\s*REFERENCES\s+\"?resource\"?\s*\(rid\)", re.IGNORECASE)
_CLAUSE = ",\n\tFOREIGN KEY(rid) REFERENCES resource (rid)"


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in TABLES:
            op.drop_constraint(f"{table}_rid_fkey", table, type_="foreignkey")
        return
    for table in TABLES:
        _rebuild_sqlite(table, _without_foreign_key)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in TABLES:
            op.create_foreign_key(f"{table}_rid_fkey", table, "resource", ["rid"], ["rid"])
        return
    for table in TABLES:
        _rebuild_sqlite(table, _with_foreign_key)


def _without_foreign_key(ddl: str) -> str:
    changed, count = _FOREIGN_KEY.subn("", ddl)
    if count != 1:
        raise RuntimeError(f"expected one foreign key to resource in {ddl!r}")
    return changed


def _with_foreign_key(ddl: str) -> str:
    body = ddl.rstrip()
    if not body.endswith(")") or _FOREIGN_KEY.search(body):
        raise RuntimeError(f"unexpected table definition {ddl!r}")
    return body[:-1].rstrip() + _CLAUSE + "\n)"


def _rebuild_sqlite(table: str, change: Callable[[str], str]) -> None:
    """SQLite's procedure for a table change ALTER TABLE cannot make (https://www.sqlite.org/lang_altertable.html
    section 7): a new table of the changed definition, the rows copied (generated columns are computed
    again, not copied), the old table dropped, the new one renamed, and the table's indexes made again
    from their own definitions; all inside the migration's transaction."""
    conn = op.get_bind()
    (ddl,) = conn.exec_driver_sql("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).one()
    indexes = [
        sql
        for (sql,) in conn.exec_driver_sql(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL", (table,)
        )
    ]
    # table_xinfo's hidden: 0 a column, 1 hidden (virtual tables), 2 and 3 generated (virtual, stored).
    columns = ", ".join(
        f'"{row[1]}"' for row in conn.exec_driver_sql(f'PRAGMA table_xinfo("{table}")') if row[6] in (0, 1)
    )
    temporary = f"_rebuild_{table}"
    renamed, count = re.subn(rf"^CREATE TABLE\s+\"?{table}\"?", f'CREATE TABLE "{temporary}"', change(ddl), count=1)
    if count != 1:
        raise RuntimeError(f"unexpected table definition {ddl!r}")
    conn.exec_driver_sql(renamed)
    conn.exec_driver_sql(f'INSERT INTO "{temporary}" ({columns}) SELECT {columns} FROM "{table}"')  # noqa: S608 (names of TABLES and their columns)
    conn.exec_driver_sql(f'DROP TABLE "{table}"')
    conn.exec_driver_sql(f'ALTER TABLE "{temporary}" RENAME TO "{table}"')
    for sql in indexes:
        conn.exec_driver_sql(sql)
