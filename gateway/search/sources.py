"""Which stored index rows answer a search parameter: each row written once (issues 2, 6, 7).

https://hl7.org/fhir/R4/search.html#ptypes defines a parameter's values by its FHIRPath expression. Many
R4 parameters select values other parameters of the same resource already select, so their rows repeat
rows the store holds anyway. Three kinds are derived here from the registry (the vendored R4
SearchParameter definitions and any project ones), never from a list of names:

- **alias**: the same type, expression and targets as an earlier parameter of the resource type
  (Patient ``phonetic`` = ``name``, Coverage ``patient`` = ``beneficiary``, ServiceRequest ``service`` =
  ``code``): answered by that parameter's rows; none of its own are stored.
- **narrowed**: a reference parameter whose expression is ``X.where(resolve() is T)`` (or a union of
  such), ``X`` being another reference parameter's whole expression (``patient`` =
  ``subject.where(resolve() is Patient)``, Task ``patient`` = ``for.where(resolve() is Patient)``):
  answered by ``X``'s rows whose ``target_type`` is ``T``, plus its own stored rows, which are only those
  ``X``'s rows cannot give (a ``urn:`` reference typed by ``Reference.type`` has no ``target_type``). Not
  derived when ``X`` has the single target ``T``: ``X`` types an untyped identifier-only reference by it,
  while ``resolve() is T`` drops that reference.
- **parent**: a string parameter of a ``HumanName`` or ``Address`` (every part,
  ``extractors.PART_NAMES``) whose parts are also parameters of their own (``family`` =
  ``Patient.name.family``, ``address-city`` = ``Patient.address.city``): answered by its own rows plus
  its children's; its own row is stored only when no child row of the resource has the same
  ``(value, exact)``.

``sources`` gives the readers (both SQL builders, includes, look-ups, membership, access) the stored rows
of a parameter; ``stored_values`` gives the writers the rows to store. The sets of rows a reader sees for
a parameter are exactly the full extraction's (tests/search/test_sources.py checks both on examples
and random resources). Existing stores: migration 0016 deletes the rows these rules no longer write.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.search.extract import plan_for
from gateway.search.extractors import PART_NAMES
from gateway.search.registry import INDEXED_TYPES, Registry, SearchParam, default_registry

__all__ = ["Source", "TypeRules", "rules_for", "source_groups", "sources", "stored_values"]


@dataclass(frozen=True, slots=True)
class Source:
    """Stored rows that answer a parameter: those of ``param``, only those pointing at ``target_type``
    when it is set (reference rows)."""

    param: str
    target_type: str | None = None


@dataclass(slots=True)
class TypeRules:
    """The derivation rules of one resource type."""

    sources: dict[str, tuple[Source, ...]] = field(default_factory=dict)
    """Parameter code → the stored rows that answer it (only for derived parameters)."""
    aliases: frozenset[str] = frozenset()
    """Parameters none of whose rows are stored."""
    narrowed: dict[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)
    """Reference parameter → its (broader parameter, target type) pairs: its rows found among the broader
    one's with that target type are not stored."""
    parents: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """String parameter → its child parameters: its rows equal to a child's row are not stored."""
    kinds: frozenset[str] = frozenset()
    """The index kinds some rule drops rows of (the others are stored as extracted)."""
    parents_of: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Child string parameter → its parents (``parents`` inverted)."""

    @property
    def writes_all(self) -> bool:
        """No rule: every extracted row is stored."""
        return not self.kinds


_WHERE = re.compile(r"(?P<base>.+)\.where\(resolve\(\) is (?P<target>[A-Z]\w*)\)")
_RULES: dict[tuple[int, str], tuple[Registry, tuple[SearchParam, ...], TypeRules]] = {}


def rules_for(res_type: str, registry: Registry | None = None) -> TypeRules:
    """The rules of ``res_type`` in ``registry`` (default: the vendored one), rebuilt when its parameters change."""
    registry = registry if registry is not None else default_registry()
    params = tuple(registry.for_type(res_type).values())
    cached = _RULES.get((id(registry), res_type))
    if cached is not None and cached[0] is registry and cached[1] == params:
        return cached[2]
    rules = _derive(res_type, registry)
    _RULES[(id(registry), res_type)] = (registry, params, rules)
    return rules


def sources(res_type: str, code: str, registry: Registry | None = None) -> tuple[Source, ...]:
    """The stored rows answering ``res_type``'s parameter ``code``: ``(Source(code),)`` unless derived."""
    return rules_for(res_type, registry).sources.get(code) or (Source(code),)


def source_groups(
    types: Sequence[str], code: str, registry: Registry | None = None
) -> list[tuple[tuple[str, ...], tuple[Source, ...]]]:
    """``types`` grouped by the sources of ``code`` in each (the mapping is per type: ``service`` is
    ``code`` on ServiceRequest but its own rows elsewhere), in the order of ``types``."""
    groups: dict[tuple[Source, ...], list[str]] = {}
    for res_type in types:
        groups.setdefault(sources(res_type, code, registry), []).append(res_type)
    return [(tuple(group), found) for found, group in groups.items()]


def params_for_target(
    res_type: str, codes: Sequence[str], target_type: str, registry: Registry | None = None
) -> tuple[str, ...]:
    """The stored parameters whose rows pointing at ``target_type`` are the rows of ``codes`` pointing at it
    (readers that fix ``target_type`` themselves: the compartment probes, the look-ups by reference)."""
    out: dict[str, None] = {}
    for code in codes:
        for source in sources(res_type, code, registry):
            if source.target_type is None or source.target_type == target_type:
                out[source.param] = None
    return tuple(out)


