"""The statements of a search as driver SQL, run on the connection's DBAPI cursor (the prepared path).

The same statements as ``engine.py``/``includes.py`` build with SQLAlchemy Core (keyset page, COUNT,
conditional match, ``_include``/``_revinclude``), as text from ``sqltext.TextBuilder``, with two
changes that save round trips:

- the page query reads the bodies of its rows (https://hl7.org/fhir/R4/search.html#return needs
  them all), so a page is one statement instead of two. Without ``_sort`` the body is a column of the
  page query itself (its rows come in ``rid`` order, from a bounded sorter at worst); with ``_sort`` the
  page is a derived table (``LIMIT count + 1``) joined back to ``resource`` for the bodies, so that no
  sorter ever carries the bodies of every match;
- the include queries read the bodies of what they add likewise.

Statements run on ``Connection.connection.cursor()``: the connection's own DBAPI connection, inside the
caller's transaction (one snapshot for the page, its includes and its total), without SQLAlchemy's
per-execution work (events, result objects, parameter processing), as ``Repository.first`` does for
point reads. Driver errors are re-raised as SQLAlchemy's (parameters hidden: they may be PHI), so
``translate_db_errors`` treats them as before.
"""

# S608: the SQL text is assembled from fixed identifiers (tables, aliases, parameter codes checked
# against the registry) and placeholders; every value is a bound parameter, never part of the text.
# ruff: noqa: S608
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from gateway.search import driven, paging
from gateway.search.candidates import CandidatesCache
from gateway.search.includes import Ref
from gateway.search.query import ID, LAST_UPDATED, Include, SearchQuery
from gateway.search.registry import Registry
from gateway.search.sql import Narrowing
from gateway.search.sqltext import Frag, NarrowingCache, Plan, TextBuilder, conjunction

__all__ = ["Page", "PreparedStatements"]


@dataclass(frozen=True, slots=True)
class Page:
    """One keyset page: its rows (with their bodies) and the cursor of the next page, if any."""

    refs: list[Ref]
    next_cursor: str | None


def run(conn: Connection, sql: str, params: tuple[Any, ...]) -> list[Any]:
    """Every row of the driver SQL ``sql`` on ``conn``'s DBAPI connection, in its transaction."""
    if not conn.in_transaction():
        conn.begin()  # as SQLAlchemy's autobegin would (the engine's "begin" hook emits BEGIN)
    dbapi = conn.dialect.loaded_dbapi
    cursor = conn.connection.cursor()
    try:
        cursor.execute(sql, params)
        return list(cursor.fetchall())
    except dbapi.Error as exc:
        raise DBAPIError.instance(sql, None, exc, dbapi.Error, hide_parameters=True, dialect=conn.dialect) from None
    finally:
        cursor.close()


def _bytes(body: Any) -> bytes | None:
    """Driver blobs as bytes (psycopg may hand out memoryviews)."""
    return bytes(body) if body is not None and not isinstance(body, bytes) else body


