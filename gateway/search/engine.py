"""The search engine: the one entry point of FHIR search for the REST layer and conditional operations.

https://hl7.org/fhir/R4/search.html. A search runs as: parse the query into a typed expression
(``query.py``), turn it into SQL for the connection's dialect (``sql.py``), read one keyset page of
row ids (``paging.py``), add ``_include``/``_revinclude`` resources (``includes.py``), read the bodies
of exactly those rows, trim them for ``_summary``/``_elements`` when asked (``elements.py``) and
splice the stored bytes into the searchset Bundle (``bundle.py``).

Two paths run the same statements (``prepared`` chooses, default on). The prepared path writes them as
driver SQL text with positional parameters (``sqltext.py``) and runs them on the DBAPI cursor, reading
the bodies in the page and include queries (``prepared.py``): 5-10x cheaper per search than building,
caching and compiling SQLAlchemy Core expressions (``sql.py``), which remain the reference the prepared
path is tested against (``tests/search/test_prepared.py``) and what granular scopes compile from.

``Bundle.total`` (https://hl7.org/fhir/R4/search.html#total) costs a COUNT over every match, so it is
given when asked for (``_total=accurate|estimate``, ``_summary=count``) or when it is free: a first
page that holds every match. ``_total=none`` never gives it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Connection, func, select

from gateway.errors import Issue
from gateway.search import bundle, paging
from gateway.search.elements import Subsetter
from gateway.search.includes import Included, Ref, resolve, resolve_with
from gateway.search.prepared import Page, PreparedStatements
from gateway.search.query import ID, LAST_UPDATED, SearchQuery, parse_query
from gateway.search.registry import Registry
from gateway.search.sql import Narrowing, SqlBuilder
from gateway.search.sqltext import TextBuilder, conjunction
from gateway.store.schema import resource
from gateway.types import QueryParams

__all__ = ["Match", "Narrowing", "SearchEngine"]


@dataclass(frozen=True, slots=True)
class Match:
    """A resource matching a conditional request's criteria (https://hl7.org/fhir/R4/http.html#ccreate)."""

    rid: int
    res_id: str
    version_id: int


