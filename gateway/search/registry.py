"""The search parameters the gateway indexes and answers, loaded from SearchParameter resources.

Data-driven (DESIGN.md choice 2): ``profiles/r4/search-parameters.json`` (vendored R4 subset) and any
project SearchParameters decide which parameters exist, their type, FHIRPath expression and targets.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import orjson

from gateway.fhir.resource_types import SERVED_TYPES

PROFILES_DIR = Path(__file__).resolve().parent.parent.parent / "profiles"
R4_SEARCH_PARAMETERS = PROFILES_DIR / "r4" / "search-parameters.json"

INDEXED_TYPES = ("token", "string", "date", "reference", "uri", "number", "quantity")
"""Search parameter types with an index table; composite and special are not indexed."""


@dataclass(frozen=True, slots=True)
class SearchParam:
    """One search parameter as it applies to one resource type (https://hl7.org/fhir/R4/searchparameter.html)."""

    code: str
    type: str
    resource_type: str
    expression: str | None
    """The FHIRPath expression restricted to ``resource_type`` (union branches of other types dropped)."""
    targets: tuple[str, ...] = ()
    url: str = ""
    description: str = ""


@dataclass
class Registry:
    """Search parameters by resource type and code."""

    by_type: dict[str, dict[str, SearchParam]] = field(default_factory=dict)

    def for_type(self, resource_type: str) -> dict[str, SearchParam]:
        """All parameters of ``resource_type`` (including the common ``_id``, ``_lastUpdated``, ...)."""
        return self.by_type.get(resource_type, {})

    def get(self, resource_type: str, code: str) -> SearchParam | None:
        """The parameter ``code`` of ``resource_type``, or None."""
        return self.by_type.get(resource_type, {}).get(code)

    def add(self, resource: dict[str, object]) -> None:
        """Register a SearchParameter resource for each of its base types that the gateway serves."""
        bases = resource.get("base") or []
        assert isinstance(bases, list)
        served = (
            [b for b in bases if b in SERVED_TYPES]
            if "Resource" not in bases and "DomainResource" not in bases
            else list(SERVED_TYPES)
        )
        for base in served:
            expression = _expression_for(str(resource.get("expression") or ""), base)
            param = SearchParam(
                code=str(resource["code"]),
                type=str(resource["type"]),
                resource_type=base,
                expression=expression,
                targets=tuple(str(t) for t in (resource.get("target") or [])),  # type: ignore[attr-defined]
                url=str(resource.get("url") or ""),
                description=str(resource.get("description") or ""),
            )
            self.by_type.setdefault(base, {})[param.code] = param


def _expression_for(expression: str, resource_type: str) -> str | None:
    """Keep the ``|``-union branches of ``expression`` that apply to ``resource_type``.

    R4 shares one SearchParameter across types (``Patient.name | Practitioner.name``); branches are
    split at top-level ``|`` only (never inside parentheses or quotes).
    """
    if not expression:
        return None
    branches = _split_union(expression)
    prefixes = (f"{resource_type}.", f"({resource_type}.", "Resource.", "(Resource.", "DomainResource.")
    kept = [b for b in branches if b.startswith(prefixes) or b == resource_type]
    return " | ".join(kept) if kept else None


def _split_union(expression: str) -> list[str]:
    parts: list[str] = []
    depth = 0
    quoted = False
    start = 0
    for i, ch in enumerate(expression):
        if ch == "'":
            quoted = not quoted
        elif not quoted and ch == "(":
            depth += 1
        elif not quoted and ch == ")":
            depth -= 1
        elif not quoted and depth == 0 and ch == "|":
            parts.append(expression[start:i].strip())
            start = i + 1
    parts.append(expression[start:].strip())
    return [p for p in parts if p]


def load_bundles(paths: Iterable[Path]) -> Registry:
    """A registry of every SearchParameter in the given Bundle files."""
    registry = Registry()
    for path in paths:
        bundle = orjson.loads(path.read_bytes())
        for entry in bundle.get("entry", []):
            res = entry.get("resource", {})
            if res.get("resourceType") == "SearchParameter":
                registry.add(res)
    return registry


@lru_cache(maxsize=1)
def default_registry() -> Registry:
    """The registry of the vendored R4 parameters (plus project parameters when present)."""
    extra = (
        sorted((PROFILES_DIR / "calaim").glob("searchparameter-*.json")) if (PROFILES_DIR / "calaim").is_dir() else []
    )
    registry = load_bundles([R4_SEARCH_PARAMETERS])
    for path in extra:
        registry.add(orjson.loads(path.read_bytes()))
    return registry
