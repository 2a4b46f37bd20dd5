"""How a parsed search expression becomes SQL conditions, decided once for both SQL builders.

``sql.py`` writes a search as SQLAlchemy Core expressions and ``sqltext.py`` as driver SQL text; they
must agree on every choice that is not about the form of the SQL (``tests/search/test_prepared.py``
checks that they return the same pages). Those choices live here:

- which value of which parameter type and modifier is matched how
  (https://hl7.org/fhir/R4/search.html#ptypes, #modifiers): ``match_value``, over a ``ValueSql`` that
  each builder implements in its own form;
- which criteria are semi-joins on ``rid`` (and so may select the rows) and which only filter:
  ``semi_join``, ``by_rid``;
- which date criteria are tested against the same index row (``split_ranges``; ``sql.py`` says why);
- the upper bound of a prefix range (``successor``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeVar

from gateway.search.query import ID, LAST_UPDATED, Condition, Criterion
from gateway.search.values import NumberValue, QuantityValue, RangeValue, ReferenceValue, TextValue, TokenValue, Value

Table_contra = TypeVar("Table_contra", contravariant=True)
Column_T = TypeVar("Column_T")
Condition_co = TypeVar("Condition_co", covariant=True)


class ValueSql(Protocol[Table_contra, Column_T, Condition_co]):
    """The conditions one builder writes for one search value on an ``idx_*`` table (or its columns)."""

    def column(self, table: Table_contra, name: str) -> Column_T:
        """The column ``name`` of ``table``."""
        ...

    def in_range(self, low: Column_T, high: Column_T, value: RangeValue) -> Condition_co:
        """The stored ``[low, high]`` against the searched range, by prefix (#prefix)."""
        ...

    def number(self, low: Column_T, high: Column_T, value: NumberValue) -> Condition_co:
        """The midpoint of the stored interval lies in the searched interval (#number)."""
        ...

    def quantity(self, table: Table_contra, value: QuantityValue) -> Condition_co:
        """The amount as a number, and the unit's system and code (#quantity)."""
        ...

    def token(self, system: Column_T, code: Column_T, value: TokenValue) -> Condition_co:
        """``[system]|[code]`` (#token)."""
        ...

    def reference(self, table: Table_contra, value: ReferenceValue) -> Condition_co:
        """A local or absolute reference, or a canonical url (#reference)."""
        ...

    def words_start(self, column: Column_T, text: str) -> Condition_co:
        """Some word of the folded text starts with ``text`` (``:text``)."""
        ...

    def uri(self, column: Column_T, text: str, modifier: str | None) -> Condition_co:
        """Exact, ``:below``, ``:above`` or ``:contains`` (#uri)."""
        ...

    def equals(self, column: Column_T, text: str) -> Condition_co:
        """``column = text`` (``:exact``)."""
        ...

    def contains(self, column: Column_T, text: str) -> Condition_co:
        """``text`` anywhere in the folded value (``:contains``)."""
        ...

    def starts_with(self, column: Column_T, text: str) -> Condition_co:
        """The folded value starts with ``text`` (the default string match, #string)."""
        ...


Table = TypeVar("Table")
Column = TypeVar("Column")
Result = TypeVar("Result")


def match_value(sql: ValueSql[Table, Column, Result], criterion: Criterion, table: Table, value: Value) -> Result:
    """The condition an ``idx_*`` row of ``table`` meets when it matches ``value`` of ``criterion``."""
    kind, modifier = criterion.kind, criterion.modifier
    if isinstance(value, RangeValue):
        return sql.in_range(sql.column(table, "low"), sql.column(table, "high"), value)
    if isinstance(value, NumberValue):
        return sql.number(sql.column(table, "low"), sql.column(table, "high"), value)
    if isinstance(value, QuantityValue):
        return sql.quantity(table, value)
    if isinstance(value, TokenValue):
        if kind == "reference":  # :identifier
            return sql.token(sql.column(table, "identifier_system"), sql.column(table, "identifier_value"), value)
        return sql.token(sql.column(table, "system"), sql.column(table, "code"), value)
    if isinstance(value, ReferenceValue):
        return sql.reference(table, value)
    assert isinstance(value, TextValue)
    if kind == "token":  # :text, on the display/text folded at indexing
        return sql.words_start(sql.column(table, "text"), value.text)
    if kind == "uri":
        return sql.uri(sql.column(table, "value"), value.text, modifier)
    if modifier == "exact":
        return sql.equals(sql.column(table, "exact"), value.text)
    if modifier == "contains":
        return sql.contains(sql.column(table, "value"), value.text)
    if modifier == "text":
        return sql.words_start(sql.column(table, "value"), value.text)
    return sql.starts_with(sql.column(table, "value"), value.text)


def semi_join(criterion: Condition) -> bool:
    """True when the criterion is a positive semi-join ``rid IN (SELECT rid ...)``, which can select
    rows by itself; ``_id``, ``_lastUpdated``, ``:missing`` and negated criteria only filter them."""
    if not isinstance(criterion, Criterion):
        return True
    return criterion.kind not in (ID, LAST_UPDATED) and criterion.modifier != "missing" and not criterion.negated


def by_rid(criteria: Sequence[Condition]) -> bool:
    """True when a semi-join on ``rid`` selects the rows (and no ``_id`` list, which the
    ``(res_type, res_id)`` key answers better)."""
    has_ids = any(isinstance(c, Criterion) and c.kind == ID for c in criteria)
    return not has_ids and any(semi_join(c) for c in criteria)


def is_single_range(criterion: Criterion) -> bool:
    """A date criterion with one value and no modifier: tested on the same index row as the other
    such criteria of its parameter (``date=ge2024-01-01&date=lt2024-02-01``)."""
    return criterion.kind == "date" and criterion.modifier is None and len(criterion.values) == 1


def split_ranges(criteria: Sequence[Condition]) -> tuple[list[Condition], list[list[Criterion]]]:
    """``criteria`` in query order without the single-valued date criteria, and those grouped by
    parameter (in the order their parameters first appear)."""
    others: list[Condition] = []
    ranges: dict[str, list[Criterion]] = {}
    for criterion in criteria:
        if isinstance(criterion, Criterion) and is_single_range(criterion):
            ranges.setdefault(criterion.code, []).append(criterion)
        else:
            others.append(criterion)
    return others, list(ranges.values())


def successor(prefix: str) -> str | None:
    """The least string greater than every string starting with ``prefix`` (code point order), if any."""
    chars = list(prefix)
    while chars:
        code = ord(chars[-1]) + 1
        if code == 0xD800:  # surrogates do not exist in UTF-8 text
            code = 0xE000
        if code <= 0x10FFFF:
            chars[-1] = chr(code)
            return "".join(chars)
        chars.pop()
    return None
