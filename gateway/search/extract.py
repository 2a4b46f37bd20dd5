"""Search-index rows of a resource, driven by the SearchParameter definitions.

https://hl7.org/fhir/R4/search.html#ptypes: each indexed parameter's FHIRPath expression selects
values; each value becomes rows of the index table of the parameter's type. Per resource type a plan
(compiled expression + the extractor for the FHIR type it yields) is built once, so extraction is a
few dict lookups per parameter.

Timing note, measured (not asserted) with ``timeit`` on the examples of tests/search/test_extract.py,
best of 9 x 5,000 runs, CPython 3.11 on the 2-core dev container, plan already built: Patient (the R4
example: 3 names, 3 telecoms, address, identifier, meta; 41 rows) ~58 µs; ServiceRequest (20 rows)
~47 µs; Task (18 rows) ~50 µs; Coverage ~24 µs; CoverageEligibilityResponse ~22 µs. About a third of
the Task and ServiceRequest time was ``dates.parse_range`` (3-6 µs per date then, ~2-3 µs since it
computes with integers); a parameter whose expression finds nothing costs ~0.5 µs. Building the plans
is a one-off: ~9 ms for all 20 served types, reading profiles/r4/elements.json included.

Not indexed here: ``_id`` and ``_lastUpdated`` (columns of the resource table), parameters without an
expression (``_text``, ``_content``, ``_query``), composite and special parameters.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from gateway.search.extractors import Extractor, Row, extractor_for
from gateway.search.fhirpath import CompiledPath, compile_expression
from gateway.search.registry import INDEXED_TYPES, Registry, SearchParam, default_registry

COLUMNS: dict[str, tuple[str, ...]] = {
    "token": ("system", "code", "text"),
    "string": ("value", "exact"),
    "date": ("low", "high"),
    "reference": ("target_type", "target_id", "url", "identifier_system", "identifier_value"),
    "uri": ("value",),
    "number": ("low", "high"),
    "quantity": ("system", "code", "unit", "low", "high"),
}
"""Value columns of each index table, in the order extractors build rows."""

IndexValues = dict[str, list[tuple[Any, ...]]]
"""Index rows per kind, each row ``(param, *COLUMNS[kind])``: the form the store inserts (after ``rid,
res_type``) and the model-check workers send back (as JSON arrays)."""

SKIPPED_CODES = frozenset({"_id", "_lastUpdated"})
"""Parameters answered from columns of the resource table, not from index rows."""


class IndexPlanError(ValueError):
    """A parameter's expression yields a FHIR type its search type cannot index."""


def extract_values(
    resource: dict[str, Any], registry: Registry | None = None, *, skip_absent: bool = True
) -> IndexValues:
    """Index rows of ``resource`` per index kind (``token``, ``string``, ...), deduplicated per parameter,
    each row ``(param, *COLUMNS[kind])``; the store adds ``rid``/``res_type``.

    ``skip_absent``: parameters whose expression can only find values under top-level elements the
    resource does not have are not evaluated (``ParamPlan.needs``; the rows are the same either way).
    """
    out: IndexValues = {kind: [] for kind in INDEXED_TYPES}
    focus = [resource]
    done: list[list[Row]] = []
    resource_type = str(resource.get("resourceType"))
    present: set[str] | None = None
    for plan in plan_for(resource_type, registry if registry is not None else default_registry()):
        if plan.same_as >= 0:
            found = done[plan.same_as]
        elif skip_absent and plan.needs is not None:
            if present is None:
                present = _present_elements(resource, resource_type)
            if plan.needs.isdisjoint(present):
                found = []
            else:
                values, get_rows = plan.evaluate(focus), plan.extract
                found = get_rows(values[0]) if len(values) == 1 else [row for v in values for row in get_rows(v)]
                if len(found) > 1:
                    found = list(dict.fromkeys(found))
        else:
            values, get_rows = plan.evaluate(focus), plan.extract
            found = get_rows(values[0]) if len(values) == 1 else [row for v in values for row in get_rows(v)]
            if len(found) > 1:
                found = list(dict.fromkeys(found))  # dedupe, keeping the document order
        done.append(found)
        if found:
            head = (plan.code,)
            out[plan.kind].extend([head + row for row in found])
    return out


def extract(
    resource: dict[str, Any], registry: Registry | None = None, *, skip_absent: bool = True
) -> dict[str, list[dict[str, Any]]]:
    """``extract_values`` with each row as a dict keyed by its table's column names (``param`` and
    ``COLUMNS[kind]``): the readable form, for tests and tools."""
    return {
        kind: [dict(zip(_NAMES[kind], row, strict=True)) for row in rows]
        for kind, rows in extract_values(resource, registry, skip_absent=skip_absent).items()
    }


