"""A parsed search expression → driver SQL text with positional parameters (the prepared path).

The same conditions as ``sql.py`` (which documents why each has its shape, chosen with ``EXPLAIN QUERY
PLAN``; the choices both share are made in ``matching.py``), written straight as SQL text instead of
SQLAlchemy Core expressions. Building, caching and compiling a SQLAlchemy tree cost 0.5-1 ms per search,
20-50 times the statement itself (docs/performance.md, finding 3); concatenating the text costs a few µs.
Every value is a positional parameter (``?`` for sqlite3, ``%s`` for psycopg), so the text depends only
on the *shape* of the query (types, parameters, modifiers, prefixes, value counts, sort, page size, the
caller's narrowing) and the SQLite driver prepares it once per shape (sqlite3's statement cache is keyed
by the text; psycopg's server-side preparation stays off: ``gateway/store/database.py`` says why).

The caller's ``Narrowing`` (access control) is a SQLAlchemy expression built by ``gateway.auth.access``;
it is compiled once per narrowing, table alias and types, like the point-read SQL of
``Access.visibility_sql``, and kept in a bounded LRU. A grant's narrowing is compiled from its shape's
template, with the grant's organization and patient as bound parameters (``gateway.search.bound``), so
grants of one shape share one text per statement.

``tests/search/test_prepared.py`` runs random queries of every parameter type, modifier and prefix
through both paths on SQLite and PostgreSQL and checks that they return the same pages.
"""

# S608: the SQL text is assembled from fixed identifiers (tables, aliases, parameter codes checked
# against the registry) and placeholders; every value is a bound parameter, never part of the text.
# ruff: noqa: S608
from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

from sqlalchemy import Dialect, select

from gateway.search import date_ranges
from gateway.search.bound import Marked, bind_values, placeholders
from gateway.search.candidates import DrivenNarrowing
from gateway.search.matching import by_rid, match_value, semi_join, split_ranges, successor
from gateway.search.query import ID, LAST_UPDATED, ChainCriterion, Condition, Criterion, HasCriterion, SortKey
from gateway.search.registry import Registry
from gateway.search.sources import Source, source_groups
from gateway.search.sql import Narrowing
from gateway.search.values import MissingValue, NumberValue, QuantityValue, RangeValue, ReferenceValue, TokenValue
from gateway.store.schema import resource

Frag: TypeAlias = tuple[str, tuple[Any, ...]]
"""SQL text with positional placeholders, and the values of those placeholders in text order."""

TRUE: Frag = ("1 = 1", ())
FALSE: Frag = ("1 != 1", ())
NARROWING_CACHE_SIZE = 512
"""Compiled narrowing conditions kept (per grant, alias and types; a grant is cached per token)."""

_ESCAPE = "/"
MIN_BOUND = -(2**63)
MAX_BOUND = 2**63 - 1
"""The ends of a class's ``low`` range the prefixes leave open (the 64-bit integer range)."""


@dataclass(frozen=True, slots=True)
class Plan:
    """A search's conditions on ``resource``, and what may drive its page (``driven.py``)."""

    where: Frag
    """Every condition a match meets (the page, count and conditional-match statements)."""
    driver: Frag | None
    """``SELECT rid`` of a superset of the matches (a criterion's own matches, or the narrowing's
    candidates); None when nothing but the type's rows can drive."""
    rest: list[Frag]
    """The conditions a row from ``driver`` must still meet (``where`` without the driving criterion)."""


def _in(r: str, sub: Frag) -> Frag:
    """``r.rid IN (sub)``: a semi-join on the rows ``sub`` selects."""
    return f"{r}.rid IN ({sub[0]})", sub[1]


def conjunction(parts: Sequence[Frag]) -> Frag:
    """``a AND b AND ...`` (each part parenthesized); TRUE when empty."""
    if len(parts) > 1:
        return " AND ".join(f"({text})" for text, _ in parts), tuple(v for _, values in parts for v in values)
    return parts[0] if parts else TRUE


