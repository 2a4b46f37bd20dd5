"""A parsed search expression → SQLAlchemy Core conditions over ``resource`` and the ``idx_*`` tables.

One condition per criterion (AND), the values of a criterion ORed inside it
(https://hl7.org/fhir/R4/search.html#combining). The same statements run on SQLite and PostgreSQL.

Shape of the SQL, chosen with ``EXPLAIN QUERY PLAN`` on 100k resources:

- a positive criterion is a semi-join ``resource.rid IN (SELECT rid FROM idx_x WHERE res_type = ?
  AND param = ? AND <value>)``. The subquery is answered from the ``(res_type, param, value...)``
  indexes and the outer rows are then fetched by primary key. A correlated ``EXISTS`` would be read
  the other way round on SQLite (scan every resource of the type, probe per row: 60 ms instead of
  0.1 ms for one identifier at 100k); PostgreSQL plans both forms as the same semi-join.
- a negative criterion (``:not``, ``:missing``) is a correlated ``NOT EXISTS`` probing ``idx_x.rid``:
  it cannot select rows by itself, only filter those the other conditions bring.
- a date criterion reads the ``(res_type, param, span_class, low)`` index with one range scan per span
  class: its prefixes bound ``low`` directly, and ``high`` through the longest and shortest span of the
  class (``date_ranges.py``, ``gateway/store/date_spans.py``), so a window reads about its matches
  instead of every row that starts before its end. Numbers add the bound on ``low`` their value implies.
- several single-valued date criteria on the same parameter (``date=ge2024-01-01&date=lt2024-02-01``)
  are tested against the same index row, the usual reading of a range query (HAPI's
  ``DateRangeParam`` does the same). For an element with several dates it is stricter than testing
  each bound against any of them; it turns two half-table scans into one small range scan.
- SQLite plans without statistics unless someone runs ``ANALYZE``; where its guess is known to be bad
  (scanning by type or parameter instead of fetching a short ``rid`` list), the term is written so it
  cannot pick an index (``SqlBuilder.filter_only``).

Deleted resources never match (``resource.deleted``), neither as results nor as chain or ``_has``
targets, and the caller's ``Narrowing`` (access control) applies to every resource row the statement
reads: the searched ones, chain targets and ``_has`` sources, so no criterion can probe what the caller
may not see.

What this module and ``sqltext.py`` must decide alike (how each value matches, which criteria select
rows, which date criteria share an index row) is decided once in ``matching.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeAlias

from sqlalchemy import (
    ColumnElement,
    FromClause,
    Select,
    and_,
    exists,
    false,
    func,
    literal_column,
    not_,
    or_,
    select,
    true,
    union_all,
)
from sqlalchemy.sql.elements import KeyedColumnElement, UnaryExpression
from sqlalchemy.sql.operators import custom_op

from gateway.search import date_ranges
from gateway.search.matching import by_rid, match_value, split_ranges, successor
from gateway.search.query import ID, LAST_UPDATED, ChainCriterion, Condition, Criterion, HasCriterion, SortKey
from gateway.search.registry import Registry
from gateway.search.sources import Source, source_groups
from gateway.search.values import MissingValue, NumberValue, QuantityValue, RangeValue, ReferenceValue, TokenValue
from gateway.store.schema import INDEX_TABLES, resource

Narrowing: TypeAlias = Callable[[FromClause, Sequence[str] | None], ColumnElement[bool]]
"""Access control: given the resource table (or an alias of it) and the types its rows may have (``None``:
any), an extra condition its rows must meet."""

Column: TypeAlias = KeyedColumnElement[Any]


class SqlBuilder:
    """Conditions for one search: the searched ``types``, the dialect, the caller's narrowing.

    Its value conditions (``column`` to ``starts_with``) are the ``matching.ValueSql`` of Core expressions."""

    def __init__(
        self, types: Sequence[str], *, dialect: str, narrowing: Narrowing | None, registry: Registry | None = None
    ) -> None:
        self.types = tuple(types)
        self.sqlite = dialect == "sqlite"
        self.narrowing = narrowing
        self.registry = registry
        """Where the stored rows of each parameter come from (``sources.py``); None: the vendored one."""

    # -- the searched rows -------------------------------------------------------------------------------

    def visible(self, r: FromClause, types: Sequence[str] | None, *, by_rid: bool = False) -> list[ColumnElement[bool]]:
        """Rows of ``r`` (of ``types``, when given) that exist (not deleted) and the caller may see.

        ``by_rid``: the rows come from a ``rid IN (...)`` list. SQLite, without statistics, would
        rather walk the ``(res_type, rid)`` index and sort than fetch the listed rows by primary key
        (3x slower at 100k); a unary ``+`` takes the type test out of its choices
        (https://www.sqlite.org/optoverview.html#disqualifying_where_clause_terms_using_unary_).
        """
        conditions = [r.c.deleted == false()]
        if types is not None:
            res_type = self.filter_only(r.c.res_type) if by_rid else r.c.res_type
            conditions.append(_type_is(res_type, types))
        if self.narrowing is not None:
            conditions.append(self.narrowing(r, types))
        return conditions

    def filter_only(self, column: Column) -> ColumnElement[Any]:
        """``column`` for a term that must filter rows but not choose the index (SQLite ``+column``)."""
        return _unindexed(column) if self.sqlite else column

    def param_rows(
        self, table: FromClause, types: Sequence[str], code: str, *, filter_only: bool = False
    ) -> ColumnElement[bool]:
        """The rows of ``table`` that answer ``code`` on ``types`` (``sources.py``): ``param = code`` unless
        the parameter is answered by other parameters' rows. ``filter_only``: the terms only filter."""
        wrap = self.filter_only if filter_only else (lambda c: c)
        groups = source_groups(types, code, self.registry)
        if len(groups) == 1:
            return sources_term(wrap(table.c.param), lambda: wrap(table.c.target_type), groups[0][1])
        return or_(
            *(
                and_(
                    _type_is(wrap(table.c.res_type), group),
                    sources_term(wrap(table.c.param), lambda: wrap(table.c.target_type), found),
                )
                for group, found in groups
            )
        )

    def where(self, criteria: Sequence[Condition], r: FromClause = resource) -> list[ColumnElement[bool]]:
        """Every condition a matching row of ``r`` meets (visibility included)."""
        conditions = self.visible(r, self.types, by_rid=by_rid(criteria))
        conditions.extend(self.criteria(criteria, r, self.types))
        return conditions

    def criteria(self, criteria: Sequence[Condition], r: FromClause, types: Sequence[str]) -> list[ColumnElement[bool]]:
        """One condition per criterion; single-valued date criteria of one parameter on one index row."""
        others, groups = split_ranges(criteria)
        conditions = [self.condition(criterion, r, types) for criterion in others]
        conditions.extend(self._same_row(group, r, types) for group in groups)
        return conditions

    def condition(self, criterion: Condition, r: FromClause, types: Sequence[str]) -> ColumnElement[bool]:
        """The condition of one criterion on rows of ``r`` (of ``types``)."""
        if isinstance(criterion, ChainCriterion):
            return self._chain(criterion, r, types)
        if isinstance(criterion, HasCriterion):
            return self._has(criterion, r, types)
        if criterion.kind == ID:
            ids = [v.code for v in criterion.values if isinstance(v, TokenValue) and v.code is not None]
            return r.c.res_id.not_in(ids) if criterion.modifier == "not" else r.c.res_id.in_(ids)
        if criterion.kind == LAST_UPDATED:
            column = r.c.last_updated
            return or_(*(_range(column, column, v) for v in criterion.values if isinstance(v, RangeValue)))
        table = INDEX_TABLES[criterion.kind]
        param_rows = [self.param_rows(table, types, criterion.code)]
        if criterion.modifier == "missing":
            assert isinstance(criterion.values[0], MissingValue)
            present = exists().where(table.c.rid == r.c.rid, *param_rows)
            return not_(present) if criterion.values[0].missing else present
        if criterion.kind == "date" and not criterion.negated:
            ranges = [v for v in criterion.values if isinstance(v, RangeValue)]
            return self._dates(criterion.code, [[v] for v in ranges], r, types)
        matched = or_(*(match_value(self, criterion, table, v) for v in criterion.values))
        if criterion.negated:
            return not_(exists().where(table.c.rid == r.c.rid, *param_rows, matched))
        return r.c.rid.in_(select(table.c.rid).where(_type_is(table.c.res_type, types), *param_rows, matched))

    def _same_row(self, group: list[Criterion], r: FromClause, types: Sequence[str]) -> ColumnElement[bool]:
        ranges = [c.values[0] for c in group if isinstance(c.values[0], RangeValue)]
        return self._dates(group[0].code, [ranges], r, types)

    def _dates(
        self, code: str, groups: Sequence[Sequence[RangeValue]], r: FromClause, types: Sequence[str]
    ) -> ColumnElement[bool]:
        """Rows of ``r`` with an ``idx_date`` row of ``code`` meeting every value of some group (OR of ANDs).

        When the prefixes bound the stored ranges (``date_ranges.py``), one range scan of the
        ``(res_type, param, span_class, low)`` index per span class and group, their rows united;
        the criterion's own condition still decides (on SQLite with ``+low``, so that the class ranges
        are the only bounds the planner uses). Else one scan of the parameter's rows, as before."""
        t = INDEX_TABLES["date"]
        head = [_type_is(t.c.res_type, types), self.param_rows(t, types, code)]
        plans = [date_ranges.class_ranges(date_ranges.bounds(group)) for group in groups]
        if not all(plans):
            matched = or_(*(and_(*(_range(t.c.low, t.c.high, v) for v in group)) for group in groups))
            return r.c.rid.in_(select(t.c.rid).where(*head, matched))
        low = self.filter_only(t.c.low)
        branches: list[Select[Any]] = []
        for group, plan in zip(groups, plans, strict=True):
            matched = and_(*(_range(low, t.c.high, v) for v in group))
            for scan in plan:
                terms = [*head, t.c.span_class == literal_column(str(scan.span_class))]
                if scan.low_min is not None:
                    terms.append(t.c.low >= scan.low_min)
                if scan.low_max is not None:
                    terms.append(t.c.low <= scan.low_max)
                branches.append(select(t.c.rid).where(*terms, matched))
        return r.c.rid.in_(union_all(*branches))

    # -- values (https://hl7.org/fhir/R4/search.html#ptypes) --------------------------------------------

    def column(self, table: FromClause, name: str) -> Column:
        """The column ``name`` of ``table``."""
        return table.c[name]

    def in_range(self, low: Column, high: Column, value: RangeValue) -> ColumnElement[bool]:
        """``_range``: the stored ``[low, high]`` against the searched range, by prefix."""
        return _range(low, high, value)

    def number(self, low: Column, high: Column, value: NumberValue) -> ColumnElement[bool]:
        """The resource's value (the midpoint of its stored precision interval) lies in the search
        interval. The stored bounds add index-usable conditions: a midpoint at most ``h`` needs ``low <= h``."""
        midpoint = (low + high) / 2
        inside: list[ColumnElement[bool]] = []
        if value.low != float("-inf"):
            inside.append(midpoint >= value.low)
        if value.high != float("inf"):
            inside.append(midpoint <= value.high)
        if value.negated:
            return not_(and_(*inside))
        if value.high != float("inf"):
            inside.append(low <= value.high)
        return and_(*inside)

    def quantity(self, t: FromClause, value: QuantityValue) -> ColumnElement[bool]:
        """The amount as a number; the unit: its code and system, or the code or unit as written."""
        if value.code is None:
            unit = [t.c.system == value.system] if value.system is not None else []
        elif value.system is None:  # number||code: the code, or the unit as written
            unit = [or_(t.c.code == value.code, t.c.unit == value.code)]
        else:
            unit = [t.c.system == value.system, t.c.code == value.code]
        return and_(self.number(t.c.low, t.c.high, value.amount), *unit)

    def token(self, system: Column, code: Column, value: TokenValue) -> ColumnElement[bool]:
        """``[system]|[code]``: an empty system matches codes without one."""
        conditions: list[ColumnElement[bool]] = []
        if value.code is not None:
            conditions.append(code == value.code)
        if value.system == "":
            conditions.append(or_(system.is_(None), system == ""))
        elif value.system is not None:
            conditions.append(system == value.system)
        return and_(*conditions) if conditions else true()

    def reference(self, t: FromClause, value: ReferenceValue) -> ColumnElement[bool]:
        """A canonical url, or ``[type/]id`` of a local reference or an absolute one on this server."""
        if value.id is None:
            return t.c.url == value.url
        local = [t.c.target_id == value.id]
        if value.type is not None:
            local.append(t.c.target_type == value.type)
        # Stored absolute references keep their url: only those on this server's base point here.
        local.append(or_(t.c.url.is_(None), t.c.url.startswith(value.base + "/", autoescape=True)))
        return and_(*local)

    def uri(self, column: Column, text: str, modifier: str | None) -> ColumnElement[bool]:
        """https://hl7.org/fhir/R4/search.html#uri: exact; ``:below`` the value is a prefix of the stored
        uri; ``:above`` the stored uri is a prefix of the value (at a ``/`` boundary)."""
        if modifier == "below":
            return column.startswith(text, autoescape=True)
        if modifier == "above":
            parts = text.split("/")
            prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
            return column.in_([p for p in prefixes if p])
        if modifier == "contains":
            return column.contains(text, autoescape=True)
        return column == text

    def words_start(self, column: Column, text: str) -> ColumnElement[bool]:
        """Some word of the folded text starts with ``text`` (the ``:text`` modifier)."""
        return or_(column.startswith(text, autoescape=True), column.contains(" " + text, autoescape=True))

    def equals(self, column: Column, text: str) -> ColumnElement[bool]:
        """``column = text``."""
        return column == text

    def contains(self, column: Column, text: str) -> ColumnElement[bool]:
        """``column LIKE '%text%'``, wildcards in ``text`` escaped."""
        return column.contains(text, autoescape=True)

    def starts_with(self, column: Column, prefix: str) -> ColumnElement[bool]:
        """Prefix match that an ordinary b-tree index answers.

        SQLite compares text bytewise (BINARY collation), so ``[prefix, successor)`` is exactly the
        set of strings starting with ``prefix`` and is a range scan. PostgreSQL's collation may order
        text otherwise, so it gets ``LIKE 'prefix%'``.
        """
        upper = successor(prefix) if self.sqlite else None
        if upper is None:
            return column.startswith(prefix, autoescape=True)
        return and_(column >= prefix, column < upper)

    # -- chains and reverse chains -----------------------------------------------------------------------

    def _chain(self, criterion: ChainCriterion, r: FromClause, types: Sequence[str]) -> ColumnElement[bool]:
        """https://hl7.org/fhir/R4/search.html#chaining: one level, any of the candidate target types."""
        ref = INDEX_TABLES["reference"].alias("chain_ref")
        branches: list[ColumnElement[bool]] = []
        for target_type, inner in criterion.targets:
            target = resource.alias(f"chain_{target_type.lower()}")
            targets = select(target.c.res_id).where(
                *self.visible(target, (target_type,), by_rid=by_rid([inner])),
                self.condition(inner, target, (target_type,)),
            )
            branches.append(and_(ref.c.target_type == target_type, ref.c.target_id.in_(targets)))
        sources = select(ref.c.rid).where(
            _type_is(ref.c.res_type, types), self.param_rows(ref, types, criterion.code), or_(*branches)
        )
        return r.c.rid.in_(sources)

    def _has(self, criterion: HasCriterion, r: FromClause, types: Sequence[str]) -> ColumnElement[bool]:
        """https://hl7.org/fhir/R4/search.html#has: some ``source_type`` pointing here meets ``inner``.

        Read from the matching sources outwards: their reference rows by ``rid``, then the pointed-at
        resources by ``(res_type, res_id)``."""
        ref = INDEX_TABLES["reference"].alias("has_ref")
        source = resource.alias("has_source")
        target = resource.alias("has_target")
        sources = select(source.c.rid).where(
            *self.visible(source, (criterion.source_type,), by_rid=by_rid([criterion.inner])),
            self.condition(criterion.inner, source, (criterion.source_type,)),
        )
        # The rid list is the selective part: keep SQLite from scanning by type or parameter instead.
        ref_type, target_type = (self.filter_only(c) for c in (ref.c.res_type, ref.c.target_type))
        pointed = (
            select(target.c.rid)
            .select_from(
                ref.join(target, and_(target.c.res_type == ref.c.target_type, target.c.res_id == ref.c.target_id))
            )
            .where(
                ref.c.rid.in_(sources),
                ref_type == criterion.source_type,
                self.param_rows(ref, (criterion.source_type,), criterion.ref_code, filter_only=True),
                _type_is(target_type, types),
            )
        )
        return r.c.rid.in_(pointed)

    # -- sorting (https://hl7.org/fhir/R4/search.html#sort) ---------------------------------------------

    def sort_expression(self, key: SortKey, r: FromClause = resource) -> ColumnElement[Any]:
        """The value a resource sorts by: a column, or the least (ascending) / greatest (descending)
        of its indexed values for the parameter; NULL when it has none."""
        if key.kind == ID:
            return r.c.res_id
        if key.kind == LAST_UPDATED:
            return r.c.last_updated
        table = INDEX_TABLES[key.kind].alias("sort_" + key.code.replace("-", "_"))
        if key.kind in ("date", "number", "quantity"):
            column = table.c.high if key.descending else table.c.low
        elif key.kind == "token":
            column = table.c.code
        else:
            column = table.c.value
        aggregate = func.max(column) if key.descending else func.min(column)
        rows = self.param_rows(table, self.types, key.code)
        return select(aggregate).where(table.c.rid == r.c.rid, rows).correlate(r).scalar_subquery()


def sources_term(
    param: ColumnElement[Any], target_type: Callable[[], ColumnElement[Any]], found: Sequence[Source]
) -> ColumnElement[bool]:
    """Rows of the ``found`` sources: ``param IN (every source's parameter)``, the term an index seeks on,
    and, when some source keeps only rows pointing at a type, which parameter may have which target."""
    params = list(dict.fromkeys(s.param for s in found))
    seek = param == params[0] if len(params) == 1 else param.in_(params)
    if all(s.target_type is None for s in found):
        return seek
    plain = [s.param for s in found if s.target_type is None]
    which: list[ColumnElement[bool]] = [param.in_(plain)] if plain else []
    which.extend(and_(param == s.param, target_type() == s.target_type) for s in found if s.target_type is not None)
    return and_(seek, or_(*which))


def _unindexed(column: Column) -> ColumnElement[Any]:
    """``+column``: the same value, but SQLite will not pick an index for the term."""
    return UnaryExpression(column, operator=custom_op("+"), type_=column.type)


def _type_is(column: ColumnElement[Any], types: Sequence[str]) -> ColumnElement[bool]:
    return column == types[0] if len(types) == 1 else column.in_(types)


def _range(low: ColumnElement[Any], high: ColumnElement[Any], value: RangeValue) -> ColumnElement[bool]:
    """``[low, high]`` of the resource against the search range, by prefix
    (https://hl7.org/fhir/R4/search.html#prefix). The scan's bounds come from ``date_ranges`` (dates)
    or are the terms on ``low`` themselves (``_lastUpdated``)."""
    ql, qh = value.low, value.high
    prefix = value.prefix
    if prefix == "eq":  # the search range contains the resource range
        return and_(low >= ql, low <= qh, high <= qh)
    if prefix == "ne":
        return or_(low < ql, high > qh)
    if prefix == "gt":  # the range above the search value overlaps the resource range
        return high > qh
    if prefix == "lt":
        return low < ql
    if prefix == "ge":  # gt, or eq: a resource starting inside the search range ends up above it or in it
        return or_(high > qh, low >= ql)
    if prefix == "le":
        return and_(or_(low < ql, high <= qh), low <= qh)
    if prefix == "sa":  # starts after the end of the search range
        return low > qh
    if prefix == "eb":  # ends before its start
        return and_(high < ql, low < ql)
    # ap: the (already widened) search range overlaps the resource range
    return and_(low <= qh, high >= ql)
