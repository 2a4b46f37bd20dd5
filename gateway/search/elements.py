"""``_summary`` and ``_elements``: returning part of each resource.

- https://hl7.org/fhir/R4/search.html#summary: ``true`` keeps the elements the base definition marks
  ``isSummary``; ``text`` keeps ``text`` and the mandatory elements; ``data`` drops ``text``;
  ``false`` and ``count`` leave resources alone (``count`` returns none).
- https://hl7.org/fhir/R4/search.html#elements: keeps the listed top-level elements plus the mandatory
  ones. Unprefixed names apply to the matched resources; ``Type.element`` names apply to resources of
  ``Type`` (so an ``_include``d type can be trimmed too, as R5 spells out); a resource no name
  applies to is returned whole.

``id``, ``meta`` and ``resourceType`` always stay, and every trimmed resource gets the ``SUBSETTED``
tag so no client mistakes it for the whole resource (https://hl7.org/fhir/R4/search.html#elements).
The element lists come from ``profiles/r4/summary-elements.json`` (written by
``scripts/vendor/summary_elements.py`` from the R4 StructureDefinitions).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import orjson

from gateway.search.registry import PROFILES_DIR
from gateway.types import JSONObject

SUMMARY_ELEMENTS = PROFILES_DIR / "r4" / "summary-elements.json"
SUBSETTED = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "SUBSETTED",
    "display": "subsetted",
}
ALWAYS_KEPT = frozenset({"resourceType", "id", "meta"})


@dataclass(frozen=True, slots=True)
class ElementSets:
    """The top-level summary and mandatory elements of one resource type (choice names end in ``[x]``)."""

    summary: frozenset[str]
    mandatory: frozenset[str]


@lru_cache(maxsize=1)
def element_sets() -> dict[str, ElementSets]:
    """Summary and mandatory elements by resource type (read once)."""
    data = orjson.loads(SUMMARY_ELEMENTS.read_bytes())
    return {
        name: ElementSets(frozenset(entry["summary"]), frozenset(entry["mandatory"])) for name, entry in data.items()
    }


class Subsetter:
    """Decides, per returned resource, which top-level elements to keep."""

    def __init__(self, *, summary: str | None, elements: tuple[str, ...] | None, match_types: Iterable[str]) -> None:
        self.summary = summary if summary in ("true", "text", "data") else None
        self.elements = elements if self.summary is None else None
        self.match_types = frozenset(match_types)

    @property
    def active(self) -> bool:
        """True when some resource may be trimmed (otherwise stored bytes are served untouched)."""
        return self.summary is not None or bool(self.elements)

    def keep(self, res_type: str, mode: str) -> frozenset[str] | None:
        """The elements to keep of a ``res_type`` returned with search ``mode``; None keeps everything."""
        sets = element_sets().get(res_type, ElementSets(frozenset(), frozenset()))
        if self.summary == "true":
            return sets.summary | sets.mandatory
        if self.summary == "text":
            return sets.mandatory | {"text"}
        if self.summary == "data":
            return None  # everything but text: handled by ``apply``
        names = self._listed(res_type, mode)
        return frozenset(names) | sets.mandatory if names else None

    def _listed(self, res_type: str, mode: str) -> list[str]:
        names: list[str] = []
        for element in self.elements or ():
            prefix, dot, name = element.partition(".")
            if dot and prefix == res_type:
                names.append(name)
            elif not dot and mode == "match" and res_type in self.match_types:
                names.append(element)
        return names

    def apply(self, body: bytes, res_type: str, mode: str) -> bytes:
        """``body`` trimmed for its type and mode, tagged SUBSETTED when anything may be missing."""
        if self.summary == "data":
            resource = orjson.loads(body)
            resource.pop("text", None)
            return orjson.dumps(_tagged(resource))
        keep = self.keep(res_type, mode)
        if keep is None:
            return body
        resource = orjson.loads(body)
        trimmed = {key: value for key, value in resource.items() if _kept(key, keep)}
        return orjson.dumps(_tagged(trimmed))


def _kept(key: str, keep: frozenset[str]) -> bool:
    """Whether a JSON key survives: ``_x`` (a primitive's extensions) follows ``x``; ``valueQuantity``
    follows ``value[x]`` (https://hl7.org/fhir/R4/json.html#primitive, #choice)."""
    name = key[1:] if key.startswith("_") and len(key) > 1 else key
    if name in ALWAYS_KEPT or name in keep:
        return True
    for element in keep:
        if element.endswith("[x]"):
            stem = element[:-3]
            if name.startswith(stem) and len(name) > len(stem) and name[len(stem)].isupper():
                return True
    return False


def _tagged(resource: JSONObject) -> JSONObject:
    meta: dict[str, Any] = dict(resource.get("meta") or {})
    tags = [
        t for t in meta.get("tag", []) if t.get("code") != SUBSETTED["code"] or t.get("system") != SUBSETTED["system"]
    ]
    meta["tag"] = [*tags, SUBSETTED]
    resource["meta"] = meta
    return resource