def disjunction(parts: Sequence[Frag]) -> Frag:
    """``a OR b OR ...`` (each part parenthesized); FALSE when empty."""
    if len(parts) > 1:
        return " OR ".join(f"({text})" for text, _ in parts), tuple(v for _, values in parts for v in values)
    return parts[0] if parts else FALSE


def like_escape(text: str) -> str:
    """``text`` with the LIKE wildcards and the escape character escaped (``ESCAPE '/'``)."""
    return text.replace(_ESCAPE, _ESCAPE * 2).replace("%", _ESCAPE + "%").replace("_", _ESCAPE + "_")


class NarrowingCache:
    """Narrowing conditions compiled to driver SQL text, per (narrowing, alias, types, dialect): an LRU."""

    def __init__(self, size: int = NARROWING_CACHE_SIZE) -> None:
        self.size = size
        self._entries: OrderedDict[tuple[Any, ...], Marked] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, narrowing: Narrowing, alias: str, types: tuple[str, ...] | None, dialect: Dialect) -> str:
        """The condition ``narrowing`` puts on rows of the resource table named ``alias`` (the text of
        ``narrowing`` itself, constants inline: ``frag`` binds a grant's values instead)."""
        return self._marked(narrowing, alias, types, dialect)[0]

    def frag(self, narrowing: Narrowing, alias: str, types: tuple[str, ...] | None, dialect: Dialect) -> Frag:
        """The condition ``narrowing`` puts on rows of ``alias``, with its parameters: a grant's narrowing
        (``DrivenNarrowing.template``) is its shape's text with the grant's values bound."""
        template = narrowing.template if isinstance(narrowing, DrivenNarrowing) else None
        if template is None:
            return self._marked(narrowing, alias, types, dialect)[0], ()
        assert isinstance(narrowing, DrivenNarrowing)
        text, names = self._marked(template, alias, types, dialect)
        return text, bind_values(names, narrowing.values)

    def _marked(self, narrowing: Narrowing, alias: str, types: tuple[str, ...] | None, dialect: Dialect) -> Marked:
        key = (narrowing, alias, types, dialect.name, dialect.paramstyle)
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
                return found
        found = placeholders(_compile_narrowing(narrowing, alias, types, dialect), dialect)
        with self._lock:
            self._entries[key] = found
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return found


def _compile_narrowing(narrowing: Narrowing, alias: str, types: tuple[str, ...] | None, dialect: Dialect) -> str:
    """The WHERE text of ``SELECT rid FROM resource AS alias WHERE narrowing(alias)``, constants inline.

    Compiled inside a SELECT so its correlated subqueries refer to ``alias`` instead of adding it to
    their own FROM lists; its other tables are anonymous aliases local to those subqueries."""
    r = resource if alias == "resource" else resource.alias(alias)
    statement = select(r.c.rid).where(narrowing(r, types))
    sql = statement.compile(dialect=dialect, compile_kwargs={"literal_binds": True}).string
    _, separator, condition = sql.partition("\nWHERE ")
    if not separator:
        raise AssertionError("a narrowing must compile to a WHERE clause")
    return condition


