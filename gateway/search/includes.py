"""``_include`` and ``_revinclude``: resources added to a page beside its matches.

https://hl7.org/fhir/R4/search.html#include: ``_include=Type:param[:target]`` adds what the page's
``Type`` resources point to through ``param``; ``_revinclude=Type:param[:target]`` adds the ``Type``
resources whose ``param`` points to the page's resources; ``*`` stands for every reference parameter.
``:iterate`` applies the parameter again to what was added, round after round, until nothing new
comes or ``max_includes`` resources have been added.

A resource is added once (never when it is already a match), deleted resources never, and only those
the caller's narrowing lets through. Included resources are not counted in ``Bundle.total``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from sqlalchemy import ColumnElement, Connection, select

from gateway.search.query import Include
from gateway.search.sql import SqlBuilder
from gateway.store.schema import idx_reference, resource


@dataclass(frozen=True, slots=True)
class Ref:
    """A returned resource, as far as includes need it."""

    rid: int
    res_type: str
    res_id: str
    body: bytes | None = field(default=None, compare=False)
    """The stored bytes, when the query that found the resource read them too (the prepared path)."""


@dataclass
class Included:
    """The outcome of include processing."""

    refs: list[Ref]
    truncated: bool


class Fetcher(Protocol):
    """The two queries of include processing; ``limit + 1`` rows at most, ordered by ``rid``."""

    def forward(self, rule: Include, frontier: Sequence[Ref], limit: int) -> list[Ref]:
        """What the frontier's ``rule.source_type`` resources reference through ``rule.param``."""
        ...

    def reverse(self, rule: Include, frontier: Sequence[Ref], limit: int) -> list[Ref]:
        """The ``rule.source_type`` resources whose ``rule.param`` points at the frontier."""
        ...


@dataclass(frozen=True, slots=True)
class _CoreFetcher:
    """``Fetcher`` over SQLAlchemy Core statements."""

    conn: Connection
    builder: SqlBuilder

    def forward(self, rule: Include, frontier: Sequence[Ref], limit: int) -> list[Ref]:
        return _forward(self.conn, self.builder, rule, frontier, limit)

    def reverse(self, rule: Include, frontier: Sequence[Ref], limit: int) -> list[Ref]:
        return _reverse(self.conn, self.builder, rule, frontier, limit)


def resolve(
    conn: Connection,
    builder: SqlBuilder,
    matches: Sequence[Ref],
    *,
    includes: Sequence[Include],
    revincludes: Sequence[Include],
    max_includes: int,
) -> Included:
    """The resources ``includes``/``revincludes`` add to a page of ``matches``, in order of discovery."""
    return resolve_with(
        _CoreFetcher(conn, builder), matches, includes=includes, revincludes=revincludes, max_includes=max_includes
    )


def resolve_with(
    fetcher: Fetcher,
    matches: Sequence[Ref],
    *,
    includes: Sequence[Include],
    revincludes: Sequence[Include],
    max_includes: int,
) -> Included:
    """``resolve`` with the queries of ``fetcher``."""
    seen = {ref.rid for ref in matches}
    added: list[Ref] = []
    frontier = list(matches)
    rules = [(rule, False) for rule in includes] + [(rule, True) for rule in revincludes]
    while frontier and rules:
        discovered: list[Ref] = []
        for rule, reverse in rules:
            budget = max_includes - len(added) - len(discovered)
            if budget <= 0:  # full: whatever the remaining rules would add is left out
                return Included(added + discovered, truncated=True)
            fetch = fetcher.reverse if reverse else fetcher.forward
            found = fetch(rule, frontier, budget)
            for ref in found[:budget]:
                if ref.rid not in seen:
                    seen.add(ref.rid)
                    discovered.append(ref)
            if len(found) > budget:  # the query hit its limit: there is more than room
                return Included(added + discovered, truncated=True)
        added.extend(discovered)
        frontier = discovered
        rules = [(rule, reverse) for rule, reverse in rules if rule.iterate]
    return Included(added, truncated=False)


def _forward(conn: Connection, builder: SqlBuilder, rule: Include, frontier: Sequence[Ref], limit: int) -> list[Ref]:
    """What the frontier's ``rule.source_type`` resources reference through ``rule.param``."""
    sources = [ref.rid for ref in frontier if rule.source_type is None or ref.res_type == rule.source_type]
    if not sources:
        return []
    target = resource.alias("included")
    # The page's rids select the reference rows; the other terms only filter them.
    conditions: list[ColumnElement[bool]] = [idx_reference.c.rid.in_(sources)]
    if rule.source_type is not None:
        conditions.append(builder.filter_only(idx_reference.c.res_type) == rule.source_type)
    if rule.param is not None:  # its stored rows (``sources.py``)
        conditions.append(builder.param_rows(idx_reference, _types(rule, builder), rule.param, filter_only=True))
    if rule.target is not None:
        conditions.append(builder.filter_only(idx_reference.c.target_type) == rule.target)
    statement = (
        select(target.c.rid, target.c.res_type, target.c.res_id)
        .select_from(
            idx_reference.join(
                target,
                (target.c.res_type == idx_reference.c.target_type) & (target.c.res_id == idx_reference.c.target_id),
            )
        )
        .where(*conditions, *builder.visible(target, _only(rule.target)))
        .distinct()
        .order_by(target.c.rid)
        .limit(limit + 1)
    )
    return [Ref(row.rid, row.res_type, row.res_id) for row in conn.execute(statement)]


def _reverse(conn: Connection, builder: SqlBuilder, rule: Include, frontier: Sequence[Ref], limit: int) -> list[Ref]:
    """The ``rule.source_type`` resources whose ``rule.param`` points at the frontier."""
    by_type: dict[str, list[str]] = {}
    for ref in frontier:
        if rule.target is None or ref.res_type == rule.target:
            by_type.setdefault(ref.res_type, []).append(ref.res_id)
    if not by_type:
        return []
    source = resource.alias("revincluded")
    found: list[Ref] = []
    for target_type, ids in by_type.items():
        conditions: list[ColumnElement[bool]] = [
            idx_reference.c.target_type == target_type,
            idx_reference.c.target_id.in_(ids),
        ]
        if rule.source_type is not None:
            conditions.append(idx_reference.c.res_type == rule.source_type)
        if rule.param is not None:
            conditions.append(builder.param_rows(idx_reference, _types(rule, builder), rule.param))
        statement = (
            select(source.c.rid, source.c.res_type, source.c.res_id)
            .select_from(idx_reference.join(source, source.c.rid == idx_reference.c.rid))
            .where(*conditions, *builder.visible(source, _only(rule.source_type)))
            .distinct()
            .order_by(source.c.rid)
            .limit(limit + 1 - len(found))
        )
        found.extend(Ref(row.rid, row.res_type, row.res_id) for row in conn.execute(statement))
        if len(found) > limit:
            break
    return found


def _types(rule: Include, builder: SqlBuilder) -> tuple[str, ...]:
    return (rule.source_type,) if rule.source_type is not None else builder.types


def _only(res_type: str | None) -> tuple[str, ...] | None:
    return (res_type,) if res_type is not None else None