class PreparedStatements:
    """The statements of searches on one store, and the cache of compiled narrowings they share."""

    def __init__(
        self, narrowings: NarrowingCache | None = None, *, driven: bool = True, registry: Registry | None = None
    ) -> None:
        self.narrowings = narrowings if narrowings is not None else NarrowingCache()
        self.registry = registry
        """The searched parameters' registry: which stored rows answer each (``sources.py``)."""
        self.driven = driven
        """Drive pages from a criterion's matches (PostgreSQL, ``driven.py``) and narrowed searches from
        the caller's candidates (``candidates.py``); False: the plain walk (kept to compare both forms)."""
        self.candidates = CandidatesCache()

    def plan(self, conn: Connection, builder: TextBuilder, query: SearchQuery, *, counting: bool = False) -> Plan:
        """The search's conditions and what drives its page (``TextBuilder.plan``); ``counting``: for a
        COUNT, which every candidate set drives (a page only a few: ``candidates.CandidateRows.few``)."""
        if not self.driven:
            return Plan(conjunction(builder.where(query.criteria)), None, [])
        found = self.candidates.get(builder.narrowing, builder.types, conn.dialect)
        candidates = found[0] if found is not None and (counting or found[1]) else None
        return builder.plan(query.criteria, candidates)

    def builder(self, conn: Connection, types: Sequence[str], narrowing: Narrowing | None) -> TextBuilder:
        """The text builder of a search of ``types`` on ``conn``'s dialect."""
        return TextBuilder(
            types, dialect=conn.dialect, narrowing=narrowing, narrowings=self.narrowings, registry=self.registry
        )

    def count(self, conn: Connection, where: Frag) -> int:
        """``Bundle.total``: every match (https://hl7.org/fhir/R4/search.html#total)."""
        text, params = where
        return int(run(conn, f"SELECT count(*) FROM resource WHERE {text}", params)[0][0])

    def find(self, conn: Connection, where: Frag, limit: int) -> list[tuple[int, str, int]]:
        """``(rid, res_id, version_id)`` of the first ``limit`` matches in ``rid`` order."""
        text, params = where
        sql = (
            "SELECT resource.rid, resource.res_id, resource.version_id FROM resource "
            f"WHERE {text} ORDER BY resource.rid LIMIT {int(limit)}"
        )
        return [(row[0], row[1], row[2]) for row in run(conn, sql, params)]

    def page(self, conn: Connection, query: SearchQuery, builder: TextBuilder, plan: Plan) -> Page:
        """One keyset page of matches with their bodies (``engine.SearchEngine._page`` + the body read)."""
        digest = paging.fingerprint(query.sort, query.types)
        cursor = paging.decode_cursor(query.cursor, digest, query.sort) if query.cursor is not None else None
        if not query.sort and plan.driver is not None and not builder.sqlite:
            after = cursor.rid if cursor is not None else None
            sql, params = driven.page_sql(plan, limit=int(query.count) + 1, after=after, p=builder.p)
        else:
            sql, params = self._page_sql(query, builder, plan.where, cursor)
        rows = run(conn, sql, params)
        width = 3 + len(query.sort)
        refs = [Ref(row[0], row[1], row[2], _bytes(row[width])) for row in rows[: query.count]]
        if len(rows) <= query.count:
            return Page(refs, None)
        last = rows[query.count - 1]
        return Page(refs, paging.encode_cursor(digest, list(last[3:width]), last[0]))

    def _page_sql(self, query: SearchQuery, builder: TextBuilder, where: Frag, cursor: paging.Cursor | None) -> Frag:
        limit = int(query.count) + 1
        sorts = [builder.sort_expression(key) for key in query.sort]
        descending = query.sort[-1].descending if query.sort else False
        if not query.sort:
            terms = [where]
            order = [paging.TextKey("resource.rid", False, False)]
            if cursor is not None:
                terms.append(paging.after_text(order, [cursor.rid], builder.p))
            text, params = conjunction(terms)
            sql = (
                "SELECT resource.rid, resource.res_type, resource.res_id, resource.body FROM resource "
                f"WHERE {text} ORDER BY {paging.order_by_text(order)} LIMIT {limit}"
            )
            return sql, params
        labelled = ", ".join(f"{expression} AS sort_{i}" for i, (expression, _) in enumerate(sorts))
        sort_params = tuple(v for _, values in sorts for v in values)
        names = [f"sort_{i}" for i in range(len(sorts))]
        if any(key.kind not in (ID, LAST_UPDATED) for key in query.sort):
            # As engine._page: OFFSET 0 keeps both databases from inlining the derived table (and
            # re-running its sort subqueries for every use of their values).
            offset = "LIMIT -1 OFFSET 0" if builder.sqlite else "OFFSET 0"
            inner = (
                "SELECT resource.rid AS rid, resource.res_type AS res_type, resource.res_id AS res_id, "
                f"{labelled} FROM resource WHERE {where[0]} {offset}"
            )
            source = f"({inner}) AS matches"
            source_params = sort_params + where[1]
            keys = [
                paging.TextKey(f"matches.sort_{i}", key.descending, key.kind not in (ID, LAST_UPDATED))
                for i, key in enumerate(query.sort)
            ]
            rid = "matches.rid"
            columns = "matches.rid, matches.res_type, matches.res_id, " + ", ".join(f"matches.{n}" for n in names)
            conditions: list[Frag] = []
        else:  # _id / _lastUpdated: resource columns, no derived table (as engine._page)
            source = "resource"
            source_params = ()
            keys = [
                paging.TextKey(expression, key.descending, False)
                for key, (expression, _) in zip(query.sort, sorts, strict=True)
            ]
            rid = "resource.rid"
            columns = f"resource.rid, resource.res_type, resource.res_id, {labelled}"
            conditions = [where]
        order = [*keys, paging.TextKey(rid, descending, False)]
        if cursor is not None:
            conditions.append(paging.after_text(order, [*cursor.values, cursor.rid], builder.p))
        filter_text, filter_params = conjunction(conditions) if conditions else ("", ())
        page = (
            f"SELECT {columns} FROM {source}"
            + (f" WHERE {filter_text}" if conditions else "")
            + f" ORDER BY {paging.order_by_text(order)} LIMIT {limit}"
        )
        # The page's few rows joined back to their bodies, in the same order.
        outer = [paging.TextKey(f"found.sort_{i}", k.descending, k.nullable) for i, k in enumerate(keys)]
        outer.append(paging.TextKey("found.rid", descending, False))
        sql = (
            "SELECT found.rid, found.res_type, found.res_id, "
            + "".join(f"found.{n}, " for n in names)
            + f"resource.body FROM ({page}) AS found JOIN resource ON resource.rid = found.rid "
            f"ORDER BY {paging.order_by_text(outer)}"
        )
        return sql, source_params + filter_params

    def fetcher(self, conn: Connection, builder: TextBuilder) -> PreparedFetcher:
        """The include queries of a search on ``conn``."""
        return PreparedFetcher(conn, builder)