class TextBuilder:
    """Conditions for one search as driver SQL: the searched ``types``, the dialect, the narrowing.

    Its value conditions (``column`` to ``starts_with``) are the ``matching.ValueSql`` of SQL text."""

    def __init__(
        self,
        types: Sequence[str],
        *,
        dialect: Dialect,
        narrowing: Narrowing | None,
        narrowings: NarrowingCache,
        registry: Registry | None = None,
    ) -> None:
        self.types = tuple(types)
        self.registry = registry
        self.dialect = dialect
        self.sqlite = dialect.name == "sqlite"
        self.p = "?" if dialect.paramstyle == "qmark" else "%s"
        self.false = "0" if self.sqlite else "false"
        self.narrowing = narrowing
        self.narrowings = narrowings

    # -- the searched rows (sql.SqlBuilder.visible / where) ---------------------------------------------

    def visible(self, r: str, types: Sequence[str] | None, *, by_rid: bool = False) -> list[Frag]:
        """Rows of ``r`` (of ``types``, when given) that exist and the caller may see."""
        conditions: list[Frag] = [(f"{r}.deleted = {self.false}", ())]
        if types is not None:
            column = self.filter_only(f"{r}.res_type") if by_rid else f"{r}.res_type"
            conditions.append(self.type_is(column, types))
        if self.narrowing is not None:
            wanted = tuple(types) if types is not None else None
            conditions.append(self.narrowings.frag(self.narrowing, r, wanted, self.dialect))
        return conditions

    def filter_only(self, column: str) -> str:
        """``column`` for a term that must filter rows but not choose the index (SQLite ``+column``)."""
        return f"(+ {column})" if self.sqlite else column

    def param_rows(self, table: str, types: Sequence[str], code: str, *, filter_only: bool = False) -> Frag:
        """``sql.SqlBuilder.param_rows``: the rows of ``table`` (an alias) that answer ``code`` on ``types``."""

        def col(name: str) -> str:
            return self.filter_only(f"{table}.{name}") if filter_only else f"{table}.{name}"

        groups = source_groups(types, code, self.registry)
        if len(groups) == 1:
            return self._sources(col, groups[0][1])
        return disjunction(
            [conjunction([self.type_is(col("res_type"), group), self._sources(col, found)]) for group, found in groups]
        )

    def _sources(self, col: Callable[[str], str], found: Sequence[Source]) -> Frag:
        """``sql.sources_term``: ``param IN (...)``, and which parameter may have which target."""
        params = list(dict.fromkeys(s.param for s in found))
        seek = self.in_list(col("param"), params)
        if all(s.target_type is None for s in found):
            return seek
        plain = [s.param for s in found if s.target_type is None]
        which = [self.in_list(col("param"), plain)] if plain else []
        which.extend(
            (f"{col('param')} = {self.p} AND {col('target_type')} = {self.p}", (s.param, s.target_type))
            for s in found
            if s.target_type is not None
        )
        return conjunction([seek, disjunction(which)])

    def type_is(self, column: str, types: Sequence[str]) -> Frag:
        """``column`` is one of ``types``."""
        return self.in_list(column, types)

    def in_list(self, column: str, values: Sequence[Any], *, negated: bool = False) -> Frag:
        """``column [NOT] IN (values)``; never true (always true negated) for no values."""
        if not values:
            return TRUE if negated else FALSE
        if len(values) == 1 and not negated:
            return f"{column} = {self.p}", (values[0],)
        marks = ", ".join([self.p] * len(values))
        return f"{column} {'NOT IN' if negated else 'IN'} ({marks})", tuple(values)

    def where(self, criteria: Sequence[Condition], r: str = "resource") -> list[Frag]:
        """Every condition a matching row of ``r`` meets (visibility included)."""
        conditions = self.visible(r, self.types, by_rid=by_rid(criteria))
        conditions.extend(self.criteria(criteria, r, self.types))
        return conditions

    def plan(self, criteria: Sequence[Condition], candidates: Frag | None = None) -> Plan:
        """The conditions of a search on ``resource`` and what may drive its page (``driven.py``).

        ``candidates``: ``SELECT rid`` (and its parameters) of a superset of the rows the narrowing lets through
        (``candidates.py``); used when no criterion selects rows by ``rid``, as an extra ``rid IN`` term
        (true of every visible row, so it changes no result)."""
        driving = by_rid(criteria)
        parts = self.parts(criteria, "resource", self.types)
        visible = self.visible("resource", self.types, by_rid=driving or candidates is not None)
        if not driving and candidates is not None:
            term: Frag = (f"resource.rid IN ({candidates[0]})", candidates[1])
            return Plan(
                conjunction([*visible, term, *(c for c, _ in parts)]), candidates, visible + [c for c, _ in parts]
            )
        # The first criterion read by rid drives (query order; single-valued date ranges come last).
        chosen = next((k for k, (_, sub) in enumerate(parts) if sub is not None), None)
        if chosen is None:
            return Plan(conjunction([*visible, *(c for c, _ in parts)]), None, [])
        rest = [c for k, (c, _) in enumerate(parts) if k != chosen]
        return Plan(conjunction([*visible, *(c for c, _ in parts)]), parts[chosen][1], visible + rest)

    def criteria(self, criteria: Sequence[Condition], r: str, types: Sequence[str]) -> list[Frag]:
        """One condition per criterion; single-valued date criteria of one parameter on one index row."""
        return [condition for condition, _ in self.parts(criteria, r, types)]

    def parts(self, criteria: Sequence[Condition], r: str, types: Sequence[str]) -> list[tuple[Frag, Frag | None]]:
        """``criteria``'s conditions on ``r`` (single-valued date criteria of one parameter on one index
        row), each with the ``SELECT rid`` of its matches when it is a positive semi-join (else None)."""
        parts: list[tuple[Frag, Frag | None]] = []
        others, groups = split_ranges(criteria)
        for criterion in others:
            sub = self.matches(criterion, types)
            parts.append((self.condition(criterion, r, types), sub) if sub is None else (_in(r, sub), sub))
        for group in groups:
            sub = self._same_row(group, types)
            parts.append((_in(r, sub), sub))
        return parts

    def matches(self, criterion: Condition, types: Sequence[str]) -> Frag | None:
        """``SELECT rid`` of the rows a positive semi-join criterion matches (``matching.semi_join``), else None."""
        if isinstance(criterion, ChainCriterion):
            return self._chain(criterion, types)
        if isinstance(criterion, HasCriterion):
            return self._has(criterion, types)
        if not semi_join(criterion):
            return None
        if criterion.kind == "date":
            ranges = [v for v in criterion.values if isinstance(v, RangeValue)]
            return self._dates(criterion.code, [[v] for v in ranges], types)
        table = "idx_" + criterion.kind
        param = self.param_rows(table, types, criterion.code)
        matched = disjunction([match_value(self, criterion, table, v) for v in criterion.values])
        text, values = conjunction([self.type_is(f"{table}.res_type", types), param, matched])
        return f"SELECT {table}.rid FROM {table} WHERE {text}", values

    def condition(self, criterion: Condition, r: str, types: Sequence[str]) -> Frag:
        """The condition of one criterion on rows of ``r`` (of ``types``)."""
        sub = self.matches(criterion, types)
        if sub is not None:
            return _in(r, sub)
        assert isinstance(criterion, Criterion)  # chains and _has are semi-joins
        if criterion.kind == ID:
            ids = [v.code for v in criterion.values if isinstance(v, TokenValue) and v.code is not None]
            return self.in_list(f"{r}.res_id", ids, negated=criterion.modifier == "not")
        if criterion.kind == LAST_UPDATED:
            column = f"{r}.last_updated"
            return disjunction(
                [self.in_range(column, column, v) for v in criterion.values if isinstance(v, RangeValue)]
            )
        table = "idx_" + criterion.kind
        param = self.param_rows(table, types, criterion.code)
        if criterion.modifier == "missing":
            assert isinstance(criterion.values[0], MissingValue)
            text, values = conjunction([(f"{table}.rid = {r}.rid", ()), param])
            present = f"EXISTS (SELECT * FROM {table} WHERE {text})"
            return (f"NOT ({present})" if criterion.values[0].missing else present), values
        matched = disjunction([match_value(self, criterion, table, v) for v in criterion.values])
        text, values = conjunction([(f"{table}.rid = {r}.rid", ()), param, matched])
        return f"NOT (EXISTS (SELECT * FROM {table} WHERE {text}))", values  # negated (positive: matches)

    def _same_row(self, group: list[Criterion], types: Sequence[str]) -> Frag:
        ranges = [c.values[0] for c in group if isinstance(c.values[0], RangeValue)]
        return self._dates(group[0].code, [ranges], types)

    def _dates(self, code: str, groups: Sequence[Sequence[RangeValue]], types: Sequence[str]) -> Frag:
        """``SELECT rid`` of the rows with an ``idx_date`` row of ``code`` meeting every value of some group
        (OR of ANDs).

        When the prefixes bound the stored ranges (``date_ranges.py``), each group joins the ``low``
        range of every span class, a ``VALUES`` list, to the ``(res_type, param, span_class, low)``
        index: one range scan per class, planned once (``sql.SqlBuilder._dates`` states the same as a
        ``UNION ALL`` of one scan per class, which PostgreSQL plans in 1.3 ms instead of 0.5). The
        group's own condition still decides. Else one scan of the parameter's rows."""
        head = [self.type_is("idx_date.res_type", types), self.param_rows("idx_date", types, code)]
        plans = [date_ranges.class_ranges(date_ranges.bounds(group)) for group in groups]
        if not all(plans):
            matched = disjunction(
                [conjunction([self.in_range("idx_date.low", "idx_date.high", v) for v in g]) for g in groups]
            )
            text, values = conjunction([*head, matched])
            return f"SELECT idx_date.rid FROM idx_date WHERE {text}", values
        low = self.filter_only("idx_date.low")  # the class ranges are the only bounds SQLite may use
        first = f"CAST({self.p} AS BIGINT)" if not self.sqlite else self.p  # the type of the list's columns
        branches: list[Frag] = []
        for group, plan in zip(groups, plans, strict=True):
            rows = ", ".join(
                f"({scan.span_class}, {first if n == 0 else self.p}, {first if n == 0 else self.p})"
                for n, scan in enumerate(plan)
            )
            bounds = tuple(
                v
                for scan in plan
                for v in (
                    scan.low_min if scan.low_min is not None else MIN_BOUND,
                    scan.low_max if scan.low_max is not None else MAX_BOUND,
                )
            )
            text, values = conjunction([*head, *(self.in_range(low, "idx_date.high", v) for v in group)])
            branches.append(
                (
                    f"SELECT idx_date.rid FROM (VALUES {rows}) AS span_scan JOIN idx_date "
                    "ON idx_date.span_class = span_scan.column1 AND idx_date.low >= span_scan.column2 "
                    f"AND idx_date.low <= span_scan.column3 WHERE {text}",
                    bounds + values,
                )
            )
        return " UNION ALL ".join(text for text, _ in branches), tuple(v for _, values in branches for v in values)

    # -- values (https://hl7.org/fhir/R4/search.html#ptypes) --------------------------------------------

    def column(self, table: str, name: str) -> str:
        """The column ``name`` of ``table``."""
        return f"{table}.{name}"

    def _has_prefix(self, column: str, prefix: str) -> Frag:
        """``column LIKE 'prefix%'``. On SQLite a LIKE whose pattern is a bound parameter makes the whole
        statement be prepared again at every execution (the LIKE optimization depends on the pattern):
        250 µs for a reference search under a narrowing instead of 12. The same test without LIKE: the
        first characters, ASCII case folded on both sides as SQLite's LIKE folds them."""
        if self.sqlite:
            return f"lower(substr({column}, 1, {self.p})) = lower({self.p})", (len(prefix), prefix)
        return self._like(column, like_escape(prefix) + "%")

    def contains(self, column: str, text: str) -> Frag:
        """``column LIKE '%text%'`` (on SQLite without a bound LIKE pattern: ``_has_prefix`` says why)."""
        if self.sqlite:
            return f"instr(lower({column}), lower({self.p})) > 0", (text,)
        return self._like(column, "%" + like_escape(text) + "%")

    def equals(self, column: str, text: str) -> Frag:
        """``column = text``."""
        return f"{column} = {self.p}", (text,)

    def _like(self, column: str, pattern: str) -> Frag:
        return f"{column} LIKE {self.p} ESCAPE '{_ESCAPE}'", (pattern,)

    def starts_with(self, column: str, prefix: str) -> Frag:
        """A b-tree range on SQLite (bytewise order), ``LIKE 'prefix%'`` on PostgreSQL (see ``sql.py``)."""
        upper = successor(prefix) if self.sqlite else None
        if upper is None:
            return self._has_prefix(column, prefix)
        return f"{column} >= {self.p} AND {column} < {self.p}", (prefix, upper)

    def in_range(self, low: str, high: str, value: RangeValue) -> Frag:
        """``sql._range``: the resource's ``[low, high]`` against the search range, by prefix."""
        ql, qh, p = value.low, value.high, self.p
        prefix = value.prefix
        if prefix == "eq":
            return f"{low} >= {p} AND {low} <= {p} AND {high} <= {p}", (ql, qh, qh)
        if prefix == "ne":
            return f"{low} < {p} OR {high} > {p}", (ql, qh)
        if prefix == "gt":
            return f"{high} > {p}", (qh,)
        if prefix == "lt":
            return f"{low} < {p}", (ql,)
        if prefix == "ge":
            return f"{high} > {p} OR {low} >= {p}", (qh, ql)
        if prefix == "le":
            return f"({low} < {p} OR {high} <= {p}) AND {low} <= {p}", (ql, qh, qh)
        if prefix == "sa":
            return f"{low} > {p}", (qh,)
        if prefix == "eb":
            return f"{high} < {p} AND {low} < {p}", (ql, ql)
        return f"{low} <= {p} AND {high} >= {p}", (qh, ql)  # ap

    def number(self, low: str, high: str, value: NumberValue) -> Frag:
        """``sql.SqlBuilder.number``: the midpoint of the stored interval lies in the search interval."""
        midpoint = f"({low} + {high}) / 2"
        inside: list[Frag] = []
        if value.low != float("-inf"):
            inside.append((f"{midpoint} >= {self.p}", (value.low,)))
        if value.high != float("inf"):
            inside.append((f"{midpoint} <= {self.p}", (value.high,)))
        if value.negated:
            text, values = conjunction(inside)
            return f"NOT ({text})", values
        if value.high != float("inf"):
            inside.append((f"{low} <= {self.p}", (value.high,)))
        return conjunction(inside)

    def token(self, system: str, code: str, value: TokenValue) -> Frag:
        """``sql.SqlBuilder.token``: ``[system]|[code]``."""
        conditions: list[Frag] = []
        if value.code is not None:
            conditions.append((f"{code} = {self.p}", (value.code,)))
        if value.system == "":
            conditions.append((f"{system} IS NULL OR {system} = {self.p}", ("",)))
        elif value.system is not None:
            conditions.append((f"{system} = {self.p}", (value.system,)))
        return conjunction(conditions)

    def quantity(self, t: str, value: QuantityValue) -> Frag:
        """``sql.SqlBuilder.quantity``: the amount as a number, and the unit."""
        if value.code is None:
            unit: list[Frag] = [(f"{t}.system = {self.p}", (value.system,))] if value.system is not None else []
        elif value.system is None:  # number||code: the code, or the unit as written
            unit = [(f"{t}.code = {self.p} OR {t}.unit = {self.p}", (value.code, value.code))]
        else:
            unit = [(f"{t}.system = {self.p}", (value.system,)), (f"{t}.code = {self.p}", (value.code,))]
        return conjunction([self.number(f"{t}.low", f"{t}.high", value.amount), *unit])

    def reference(self, t: str, value: ReferenceValue) -> Frag:
        """``sql.SqlBuilder.reference``: a canonical url, or a local or same-server reference."""
        if value.id is None:
            return f"{t}.url = {self.p}", (value.url,)
        local: list[Frag] = [(f"{t}.target_id = {self.p}", (value.id,))]
        if value.type is not None:
            local.append((f"{t}.target_type = {self.p}", (value.type,)))
        # Stored absolute references keep their url: only those on this server's base point here.
        url, values = self._has_prefix(f"{t}.url", value.base + "/")
        local.append((f"{t}.url IS NULL OR {url}", values))
        return conjunction(local)

    def uri(self, column: str, text: str, modifier: str | None) -> Frag:
        """``sql.SqlBuilder.uri``: exact, ``:below``, ``:above`` or ``:contains``."""
        if modifier == "below":
            return self._has_prefix(column, text)
        if modifier == "above":
            parts = text.split("/")
            prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
            return self.in_list(column, [p for p in prefixes if p])
        if modifier == "contains":
            return self.contains(column, text)
        return f"{column} = {self.p}", (text,)

    def words_start(self, column: str, text: str) -> Frag:
        """Some word of the folded text starts with ``text`` (``:text``)."""
        return disjunction([self._has_prefix(column, text), self.contains(column, " " + text)])

    # -- chains and reverse chains (sql.SqlBuilder._chain / _has) ---------------------------------------

    def _chain(self, criterion: ChainCriterion, types: Sequence[str]) -> Frag:
        branches: list[Frag] = []
        for target_type, inner in criterion.targets:
            target = f"chain_{target_type.lower()}"
            where, values = conjunction(
                [
                    *self.visible(target, (target_type,), by_rid=by_rid([inner])),
                    self.condition(inner, target, (target_type,)),
                ]
            )
            branches.append(
                (
                    f"chain_ref.target_type = {self.p} AND chain_ref.target_id IN "
                    f"(SELECT {target}.res_id FROM resource AS {target} WHERE {where})",
                    (target_type, *values),
                )
            )
        text, values = conjunction(
            [
                self.type_is("chain_ref.res_type", types),
                self.param_rows("chain_ref", types, criterion.code),
                disjunction(branches),
            ]
        )
        return f"SELECT chain_ref.rid FROM idx_reference AS chain_ref WHERE {text}", values

    def _has(self, criterion: HasCriterion, types: Sequence[str]) -> Frag:
        sources, source_values = conjunction(
            [
                *self.visible("has_source", (criterion.source_type,), by_rid=by_rid([criterion.inner])),
                self.condition(criterion.inner, "has_source", (criterion.source_type,)),
            ]
        )
        ref_type, target_type = (self.filter_only(f"has_ref.{c}") for c in ("res_type", "target_type"))
        text, values = conjunction(
            [
                (f"has_ref.rid IN (SELECT has_source.rid FROM resource AS has_source WHERE {sources})", source_values),
                (f"{ref_type} = {self.p}", (criterion.source_type,)),
                self.param_rows("has_ref", (criterion.source_type,), criterion.ref_code, filter_only=True),
                self.type_is(target_type, types),
            ]
        )
        return (
            "SELECT has_target.rid FROM idx_reference AS has_ref JOIN resource AS has_target "
            "ON has_target.res_type = has_ref.target_type AND has_target.res_id = has_ref.target_id "
            f"WHERE {text}",
            values,
        )

    # -- sorting (sql.SqlBuilder.sort_expression) -------------------------------------------------------

    def sort_expression(self, key: SortKey, r: str = "resource") -> Frag:
        """The value a resource sorts by: a column, or the least (ascending) / greatest (descending)
        of its indexed values for the parameter; NULL when it has none."""
        if key.kind == ID:
            return f"{r}.res_id", ()
        if key.kind == LAST_UPDATED:
            return f"{r}.last_updated", ()
        alias = '"sort_' + "".join(c if c.isalnum() else "_" for c in key.code) + '"'
        if key.kind in ("date", "number", "quantity"):
            column = "high" if key.descending else "low"
        elif key.kind == "token":
            column = "code"
        else:
            column = "value"
        aggregate = "max" if key.descending else "min"
        rows, values = self.param_rows(alias, self.types, key.code)
        return (
            f"(SELECT {aggregate}({alias}.{column}) FROM idx_{key.kind} AS {alias} "
            f"WHERE {alias}.rid = {r}.rid AND {rows})",
            values,
        )