class SearchEngine:
    """FHIR search over the store (https://hl7.org/fhir/R4/search.html)."""

    def __init__(
        self, registry: Registry, *, default_count: int, max_count: int, max_includes: int, prepared: bool = True
    ) -> None:
        self.registry = registry
        self.default_count = default_count
        self.max_count = max_count
        self.max_includes = max_includes
        self.prepared = prepared
        """Run searches as driver SQL (``prepared.py``); False: through SQLAlchemy Core (``sql.py``)."""
        self.statements = PreparedStatements(registry=registry)

    def search(
        self,
        conn: Connection,
        *,
        resource_type: str | None,
        params: QueryParams,
        base_url: str,
        strict: bool = False,
        narrowing: Narrowing | None = None,
    ) -> bytes:
        """The searchset Bundle (JSON bytes) of ``GET [base]/[type]?params`` (``[base]?params`` when
        ``resource_type`` is None). ``strict`` rejects unknown parameters (``Prefer: handling=strict``)."""
        query = parse_query(
            self.registry,
            resource_type,
            params,
            base_url=base_url,
            strict=strict,
            default_count=self.default_count,
            max_count=self.max_count,
        )
        if self.prepared:
            return self._search_prepared(conn, query, resource_type, base_url, narrowing)
        builder = SqlBuilder(query.types, dialect=conn.dialect.name, narrowing=narrowing, registry=self.registry)
        conditions = builder.where(query.criteria)
        if query.summary == "count" or query.count == 0:
            # Only the count (https://hl7.org/fhir/R4/search.html#summary); the self link still shows
            # which parameters were used.
            return bundle.searchset(
                links=_links(base_url, resource_type, query), total=_count(conn, conditions), entries=[]
            )
        page = self._page(conn, query, builder, conditions)
        total = _total(query, page, lambda: _count(conn, conditions))
        included = resolve(
            conn,
            builder,
            page.refs,
            includes=query.includes,
            revincludes=query.revincludes,
            max_includes=self.max_includes,
        )
        entries = self._entries(conn, query, base_url, page.refs, included.refs)
        return self._searchset(query, resource_type, base_url, page, total, included, entries)

    def find(
        self,
        conn: Connection,
        *,
        resource_type: str,
        params: QueryParams,
        limit: int,
        narrowing: Narrowing | None = None,
    ) -> list[Match]:
        """The first ``limit`` resources matching ``params`` (conditional create/update/delete/patch,
        https://hl7.org/fhir/R4/http.html#cond-update). Unknown parameters are an error here: ignoring
        one would widen the match and let the wrong resource be changed."""
        query = parse_query(
            self.registry,
            resource_type,
            params,
            base_url="",
            strict=True,
            default_count=self.default_count,
            max_count=self.max_count,
        )
        if self.prepared:
            text = self.statements.builder(conn, query.types, narrowing)
            rows = self.statements.find(conn, conjunction(text.where(query.criteria)), limit)
            return [Match(rid, res_id, version_id) for rid, res_id, version_id in rows]
        builder = SqlBuilder(query.types, dialect=conn.dialect.name, narrowing=narrowing, registry=self.registry)
        statement = (
            select(resource.c.rid, resource.c.res_id, resource.c.version_id)
            .where(*builder.where(query.criteria))
            .order_by(resource.c.rid)
            .limit(limit)
        )
        return [Match(row.rid, row.res_id, row.version_id) for row in conn.execute(statement)]

    def _search_prepared(
        self,
        conn: Connection,
        query: SearchQuery,
        resource_type: str | None,
        base_url: str,
        narrowing: Narrowing | None,
    ) -> bytes:
        """``search`` on the prepared path: the same Bundle from driver SQL, bodies read with the page."""
        builder: TextBuilder = self.statements.builder(conn, query.types, narrowing)

        def count() -> int:
            return self.statements.count(conn, self.statements.plan(conn, builder, query, counting=True).where)

        if query.summary == "count" or query.count == 0:
            return bundle.searchset(links=_links(base_url, resource_type, query), total=count(), entries=[])
        page = self.statements.page(conn, query, builder, self.statements.plan(conn, builder, query))
        total = _total(query, page, count)
        included = resolve_with(
            self.statements.fetcher(conn, builder),
            page.refs,
            includes=query.includes,
            revincludes=query.revincludes,
            max_includes=self.max_includes,
        )
        entries = _splice(query, base_url, page.refs, included.refs, {})
        return self._searchset(query, resource_type, base_url, page, total, included, entries)

    def _searchset(
        self,
        query: SearchQuery,
        resource_type: str | None,
        base_url: str,
        page: Page,
        total: int | None,
        included: Included,
        entries: list[bytes],
    ) -> bytes:
        """The searchset Bundle of a page's ``entries``: an OperationOutcome entry for what was ignored or
        cut short, and the ``self``, ``first`` and ``next`` links."""
        issues = _ignored(query)
        if included.truncated:
            issues.append(_too_costly(self.max_includes))
        entries.extend(_outcome(issues))
        links = _links(base_url, resource_type, query)
        if page.next_cursor is not None:
            links.append(("next", _with_cursor(base_url, resource_type, query, page.next_cursor)))
        return bundle.searchset(links=links, total=total, entries=entries)

    def _page(
        self, conn: Connection, query: SearchQuery, builder: SqlBuilder, conditions: list[ColumnElement[bool]]
    ) -> Page:
        """One keyset page of matches: ids and sort values only, never bodies."""
        columns: list[Any] = [resource.c.rid, resource.c.res_type, resource.c.res_id]
        columns.extend(builder.sort_expression(key).label(f"sort_{i}") for i, key in enumerate(query.sort))
        if any(key.kind not in (ID, LAST_UPDATED) for key in query.sort):
            # Sorting by a parameter computes a subquery per resource. OFFSET 0 keeps SQLite and
            # PostgreSQL from inlining this derived table, which would re-run those subqueries for
            # every use of the value (null test, order, keyset): 5x slower on deep pages.
            matches = select(*columns).where(*conditions).offset(0).subquery("matches")
            statement = select(matches)
            sort_values: list[ColumnElement[Any]] = [matches.c[f"sort_{i}"] for i in range(len(query.sort))]
            rid: ColumnElement[Any] = matches.c.rid
        else:
            statement = select(*columns).where(*conditions)
            sort_values = [builder.sort_expression(key) for key in query.sort]
            rid = resource.c.rid
        keys = [
            paging.OrderKey(value, key.descending, key.kind not in (ID, LAST_UPDATED))
            for key, value in zip(query.sort, sort_values, strict=True)
        ]
        order = [*keys, paging.OrderKey(rid, keys[-1].descending if keys else False, False)]
        digest = paging.fingerprint(query.sort, query.types)
        if query.cursor is not None:
            cursor = paging.decode_cursor(query.cursor, digest, query.sort)
            statement = statement.where(paging.after(order, [*cursor.values, cursor.rid]))
        statement = statement.order_by(*paging.order_by(order)).limit(query.count + 1)
        rows = conn.execute(statement).all()
        refs = [Ref(row.rid, row.res_type, row.res_id) for row in rows[: query.count]]
        if len(rows) <= query.count:
            return Page(refs, None)
        last = rows[query.count - 1]
        values = [last[3 + i] for i in range(len(keys))]
        return Page(refs, paging.encode_cursor(digest, values, last.rid))

    def _entries(
        self, conn: Connection, query: SearchQuery, base_url: str, matches: Sequence[Ref], included: Sequence[Ref]
    ) -> list[bytes]:
        """Entry bytes of the page: matches in page order, then includes; one read of the bodies."""
        wanted = [ref.rid for ref in matches] + [ref.rid for ref in included]
        if not wanted:
            return []
        bodies: dict[int, bytes] = {}
        for chunk_start in range(0, len(wanted), 900):
            chunk = wanted[chunk_start : chunk_start + 900]
            statement = select(resource.c.rid, resource.c.body).where(resource.c.rid.in_(chunk))
            bodies.update((row.rid, row.body) for row in conn.execute(statement))
        return _splice(query, base_url, matches, included, bodies)


