"""Each search-index row written once: delete the stored rows other rows of the same resource repeat.

From this revision the repository no longer writes the rows of a parameter that other parameters' rows
answer (gateway/search/sources.py, issues 2, 6 and 7), and every search reads such a parameter from those:

- an **alias** (the same type, expression and targets as an earlier parameter): none of its rows;
- a **narrowed** reference parameter (``X.where(resolve() is T)``): its rows that equal a row of ``X``
  pointing at ``T`` (the same target and url, identifier system and value);
- a string **parent** (a HumanName or Address parameter whose parts are parameters too): its rows whose
  ``(value, exact)`` a child parameter's row of the same resource has.

The upgrade deletes exactly those rows from a store written before (both dialects), so the store holds
what the new code writes; every search answers the same before and after (tests/search/test_sources.py).
The rules are written out here as this revision derived them from the vendored R4 parameters, not
computed from live code: a migration keeps the meaning of its revision.

Downgrade writes them back from the rows they repeat (each parent's children's rows it lacks, each narrowed
parameter's broader rows pointing at its target it lacks, each alias's source rows), in that order (Patient
``phonetic`` is ``name``'s rows, ``name`` needs its parts back first): the store holds again what the
code before this revision wrote and reads (migration 0012's backfill reads Task ``patient``).

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-25
"""

# S608: the SQL text is assembled from this file's fixed table and column names; values are bound.
# ruff: noqa: S608
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision: str | None = "0015"
branch_labels: str | None = None
depends_on: str | None = None

ALIASES: tuple[tuple[str, str, str, str], ...] = (
    ("Coverage", "reference", "patient", "beneficiary"),
    ("Patient", "string", "phonetic", "name"),
    ("Practitioner", "string", "name", "phonetic"),
    ("ServiceRequest", "token", "service", "code"),
)
"""(resource type, index kind, parameter, the parameter whose rows it repeats): none of its rows is kept."""

NARROWED: tuple[tuple[str, str, str, str], ...] = (
    ("AuditEvent", "patient", "agent", "Patient"),
    ("AuditEvent", "patient", "entity", "Patient"),
    ("CarePlan", "patient", "subject", "Patient"),
    ("CareTeam", "patient", "subject", "Patient"),
    ("Communication", "patient", "subject", "Patient"),
    ("Condition", "patient", "subject", "Patient"),
    ("Encounter", "patient", "subject", "Patient"),
    ("Encounter", "practitioner", "participant", "Practitioner"),
    ("Goal", "patient", "subject", "Patient"),
    ("Procedure", "patient", "subject", "Patient"),
    ("Provenance", "patient", "target", "Patient"),
    ("ServiceRequest", "patient", "subject", "Patient"),
    ("Task", "patient", "subject", "Patient"),
)
"""(resource type, parameter, broader parameter, target type): its ``idx_reference`` rows pointing at the
target type that equal a row of the broader parameter of the same resource are deleted."""

PARENTS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("Organization", "address", ("address-city", "address-country", "address-postalcode", "address-state")),
    ("Patient", "address", ("address-city", "address-country", "address-postalcode", "address-state")),
    ("Patient", "name", ("family", "given")),
    ("Practitioner", "address", ("address-city", "address-country", "address-postalcode", "address-state")),
    ("Practitioner", "phonetic", ("family", "given")),
)
"""(resource type, string parameter, child parameters): its ``idx_string`` rows whose ``(value, exact)`` a
child's row of the same resource has are deleted."""

_REFERENCE_COLUMNS = ("target_id", "url", "identifier_system", "identifier_value")
_VALUES = {
    "reference": ("target_type", *_REFERENCE_COLUMNS),
    "string": ("value", "exact"),
    "token": ("system", "code", "text"),
}
"""The value columns of the index tables the rules touch (migration 0001)."""


def upgrade() -> None:
    bind = op.get_bind()
    same = "IS" if bind.dialect.name == "sqlite" else "IS NOT DISTINCT FROM"  # NULL equals NULL
    for res_type, kind, param, _ in ALIASES:
        bind.execute(
            sa.text(f"DELETE FROM idx_{kind} WHERE res_type = :res_type AND param = :param"),
            {"res_type": res_type, "param": param},
        )
    equal = " AND ".join(f"b.{c} {same} idx_reference.{c}" for c in _REFERENCE_COLUMNS)
    for res_type, param, broad, target in NARROWED:
        bind.execute(
            sa.text(
                "DELETE FROM idx_reference WHERE res_type = :res_type AND param = :param AND target_type = :target "
                "AND EXISTS (SELECT 1 FROM idx_reference AS b WHERE b.rid = idx_reference.rid "
                f"AND b.param = :broad AND b.target_type = :target AND {equal})"
            ),
            {"res_type": res_type, "param": param, "broad": broad, "target": target},
        )
    for res_type, param, children in PARENTS:
        names = ", ".join(f":c{i}" for i in range(len(children)))
        bind.execute(
            sa.text(
                "DELETE FROM idx_string WHERE res_type = :res_type AND param = :param "
                "AND EXISTS (SELECT 1 FROM idx_string AS c WHERE c.rid = idx_string.rid "
                f"AND c.param IN ({names}) AND c.value {same} idx_string.value AND c.exact {same} idx_string.exact)"
            ),
            {"res_type": res_type, "param": param, **{f"c{i}": c for i, c in enumerate(children)}},
        )


def downgrade() -> None:
    bind = op.get_bind()
    same = "IS" if bind.dialect.name == "sqlite" else "IS NOT DISTINCT FROM"
    for res_type, param, children in PARENTS:
        names = ", ".join(f":c{i}" for i in range(len(children)))
        _restore(
            bind, "string", same, f"c.param IN ({names})", {f"c{i}": c for i, c in enumerate(children)},
            res_type, param,
        )  # fmt: skip
    for res_type, param, broad, target in NARROWED:
        _restore(bind, "reference", same, "c.param = :broad AND c.target_type = :target",
                 {"broad": broad, "target": target}, res_type, param)  # fmt: skip
    for res_type, kind, param, source in ALIASES:
        _restore(bind, kind, same, "c.param = :source", {"source": source}, res_type, param)


def _restore(
    bind: sa.Connection, kind: str, same: str, which: str, values: dict[str, str], res_type: str, param: str
) -> None:
    """Insert a ``param`` row for each distinct value of the rows ``which`` selects (alias ``c``) of
    ``res_type`` that ``param`` lacks on the same resource."""
    columns = _VALUES[kind]
    listed = ", ".join(f"c.{name}" for name in columns)
    equal = " AND ".join(f"o.{name} {same} c.{name}" for name in columns)
    bind.execute(
        sa.text(
            f"INSERT INTO idx_{kind} (rid, res_type, param, {', '.join(columns)}) "
            f"SELECT DISTINCT c.rid, c.res_type, :param, {listed} FROM idx_{kind} AS c "
            f"WHERE c.res_type = :res_type AND {which} AND NOT EXISTS (SELECT 1 FROM idx_{kind} AS o "
            f"WHERE o.rid = c.rid AND o.param = :param AND {equal})"
        ),
        {"res_type": res_type, "param": param, **values},
    )
