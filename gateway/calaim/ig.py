"""The CalAIM implementation guide, read from ``profiles/calaim/`` (URLs and file names per docs/calaim-ig.md).

``load_ig()``: CodeSystems, ValueSets, ConceptMaps and StructureDefinitions by canonical URL (the raw
JSON of every resource too), ``expand(valueset_url)`` (compose of concept lists, whole code systems
and imported value sets: https://hl7.org/fhir/R4/valueset.html#compositions) and
``service_hcpcs(service)``: the HCPCS code and modifier pairs ConceptMap ``service-hcpcs`` allows.
Cached per directory (``load_ig.cache_clear()`` after editing the files); no database.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson

from gateway.calaim.canonical import HCPCS_SYSTEM, IG_BASE, MODIFIER_PROPERTY, SERVICE_HCPCS_MAP, SERVICE_SYSTEM
from gateway.calaim.conformance import (
    CodeSystem,
    ComposeInclude,
    Concept,
    ConceptMap,
    StructureDefinition,
    ValueSet,
)
from gateway.types import JSONObject

PROFILES_DIR = Path(__file__).resolve().parent.parent.parent / "profiles"
IG_DIR = PROFILES_DIR / "calaim"


@dataclass(frozen=True, eq=False)
class ImplementationGuide:
    """The IG's conformance resources by canonical URL (NamingSystems, which have no url in R4, by
    ``{ig}/NamingSystem/{id}``), typed where the gateway reads them."""

    resources: Mapping[str, JSONObject]
    code_systems: Mapping[str, CodeSystem]
    value_sets: Mapping[str, ValueSet]
    concept_maps: Mapping[str, ConceptMap]
    structure_definitions: Mapping[str, StructureDefinition]
    _concepts: dict[str, dict[str, Concept]] = field(default_factory=dict, repr=False)
    _expansions: dict[str, frozenset[tuple[str, str]]] = field(default_factory=dict, repr=False)
    _hcpcs: dict[str, frozenset[tuple[str, str | None]]] = field(default_factory=dict, repr=False)

    def of_type(self, resource_type: str) -> dict[str, JSONObject]:
        """The raw resources of one type (``SearchParameter``, ``OperationDefinition``, ...) by URL."""
        return {url: res for url, res in self.resources.items() if res.get("resourceType") == resource_type}

    def concept(self, system: str, code: str) -> Concept | None:
        """The concept ``code`` of the IG's CodeSystem ``system`` (None if either is unknown)."""
        if system not in self._concepts:
            cs = self.code_systems.get(system)
            self._concepts[system] = cs.concepts() if cs is not None else {}
        return self._concepts[system].get(code)

    def codes(self, system: str) -> frozenset[str]:
        """Every code of the IG's CodeSystem ``system``; KeyError if the IG has no such CodeSystem."""
        return frozenset(self.code_systems[system].concepts())

    def expand(self, valueset_url: str) -> frozenset[tuple[str, str]]:
        """The ``(system, code)`` pairs of a ValueSet of the IG; KeyError for unknown ValueSets, ValueError
        for what cannot be enumerated (a filter, a whole code system the IG does not define)."""
        if valueset_url not in self._expansions:
            self._expansions[valueset_url] = frozenset()  # a cycle of imports expands to nothing
            compose = self.value_sets[valueset_url].compose
            included = set().union(*(self._part(inc, valueset_url) for inc in compose.include))
            excluded = set().union(*(self._part(exc, valueset_url) for exc in compose.exclude))
            self._expansions[valueset_url] = frozenset(included - excluded)
        return self._expansions[valueset_url]

    def _part(self, part: ComposeInclude, valueset_url: str) -> set[tuple[str, str]]:
        if part.filter:
            raise ValueError(f"{valueset_url}: compose filters are not supported")
        imported = [self.expand(url) for url in part.value_set]
        if part.system is None:
            if not imported:
                raise ValueError(f"{valueset_url}: an include needs a system or a valueSet")
            pairs = set(imported.pop())
        elif part.concept:
            pairs = {(part.system, c.code) for c in part.concept}
        elif part.system in self.code_systems:
            pairs = {(part.system, code) for code in self.codes(part.system)}
        else:
            raise ValueError(f"{valueset_url}: cannot enumerate the whole code system {part.system}")
        for other in imported:  # system and valueSets of one include intersect (valueset.html#compositions)
            pairs &= other
        return pairs

    def service_hcpcs(self, service_code: str) -> frozenset[tuple[str, str | None]]:
        """``(HCPCS code, modifier or None)`` allowed for a CalAIM service (empty: nothing is allowed);
        computed once per service."""
        known = self._hcpcs.get(service_code)
        if known is None:
            known = self._hcpcs[service_code] = self._service_hcpcs(service_code)
        return known

    def _service_hcpcs(self, service_code: str) -> frozenset[tuple[str, str | None]]:
        pairs: set[tuple[str, str | None]] = set()
        for group in self.concept_maps[SERVICE_HCPCS_MAP].group:
            if group.source != SERVICE_SYSTEM or group.target != HCPCS_SYSTEM:
                continue
            for element in group.element:
                if element.code != service_code:
                    continue
                for target in element.target:
                    modifiers = [p.value for p in target.product if p.prop == MODIFIER_PROPERTY]
                    if target.code is not None:
                        pairs.add((target.code, modifiers[0] if modifiers else None))
        return frozenset(pairs)


def _canonical(resource: JSONObject) -> str:
    if resource.get("resourceType") == "NamingSystem":
        return f"{IG_BASE}/NamingSystem/{resource['id']}"
    return str(resource["url"])


@lru_cache(maxsize=4)
def load_ig(directory: Path | None = None) -> ImplementationGuide:
    """Every ``*.json`` resource of ``directory`` (default ``profiles/calaim``), typed where it matters."""
    resources: dict[str, JSONObject] = {}
    for path in sorted((directory or IG_DIR).glob("*.json")):
        resource = orjson.loads(path.read_bytes())
        url = _canonical(resource)
        if url in resources:
            raise ValueError(f"{path.name}: duplicate canonical URL {url}")
        resources[url] = resource

    def typed(resource_type: str, model: type[Any]) -> dict[str, Any]:
        found = (r for r in resources.values() if r.get("resourceType") == resource_type)
        return {str(r["url"]): model.model_validate(r) for r in found}

    return ImplementationGuide(
        resources=resources,
        code_systems=typed("CodeSystem", CodeSystem),
        value_sets=typed("ValueSet", ValueSet),
        concept_maps=typed("ConceptMap", ConceptMap),
        structure_definitions=typed("StructureDefinition", StructureDefinition),
    )


def expand(valueset_url: str) -> frozenset[tuple[str, str]]:
    """``load_ig().expand``: the ``(system, code)`` pairs of a ValueSet of the default IG."""
    return load_ig().expand(valueset_url)


def service_hcpcs(service_code: str) -> frozenset[tuple[str, str | None]]:
    """``load_ig().service_hcpcs``: the HCPCS code and modifier pairs allowed for a CalAIM service."""
    return load_ig().service_hcpcs(service_code)