Rows = Sequence[Sequence[Any]]
"""Index rows of one kind, each ``(param, *COLUMNS[kind])`` (tuples, or lists when they travelled as JSON)."""


def stored_values(res_type: str, values: Mapping[str, Rows], registry: Registry | None = None) -> Mapping[str, Rows]:
    """The rows of the full extraction ``values`` (``extract.extract_values``) that the store keeps."""
    rules = rules_for(res_type, registry)
    if not rules.kinds:
        return values
    out = dict(values)
    for kind in rules.kinds:
        rows = values.get(kind)
        if not rows:
            continue
        kept = [r for r in rows if r[0] not in rules.aliases] if rules.aliases else rows
        try:
            if kind == "reference" and rules.narrowed:
                kept = _without_narrowed(kept, rules.narrowed)
            elif kind == "string" and rules.parents:
                kept = _without_parents(kept, rules.parents_of)
        except TypeError:  # a malformed value (a list where a string belongs): keeping rows is always safe
            pass
        out[kind] = kept
    return out


def _without_narrowed(rows: Rows, narrowed: dict[str, tuple[tuple[str, str], ...]]) -> Rows:
    """``rows`` less a narrowed parameter's rows that equal a row of its broader parameter pointing at
    the narrowing's target type."""
    present: set[tuple[Any, ...]] | None = None  # built only when a narrowed parameter has rows
    kept: list[Sequence[Any]] = []
    for row in rows:
        pairs = narrowed.get(row[0])
        if pairs is not None:
            if present is None:
                present = {tuple(r) for r in rows}
            if any(row[1] == target and (broad, *row[1:]) in present for broad, target in pairs):
                continue
        kept.append(row)
    return kept


def _without_parents(rows: Rows, parents_of: dict[str, tuple[str, ...]]) -> Rows:
    """String ``rows`` (``param, value, exact``) less a parent parameter's rows whose ``(value, exact)`` a
    row of one of its children has."""
    given: dict[str, set[tuple[Any, Any]]] = {}  # parent → its children's (value, exact)
    for row in rows:
        of = parents_of.get(row[0])
        if of is not None:
            for parent in of:
                given.setdefault(parent, set()).add((row[1], row[2]))
    if not given:
        return rows
    kept: list[Sequence[Any]] = []
    for row in rows:
        repeated = given.get(row[0])
        if repeated is None or (row[1], row[2]) not in repeated:
            kept.append(row)
    return kept


def _derive(res_type: str, registry: Registry) -> TypeRules:
    """The rules of ``res_type`` from its parameters' types, expressions and targets (module docstring)."""
    params = [p for p in registry.for_type(res_type).values() if p.type in INDEXED_TYPES]
    plans = {plan.code: plan for plan in plan_for(res_type, registry)}
    indexed = [p for p in params if p.code in plans]
    first: dict[tuple[str, str, tuple[str, ...]], str] = {}
    alias_of: dict[str, str] = {}
    for p in indexed:
        key = (p.type, str(p.expression), p.targets)
        if key in first:
            alias_of[p.code] = first[key]
        else:
            first[key] = p.code
    canonical = [p for p in indexed if p.code not in alias_of]
    by_expression: dict[tuple[str, str], SearchParam] = {}
    for p in canonical:
        by_expression.setdefault((p.type, str(p.expression)), p)

    narrowed: dict[str, tuple[tuple[str, str], ...]] = {}
    for p in canonical:
        if p.type == "reference":
            pairs = _narrowing(p, by_expression)
            if pairs:
                narrowed[p.code] = pairs
    parents: dict[str, tuple[str, ...]] = {}
    for p in canonical:
        if p.type != "string" or plans[p.code].path.types not in {(t,) for t in PART_NAMES}:
            continue
        parts = PART_NAMES[plans[p.code].path.types[0]]
        children = tuple(
            c.code
            for c in canonical
            if c.type == "string"
            and c.code != p.code
            and plans[c.code].path.types == ("string",)
            and any(str(c.expression) == f"{p.expression}.{part}" for part in parts)
        )
        if children:
            parents[p.code] = children

    found: dict[str, tuple[Source, ...]] = {}
    for code, pairs in narrowed.items():
        found[code] = (*(Source(broad, target) for broad, target in pairs), Source(code))
    for code, children in parents.items():
        found[code] = (Source(code), *(Source(c) for c in children))
    for code, target in alias_of.items():
        found[code] = found.get(target, (Source(target),))
    kinds = {plans[code].kind for code in alias_of} | ({"reference"} if narrowed else set())
    kinds |= {"string"} if parents else set()
    parents_of: dict[str, tuple[str, ...]] = {}
    for code, children in parents.items():
        for child in children:
            parents_of[child] = (*parents_of.get(child, ()), code)
    return TypeRules(found, frozenset(alias_of), narrowed, parents, frozenset(kinds), parents_of)


def _narrowing(param: SearchParam, by_expression: dict[tuple[str, str], SearchParam]) -> tuple[tuple[str, str], ...]:
    """``param``'s (broader parameter, target) pairs when every union member of its expression is
    ``X.where(resolve() is T)`` with ``X`` another reference parameter's expression; else ``()``."""
    pairs: list[tuple[str, str]] = []
    for member in str(param.expression).split(" | "):
        match = _WHERE.fullmatch(member.strip())
        if match is None:
            return ()
        broad = by_expression.get(("reference", match["base"]))
        target = match["target"]
        if broad is None or broad.code == param.code or broad.targets == (target,) or _WHERE.fullmatch(match["base"]):
            return ()
        pairs.append((broad.code, target))
    return tuple(pairs)