_NAMES = {kind: ("param", *columns) for kind, columns in COLUMNS.items()}


@dataclass(frozen=True, slots=True)
class ParamPlan:
    """How one parameter of one resource type is indexed."""

    code: str
    kind: str
    path: CompiledPath
    extract: Extractor
    evaluate: Callable[[list[Any]], list[Any]]
    """``path.fn``: the expression as a function of the focus collection ``[resource]``."""
    same_as: int = -1
    """Index of an earlier plan with the same rows (``name`` and ``phonetic`` are both Patient.name)."""
    needs: frozenset[str] | None = None
    """The top-level elements the expression starts from, when it is made only of paths below them (and
    ``where``/``ofType``/``as``, which keep an empty input empty): without any of them it finds nothing.
    None: always evaluated (``exists()``, comparisons, ... can find a value in an empty input)."""


_plans: dict[tuple[int, str], tuple[Registry, tuple[SearchParam, ...], tuple[ParamPlan, ...]]] = {}


def plan_for(resource_type: str, registry: Registry) -> tuple[ParamPlan, ...]:
    """The extraction plan of ``resource_type``, rebuilt only when the registry's parameters change."""
    params = registry.for_type(resource_type)
    cached = _plans.get((id(registry), resource_type))
    if (
        cached is not None
        and cached[0] is registry
        and len(cached[1]) == len(params)
        and all(map(operator.is_, cached[1], params.values()))
    ):
        return cached[2]
    plans: list[ParamPlan] = []
    first: dict[tuple[str, str, tuple[str, ...]], int] = {}
    for param in params.values():
        if _indexed(param):
            key = (param.type, str(param.expression), param.targets)
            plan = _plan(param)
            plans.append(replace(plan, same_as=first[key]) if key in first else plan)
            first.setdefault(key, len(plans) - 1)
    _plans[(id(registry), resource_type)] = (registry, tuple(params.values()), tuple(plans))
    return tuple(plans)


def _indexed(param: SearchParam) -> bool:
    return param.type in COLUMNS and param.code not in SKIPPED_CODES and bool(param.expression)


def _plan(param: SearchParam) -> ParamPlan:
    path = compile_expression(param.resource_type, str(param.expression))
    extractor = extractor_for(param.type, path.types, param.targets)
    if extractor is None:
        raise IndexPlanError(f"{param.resource_type}.{param.code}: a {param.type} parameter cannot index {path.types}")
    needs = _needs(param.resource_type, param.expression)
    return ParamPlan(param.code, param.type, path, extractor, path.fn, needs=needs)


_TAIL = r"(?:\.\w+|\.where\(.*\)|\.ofType\(\w+\)|\.as\(\w+\)|\.resolve\(\))*"
_MEMBER = re.compile(rf"\(?\s*(?P<type>[A-Z]\w*)\.(?P<element>\w+){_TAIL}(?:\s+as\s+\w+)?\s*\)?{_TAIL}")


def _needs(resource_type: str, expression: str | None) -> frozenset[str] | None:
    """``ParamPlan.needs`` of ``expression``: the first element of each union member, or None when a
    member is anything but a path (with filters) from ``resource_type``."""
    if not expression:
        return None
    members = [m.strip() for m in expression.split("|")]
    needs: set[str] = set()
    for member in members:
        match = _MEMBER.fullmatch(member)
        if match is None or match["type"] not in (resource_type, *_BASES) or member.count("(") != member.count(")"):
            return None
        needs.add(match["element"])
    return frozenset(needs)


_BASES = ("Resource", "DomainResource")
"""Types every served resource is (``Resource.meta.tag``)."""
_ELEMENT_NAMES: dict[str, dict[str, str]] = {}


def _present_elements(resource: dict[str, Any], resource_type: str) -> set[str]:
    """The element names of ``resource``'s top-level keys (``occurrenceDateTime`` is ``occurrence``,
    ``_birthDate`` is ``birthDate``); unknown keys stand for themselves."""
    names = _ELEMENT_NAMES.get(resource_type)
    if names is None:
        names = _ELEMENT_NAMES[resource_type] = _element_names(resource_type)
    return {names.get(key, key) for key in resource}


def _element_names(resource_type: str) -> dict[str, str]:
    from gateway.fhir.element_tables import tables  # the R4 definitions (a one-off load)

    context = tables().contexts.get(resource_type)
    if context is None:
        return {}
    out: dict[str, str] = {}
    for key, slot in context.slots.items():
        name = slot.group.removesuffix("[x]") if slot.group else key
        out[key] = name
        out[f"_{key}"] = name
    return out
