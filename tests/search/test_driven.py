"""Driven pages and candidate sets (``gateway/search/driven.py``, ``candidates.py``, ``probes.py``).

The driven forms only choose where a statement starts: on random data (the store of ``test_prepared``) and
under real grants (a patient launch, an ECM provider, a health network with granular scopes, a caller
without organization, a patient and a user scope together), every page, every next page, ``_total`` and
``_summary=count`` must be exactly those of the plain walk, on SQLite and PostgreSQL. The candidates of a
narrowing must contain every row the narrowing lets through.
"""

from __future__ import annotations

import random

from sqlalchemy import Dialect, select
from sqlalchemy.dialects.postgresql.base import PGDialect
from sqlalchemy.dialects.sqlite.base import SQLiteDialect

from gateway.auth.access import Access
from gateway.search.candidates import DrivenNarrowing
from gateway.search.engine import Narrowing
from gateway.search.probes import filter_only
from gateway.search.query import parse_query
from gateway.store.schema import idx_reference, resource
from gateway.types import QueryParams
from tests.search.test_prepared import Store, _grant, _next, _roles, _run, narrowings, random_query, store

__all__ = ["store"]  # the module-scoped random store of test_prepared, shared by these tests

TYPES = ("Patient", "Encounter", "ServiceRequest", "Task", "Organization")


def _grants(s: Store) -> dict[str, Narrowing | None]:
    """``test_prepared``'s narrowings plus a few more real grants."""
    registry = s.core.registry
    dialect = s.repo.engine.dialect.name
    patient = s.data.patients[2].res_id
    more = {
        "hn": Access(_grant("system/*.rs", organization="org-hn"), registry, _roles),
        "no-organization": Access(_grant("user/*.rs"), registry, _roles),
        "patient-and-user": Access(_grant("patient/*.rs user/Task.rs", patient=patient, organization="org-ecm"),
                                   registry, _roles),
        "patient-of-provider": Access(_grant("patient/*.rs", patient=patient, organization="org-ecm"),
                                      registry, _roles),
    }  # fmt: skip
    out = narrowings(s)
    out.update({name: access.narrowing(TYPES, "rs", dialect=dialect) for name, access in more.items()})
    return out


def _both(s: Store, res_type: str, params: QueryParams, narrowing: Narrowing | None) -> tuple[object, object]:
    statements = s.prepared.statements
    try:
        statements.driven = False
        walked = _run(s.prepared, s, res_type, params, narrowing)
        statements.driven = True
        driven = _run(s.prepared, s, res_type, params, narrowing)
    finally:
        statements.driven = True
    return walked, driven


def _pages(s: Store, res_type: str, params: QueryParams, narrowing: Narrowing | None) -> int:
    """Follow the next links of both forms together; every page must be the same. Returns the pages seen."""
    pages = 0
    current: QueryParams | None = params
    while current is not None and pages < 30:
        walked, driven = _both(s, res_type, current, narrowing)
        assert walked == driven, (res_type, current)
        pages += 1
        current = _next(driven)
    return pages


def test_unselective_searches_are_the_same_driven_or_walked(store: Store) -> None:
    """The searches the candidates drive: no criterion, counts, totals, every page, each grant."""
    for name, narrowing in _grants(store).items():
        for res_type in TYPES:
            for params in (
                [("_count", "3")],
                [("_summary", "count")],
                [("_total", "accurate"), ("_count", "2")],
                [("_count", "0")],
                [("_sort", "-_lastUpdated"), ("_count", "4")],
                [("_id:not", store.data.patients[0].res_id), ("_count", "3")],
            ):
                assert _pages(store, res_type, params, narrowing) >= 1, name


def test_random_queries_are_the_same_driven_or_walked(store: Store) -> None:
    """Random criteria (a criterion's matches drive the page on PostgreSQL), paged to the end."""
    rng = random.Random(99)
    grants = _grants(store)
    for name, narrowing in grants.items():
        for _ in range(25 if name in ("none", "patient", "ecm-org") else 8):
            res_type, params = random_query(rng, store.data)
            _pages(store, res_type, params, narrowing)


def test_candidates_hold_every_visible_row(store: Store) -> None:
    """Each grant's candidate set contains every row its narrowing lets through (it may hold more)."""
    checked = 0
    with store.repo.connect() as conn:
        for name, narrowing in _grants(store).items():
            if not isinstance(narrowing, DrivenNarrowing):
                continue
            for res_type in TYPES:
                rows = narrowing.candidates((res_type,))
                if rows is None:
                    continue
                seen = select(resource.c.rid).where(
                    resource.c.res_type == res_type, resource.c.deleted.is_(False), narrowing(resource, (res_type,))
                )
                visible = {r[0] for r in conn.execute(seen)}
                candidates = {r[0] for r in conn.execute(rows.statement)}
                assert visible <= candidates, (name, res_type)
                checked += 1
    assert checked >= 10


def test_which_searches_are_driven(store: Store) -> None:
    """A patient's compartment drives pages and counts; an organization's members drive counts only;
    a criterion's matches drive the page on PostgreSQL; the plan has no candidates."""
    registry = store.core.registry
    grants = _grants(store)
    statements = store.prepared.statements

    def plan_of(narrowing: Narrowing | None, params: QueryParams, *, counting: bool = False) -> object:
        query = parse_query(registry, "Encounter", params, base_url="", strict=True, default_count=5, max_count=50)
        with store.repo.connect() as conn:
            builder = statements.builder(conn, query.types, narrowing)
            return statements.plan(conn, builder, query, counting=counting).driver

    assert plan_of(grants["patient"], []) is not None
    assert plan_of(grants["patient"], [], counting=True) is not None
    assert plan_of(grants["ecm-org"], []) is None
    assert plan_of(grants["ecm-org"], [], counting=True) is not None
    assert plan_of(None, []) is None
    assert plan_of(None, [("status", "finished")]) is not None
    plan = Access(_grant("system/*.rs", organization="org-plan"), registry, _roles)
    assert plan.narrowing(TYPES, "rs", dialect=store.repo.engine.dialect.name) is None


def test_filter_only_keeps_sqlite_from_seeking_on_the_column() -> None:
    t = idx_reference.alias("t")
    statement = select(t.c.rid).where(t.c.rid == 1, filter_only(t.c.param).in_(("patient", "subject")))

    def text(dialect: Dialect) -> str:
        return str(statement.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))

    assert "+t.param IN ('patient', 'subject')" in text(SQLiteDialect())
    postgres = PGDialect()  # type: ignore[no-untyped-call]
    assert "t.param IN ('patient', 'subject')" in text(postgres)
    assert "+t.param" not in text(postgres)
