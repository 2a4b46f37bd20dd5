"""Narrowed searches driven from what the caller may see (issue 5; DESIGN.md choice 7).

A search without a selective criterion (``Condition?_count=20``) walks the type's rows in ``rid`` order and
checks each against the caller's narrowing: cheap for the plan, but a patient token sees one compartment,
a handful of rows among thousands, and the walk probes them all. ``DrivenNarrowing`` is a ``Narrowing``
(the visibility condition, unchanged) that also names a *superset* of the rows it lets through, as a
``SELECT rid``: the reference index rows pointing at the launch patient (R4 CompartmentDefinition
``patient``), or at the members of the caller's organization (``gateway.auth.access`` builds both). The
page, count and sort statements then read those rows by ``rid`` and still apply the full condition to
each, so the results, totals and paging are exactly those of the walk: the candidates only choose where
the statement starts, never what it returns.

The candidates' SQL is compiled once per narrowing, types and dialect and kept in a bounded LRU; a grant's
narrowing is compiled from its shape's template, with the grant's organization and patient as bound
parameters (``gateway.search.bound``), so grants of one shape share the text.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from sqlalchemy import ColumnElement, CompoundSelect, Dialect, FromClause, Select

from gateway.search.bound import bind_values, placeholders
from gateway.search.sql import Narrowing

__all__ = ["CandidateRows", "CandidatesCache", "DrivenNarrowing", "RowIds", "candidates_of"]

CANDIDATES_CACHE_SIZE = 512

RowIds: TypeAlias = "Select[Any] | CompoundSelect[Any]"
"""A ``SELECT rid`` (or a ``UNION ALL`` of them)."""


@dataclass(frozen=True, slots=True)
class CandidateRows:
    """``SELECT rid`` of a superset of the rows a narrowing lets through."""

    statement: RowIds
    few: bool
    """The rows of one patient's compartment (tens): worth driving any statement. An organization's
    members' rows are thousands, often a large share of the type: they drive counts, while a page is
    found sooner by walking the type's rows in ``rid`` order and checking each."""


Candidates: TypeAlias = Callable[[tuple[str, ...]], "CandidateRows | None"]
"""Types → the candidates of a superset of the visible rows of those types (``None``: no useful superset,
e.g. a type the caller sees whole)."""


@dataclass(frozen=True, eq=False)
class DrivenNarrowing:
    """A ``Narrowing`` that can also say which rows it may let through (hashable by identity, like the
    closures ``Access.narrowing`` caches per grant)."""

    condition: Narrowing
    candidates: Candidates
    template: DrivenNarrowing | None = None
    """The same narrowing for the grant's shape, built on the markers of ``gateway.search.bound``: the
    driver SQL of this one is the template's text with ``values`` bound (None: compile this one inline)."""
    values: Mapping[str, str | None] = field(default_factory=dict)
    """Marker → this grant's value (its organization and launch patient)."""

    def __call__(self, r: FromClause, types: Sequence[str] | None) -> ColumnElement[bool]:
        return self.condition(r, types)


class CandidatesCache:
    """``SELECT rid`` text of a narrowing's candidates per (narrowing, types, dialect): an LRU."""

    def __init__(self, size: int = CANDIDATES_CACHE_SIZE) -> None:
        self.size = size
        self._entries: OrderedDict[tuple[Any, ...], tuple[tuple[str, tuple[str, ...]], bool] | None] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(
        self, narrowing: Narrowing | None, types: tuple[str, ...], dialect: Dialect
    ) -> tuple[tuple[str, tuple[Any, ...]], bool] | None:
        """The candidates of ``narrowing`` for rows of ``types`` as driver SQL with its parameters, and
        whether they are few (``CandidateRows.few``), or ``None``."""
        if not isinstance(narrowing, DrivenNarrowing):
            return None
        compiled = narrowing.template or narrowing
        key = (compiled, types, dialect.name, dialect.paramstyle)
        with self._lock:
            hit = key in self._entries
            if hit:
                self._entries.move_to_end(key)
                found = self._entries[key]
        if not hit:
            found = self._compile(compiled, types, dialect)
            with self._lock:
                self._entries[key] = found
                while len(self._entries) > self.size:
                    self._entries.popitem(last=False)
        if found is None:
            return None
        (text, names), few = found
        return (text, bind_values(names, narrowing.values) if names else ()), few

    @staticmethod
    def _compile(
        narrowing: DrivenNarrowing, types: tuple[str, ...], dialect: Dialect
    ) -> tuple[tuple[str, tuple[str, ...]], bool] | None:
        compiled = candidates_of(narrowing, types, dialect)
        return None if compiled is None else (placeholders(compiled[0], dialect), compiled[1])


def candidates_of(narrowing: DrivenNarrowing, types: tuple[str, ...], dialect: Dialect) -> tuple[str, bool] | None:
    """``narrowing.candidates(types)`` compiled for ``dialect`` with its constants inline, and ``few``."""
    rows = narrowing.candidates(types)
    if rows is None:
        return None
    # Literal percent signs come out doubled for the %s paramstyles, as the statement around them needs.
    return str(rows.statement.compile(dialect=dialect, compile_kwargs={"literal_binds": True}).string), rows.few