@dataclass(frozen=True, slots=True)
class PreparedFetcher:
    """``includes.Fetcher`` as driver SQL (``includes._forward`` / ``_reverse``), bodies included."""

    conn: Connection
    builder: TextBuilder

    def forward(self, rule: Include, frontier: Sequence[Ref], limit: int) -> list[Ref]:
        """What the frontier's ``rule.source_type`` resources reference through ``rule.param``."""
        sources = [ref.rid for ref in frontier if rule.source_type is None or ref.res_type == rule.source_type]
        if not sources:
            return []
        b = self.builder
        # The page's rids select the reference rows; the other terms only filter them.
        conditions = [
            b.in_list("idx_reference.rid", sources),
            *_equal(b, b.filter_only("idx_reference.res_type"), rule.source_type),
            *_rows_of(b, rule, filter_only=True),
            *_equal(b, b.filter_only("idx_reference.target_type"), rule.target),
            *b.visible("included", _only(rule.target)),
        ]
        on = "included.res_type = idx_reference.target_type AND included.res_id = idx_reference.target_id"
        return self._with_bodies(_referenced("included", on, conditions, int(limit) + 1))

    def reverse(self, rule: Include, frontier: Sequence[Ref], limit: int) -> list[Ref]:
        """The ``rule.source_type`` resources whose ``rule.param`` points at the frontier."""
        by_type: dict[str, list[str]] = {}
        for ref in frontier:
            if rule.target is None or ref.res_type == rule.target:
                by_type.setdefault(ref.res_type, []).append(ref.res_id)
        b = self.builder
        found: list[Ref] = []
        for target_type, ids in by_type.items():
            conditions = [
                *_equal(b, "idx_reference.target_type", target_type),
                b.in_list("idx_reference.target_id", ids),
                *_equal(b, "idx_reference.res_type", rule.source_type),
                *_rows_of(b, rule, filter_only=False),
                *b.visible("revincluded", _only(rule.source_type)),
            ]
            on = "revincluded.rid = idx_reference.rid"
            found.extend(self._with_bodies(_referenced("revincluded", on, conditions, int(limit) + 1 - len(found))))
            if len(found) > limit:
                break
        return found

    def _with_bodies(self, found: Frag) -> list[Ref]:
        """The rows ``found`` selects, with their bodies, in ``rid`` order."""
        statement, params = found
        sql = (
            f"SELECT found.rid, found.res_type, found.res_id, resource.body FROM ({statement}) AS found "
            "JOIN resource ON resource.rid = found.rid ORDER BY found.rid"
        )
        return [Ref(row[0], row[1], row[2], _bytes(row[3])) for row in run(self.conn, sql, params)]


def _only(res_type: str | None) -> tuple[str, ...] | None:
    return (res_type,) if res_type is not None else None


def _equal(b: TextBuilder, column: str, value: str | None) -> list[Frag]:
    """``column = value`` when a value is given, else no condition."""
    return [(f"{column} = {b.p}", (value,))] if value is not None else []


def _rows_of(b: TextBuilder, rule: Include, *, filter_only: bool) -> list[Frag]:
    """The reference rows that answer ``rule.param`` (``sources.py``); no condition for ``*``."""
    if rule.param is None:
        return []
    types = (rule.source_type,) if rule.source_type is not None else b.types
    return [b.param_rows("idx_reference", types, rule.param, filter_only=filter_only)]


def _referenced(alias: str, on: str, conditions: Sequence[Frag], limit: int) -> Frag:
    """``SELECT DISTINCT rid, res_type, res_id`` of the resources (``alias``) joined to ``idx_reference``
    rows ``on`` that condition, meeting ``conditions``: the first ``limit`` in ``rid`` order."""
    text, params = conjunction(conditions)
    return (
        f"SELECT DISTINCT {alias}.rid, {alias}.res_type, {alias}.res_id FROM idx_reference "
        f"JOIN resource AS {alias} ON {on} WHERE {text} ORDER BY {alias}.rid LIMIT {limit}",
        params,
    )
