"""The first page of a search driven by a set of row ids, walked in ``rid`` order (PostgreSQL).

A page without ``_sort`` is the first ``_count`` matches in ``rid`` order. Written as ``resource.rid IN
(SELECT rid FROM idx_x WHERE ...) ORDER BY rid LIMIT n``, PostgreSQL plans it as a hash semi-join: it
collects the matching ``rid``s, fetches *every* matching resource row, then sorts them for the top ``n``,
so the page costs as much as its matches: at 1M stored resources a one-week ``Encounter?date`` window
(2,000 matches) took 10-500 ms, a common surname (2,600 matches) more (docs/scaling.md). Its estimates
do not help it: the type test on ``resource`` looks like it removes four rows in five, the index rows'
type is not known to be the resource's.

The form here states the order of work: the matching ``rid``s first, deduplicated and sorted (an
index-only scan and an in-memory sort of integers: ~1 ms for thousands), then the resource rows fetched
by primary key *in that order* until the page is full:

    SELECT ... FROM (SELECT DISTINCT driver.rid FROM (<matches>) AS driver ORDER BY driver.rid) AS driven
    JOIN resource ON resource.rid = driven.rid WHERE <the other conditions> ORDER BY driven.rid LIMIT n

``EXPLAIN ANALYZE`` at 1M: the same week 1.5 ms instead of 10-500; a lone identifier is unchanged. The
driving set is a criterion's own matches (``sqltext.TextBuilder.plan``: its other conditions, visibility
included, still filter) or the caller's candidates (``candidates.py``: a superset of what the narrowing
lets through, which still applies in full). SQLite already plans ``rid IN (...)`` as a sorted list walked
in order that stops at the page, so it keeps the plain form.
"""

# S608: the SQL text is assembled from fixed identifiers and placeholders; every value is bound.
# ruff: noqa: S608
from __future__ import annotations

from gateway.search.sqltext import Frag, Plan, conjunction

__all__ = ["page_sql"]


def page_sql(plan: Plan, *, limit: int, after: int | None, p: str) -> Frag:
    """The page statement (rid, res_type, res_id, body of up to ``limit`` rows) driven by ``plan.driver``;
    ``after``: the cursor's last ``rid`` (keyset paging, https://hl7.org/fhir/R4/search.html#paging)."""
    assert plan.driver is not None
    driver_text, driver_params = plan.driver
    cursor = f" WHERE driver.rid > {p}" if after is not None else ""
    cursor_params = (after,) if after is not None else ()
    rest_text, rest_params = conjunction(plan.rest)
    sql = (
        "SELECT resource.rid, resource.res_type, resource.res_id, resource.body FROM "
        f"(SELECT DISTINCT driver.rid FROM ({driver_text}) AS driver{cursor} ORDER BY driver.rid) AS driven "
        f"JOIN resource ON resource.rid = driven.rid WHERE {rest_text} ORDER BY driven.rid ASC LIMIT {int(limit)}"
    )
    return sql, driver_params + cursor_params + rest_params
