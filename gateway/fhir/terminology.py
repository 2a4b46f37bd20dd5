"""ValueSet expansion for required bindings of profiles: https://hl7.org/fhir/R4/valueset.html#expansion.

A profile's ``binding`` with strength ``required`` (https://hl7.org/fhir/R4/terminologies.html#required)
needs the set of codes it allows. ``Terminology`` expands a ValueSet's ``compose``
(https://hl7.org/fhir/R4/valueset-definitions.html#ValueSet.compose) into ``(system, code)`` pairs:

- ``include.concept``: an explicit list of codes of any system (also systems not defined here: HCPCS);
- ``include.system`` alone: every code of a CodeSystem held here whose ``content`` is ``complete``
  (https://hl7.org/fhir/R4/codesystem-definitions.html#CodeSystem.content), hierarchy flattened;
- ``include.filter`` on such a CodeSystem: ``is-a``, ``descendent-of``, ``is-not-a`` on ``concept``, and
  ``=`` / ``in`` on a concept property (https://hl7.org/fhir/R4/codesystem.html#filters);
- ``include.valueSet``: other ValueSets (intersected with each other and with the system part, as the
  spec says), those held here or the R4 core ValueSets expanded in ``profiles/r4/elements.json``;
- ``exclude``: the same, subtracted; a ValueSet that carries an ``expansion`` instead of a compose is read
  from ``expansion.contains``.

Anything else (a whole external CodeSystem, another filter, a ``fragment`` CodeSystem included whole, a
cycle of imports) raises ``TerminologyError``: the profile using it cannot be checked, which the
caller reports, rather than accepting every code.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from gateway.fhir.element_tables import ELEMENTS_FILE
from gateway.types import JSONObject

Pair = tuple[str, str]


class TerminologyError(ValueError):
    """A ValueSet this server cannot expand."""


@dataclass(frozen=True, slots=True)
class Expansion:
    """The codes a ValueSet allows, as ``(system, code)`` pairs."""

    url: str
    pairs: frozenset[Pair]

    @property
    def codes(self) -> frozenset[str]:
        """The codes whatever their system: what a bound ``code`` element is checked against."""
        return frozenset(code for _, code in self.pairs)


@dataclass(slots=True)
class _Concept:
    code: str
    parents: tuple[str, ...]
    properties: dict[str, set[str]]


@dataclass
class Terminology:
    """CodeSystems and ValueSets by canonical url, and the R4 core expansions as a fallback."""

    code_systems: dict[str, JSONObject] = field(default_factory=dict)
    value_sets: dict[str, JSONObject] = field(default_factory=dict)
    core: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    """R4 core ValueSet url -> system -> codes (the required-binding ValueSets of elements.json)."""
    _cache: dict[str, Expansion] = field(default_factory=dict, repr=False)

    def expand(self, url: str) -> Expansion:
        """The expansion of the ValueSet ``url`` (``url|version`` accepted); cached."""
        found = self._cache.get(url)
        if found is None:
            found = self._cache[url] = self._expand(url, ())
        return found

    def _expand(self, url: str, stack: tuple[str, ...]) -> Expansion:
        if url in stack:
            raise TerminologyError(f"ValueSet {url} imports itself ({' -> '.join((*stack, url))})")
        value_set = _lookup(self.value_sets, url)
        if value_set is None:
            core = self.core.get(url.partition("|")[0])
            if core is None:
                raise TerminologyError(f"ValueSet {url} is unknown (neither in this guide nor an R4 core expansion)")
            return Expansion(url, frozenset((system, code) for system, codes in core.items() for code in codes))
        compose = value_set.get("compose")
        if not isinstance(compose, dict):
            return Expansion(url, frozenset(self._contains(value_set, url)))
        included: set[Pair] = set()
        for part in _items(compose.get("include"), f"ValueSet {url} compose.include"):
            included |= self._part(part, url, (*stack, url))
        for part in _items(compose.get("exclude", []), f"ValueSet {url} compose.exclude"):
            included -= self._part(part, url, (*stack, url))
        return Expansion(url, frozenset(included))

    def _contains(self, value_set: JSONObject, url: str) -> Iterator[Pair]:
        expansion = value_set.get("expansion")
        if not isinstance(expansion, dict):
            raise TerminologyError(f"ValueSet {url} has neither compose nor expansion")
        stack = list(_items(expansion.get("contains", []), f"ValueSet {url} expansion.contains"))
        while stack:
            item = stack.pop()
            if isinstance(item.get("system"), str) and isinstance(item.get("code"), str) and not item.get("abstract"):
                yield item["system"], item["code"]
            stack.extend(_items(item.get("contains", []), f"ValueSet {url} expansion.contains"))

    def _part(self, part: JSONObject, url: str, stack: tuple[str, ...]) -> set[Pair]:
        """One include/exclude: the system part intersected with every imported ValueSet."""
        system = part.get("system")
        if "version" in part and system not in self.code_systems:
            raise TerminologyError(f"ValueSet {url}: versioned include of {system} cannot be expanded")
        imports = part.get("valueSet", [])
        if not isinstance(imports, list) or not all(isinstance(v, str) for v in imports):
            raise TerminologyError(f"ValueSet {url}: include.valueSet must be a list of canonicals")
        sets = [set(self._expand(other, stack).pairs) for other in imports]
        if system is not None:
            if not isinstance(system, str):
                raise TerminologyError(f"ValueSet {url}: include.system must be a uri")
            sets.append(self._system_part(system, part, url))
        if not sets:
            raise TerminologyError(f"ValueSet {url}: an include needs a system or a valueSet")
        result = sets[0]
        for other in sets[1:]:
            result &= other
        return result

    def _system_part(self, system: str, part: JSONObject, url: str) -> set[Pair]:
        concepts = part.get("concept")
        filters = part.get("filter")
        if concepts is not None:
            if filters is not None:
                raise TerminologyError(f"ValueSet {url}: include with both concept and filter")
            listed = _items(concepts, f"ValueSet {url} include.concept")
            return {(system, c["code"]) for c in listed if isinstance(c.get("code"), str)}
        known = self._concepts(system, url)
        selected = set(known)
        for spec in _items(filters or [], f"ValueSet {url} include.filter"):
            selected &= _apply_filter(spec, known, system, url)
        return {(system, code) for code in selected}

    def _concepts(self, system: str, url: str) -> dict[str, _Concept]:
        code_system = _lookup(self.code_systems, system)
        if code_system is None:
            raise TerminologyError(
                f"ValueSet {url} includes CodeSystem {system}, which is not defined here: list its codes"
            )
        content = code_system.get("content")
        if content != "complete":  # a fragment or an example would reject codes the system has
            raise TerminologyError(f"ValueSet {url}: CodeSystem {system} has content {content!r}, not 'complete'")
        return dict(_flatten(_items(code_system.get("concept", []), f"CodeSystem {system} concept"), ()))


def _lookup(table: dict[str, JSONObject], url: str) -> JSONObject | None:
    found = table.get(url)
    if found is None and "|" in url:
        canonical, _, version = url.partition("|")
        candidate = table.get(canonical)
        if candidate is not None and candidate.get("version") in (None, version):
            found = candidate
    return found


def _items(value: Any, where: str) -> list[JSONObject]:
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise TerminologyError(f"{where} must be a list of objects")
    return value


def _flatten(concepts: Iterable[JSONObject], parents: tuple[str, ...]) -> Iterator[tuple[str, _Concept]]:
    """Every concept of a CodeSystem hierarchy with its ancestors and property values."""
    for concept in concepts:
        code = concept.get("code")
        if not isinstance(code, str):
            raise TerminologyError(f"a CodeSystem concept without a code under {parents}")
        properties: dict[str, set[str]] = {}
        for prop in concept.get("property", []):
            values = [v for k, v in prop.items() if k.startswith("value")]
            if isinstance(prop.get("code"), str) and values:
                # Filter values are strings: a boolean property matches "true" / "false".
                shown = str(values[0]).lower() if isinstance(values[0], bool) else str(values[0])
                properties.setdefault(prop["code"], set()).add(shown)
        yield code, _Concept(code, parents, properties)
        yield from _flatten(concept.get("concept", []), (*parents, code))


def _apply_filter(spec: JSONObject, known: dict[str, _Concept], system: str, url: str) -> set[str]:
    """The codes of ``known`` that pass one ``include.filter`` (https://hl7.org/fhir/R4/valueset-filter-operator.html)."""
    prop, op, value = spec.get("property"), spec.get("op"), spec.get("value")
    if not isinstance(value, str):
        raise TerminologyError(f"ValueSet {url}: a filter needs a string value")
    if prop == "concept" and op in ("is-a", "descendent-of", "is-not-a"):
        if value not in known:
            raise TerminologyError(f"ValueSet {url}: filter on unknown code {value!r} of {system}")
        below = {code for code, c in known.items() if value in c.parents}
        if op == "is-a":
            return below | {value}
        return below if op == "descendent-of" else set(known) - below - {value}
    if isinstance(prop, str) and op in ("=", "in"):
        wanted = {value} if op == "=" else set(value.split(","))
        return {code for code, c in known.items() if c.properties.get(prop, set()) & wanted}
    raise TerminologyError(f"ValueSet {url}: filter {prop} {op} is not supported")


def core_expansions() -> dict[str, dict[str, list[str]]]:
    """The R4 core ValueSets expanded in profiles/r4/elements.json (those R4 binds as required)."""
    import orjson

    data: dict[str, dict[str, list[str]]] = orjson.loads(ELEMENTS_FILE.read_bytes())["valueSets"]
    return data