def _splice(
    query: SearchQuery, base_url: str, matches: Sequence[Ref], included: Sequence[Ref], bodies: dict[int, bytes]
) -> list[bytes]:
    """Entry bytes: matches in page order, then includes; a body from ``bodies`` or read with its ``Ref``."""
    subsetter = Subsetter(summary=query.summary, elements=query.elements, match_types=query.types)
    entries: list[bytes] = []
    for refs, mode in ((matches, "match"), (included, "include")):
        for ref in refs:
            body = ref.body if ref.body is not None else bodies.get(ref.rid)
            if body is None:
                continue  # deleted between the page query and the body read (another transaction)
            if subsetter.active:
                body = subsetter.apply(body, ref.res_type, mode)
            entries.append(bundle.match_entry(base_url, ref.res_type, ref.res_id, body, mode))
    return entries


def _total(query: SearchQuery, page: Page, count: Callable[[], int]) -> int | None:
    """``Bundle.total`` (https://hl7.org/fhir/R4/search.html#total): counted when asked for, free when
    a first page holds every match, else left out."""
    if query.total in ("accurate", "estimate"):
        return count()
    if query.total != "none" and query.cursor is None and page.next_cursor is None:
        return len(page.refs)
    return None


def _ignored(query: SearchQuery) -> list[Issue]:
    return [
        Issue(code="not-supported", severity="warning", diagnostics=f"Unknown search parameter '{name}' ignored")
        for name in query.ignored
    ]


def _too_costly(max_includes: int) -> Issue:
    diagnostics = f"_include/_revinclude stopped after {max_includes} resources"
    return Issue(code="too-costly", severity="warning", diagnostics=diagnostics)


def _links(base_url: str, resource_type: str | None, query: SearchQuery) -> list[tuple[str, str]]:
    """``self`` (this page) and ``first``; ``next`` is added when there is one."""
    self_url = bundle.search_url(base_url, resource_type, query.used)
    this_page = self_url if query.cursor is None else _with_cursor(base_url, resource_type, query, query.cursor)
    return [("self", this_page), ("first", self_url)]


def _count(conn: Connection, conditions: list[ColumnElement[bool]]) -> int:
    return int(conn.execute(select(func.count()).select_from(resource).where(*conditions)).scalar_one())


def _outcome(issues: list[Issue]) -> list[bytes]:
    return [bundle.outcome_entry(issues)] if issues else []


def _with_cursor(base_url: str, resource_type: str | None, query: SearchQuery, cursor: str) -> str:
    return bundle.search_url(base_url, resource_type, [*query.used, ("_cursor", cursor)])
