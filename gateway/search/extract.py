"""Search-index rows of a resource, driven by the SearchParameter definitions.

https://hl7.org/fhir/R4/search.html#ptypes: each indexed parameter's FHIRPath expression selects
values; each value becomes rows of the index table of the parameter's type. Per resource type a plan
(compiled expression + the extractor for the FHIR type it yields) is built once, and per set of top-level
keys a resource has, a schedule: the parameters whose expressions can find anything in such a resource,
each as one rows function (``gateway.search.plan_rows``). A write then runs only those: an HN first-import
resource ~14 of its type's 12-28 parameters, a core bench resource ~15 of 16-28.

Cost, measured by instruction counts (callgrind over ``extract_values`` of 2,000 resources of an HN first
import and 1,000 of the core bench's families; docs/performance.md "Index extraction (session 11)"):
~295,000 instructions per resource before the schedules (session 10), ~126,000-135,000 after. Building
the plans is a one-off: ~9 ms for all 20 served types, reading profiles/r4/elements.json included.

Not indexed here: ``_id`` and ``_lastUpdated`` (columns of the resource table), parameters without an
expression (``_text``, ``_content``, ``_query``), composite and special parameters.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from gateway.search.extractors import Extractor, Row, extractor_for
from gateway.search.fhirpath import CompiledPath, compile_expression
from gateway.search.plan_rows import RowsFn, rows_function, rows_of
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
    resource does not have are not evaluated (``ParamPlan.needs``), and plain paths are walked directly
    (``gateway.search.plan_rows``); the rows are the same either way (False: every expression evaluated by
    the compiled FHIRPath, the reference the tests compare with).
    """
    resource_type = str(resource.get("resourceType"))
    entry = _entry(resource_type, registry if registry is not None else default_registry())
    if not skip_absent:
        return _evaluate_all(resource, entry.plans)
    keys = tuple(resource)
    schedule = entry.schedules.get(keys)
    if schedule is None:
        schedule = entry.schedule(keys, resource)
    out: IndexValues = {
        "token": [],
        "string": [],
        "date": [],
        "reference": [],
        "uri": [],
        "number": [],
        "quantity": [],
    }  # INDEXED_TYPES (tests/search/test_extract_fast.py)
    kept: list[list[Row]] = []
    for rows, kind, keep, code in schedule:
        if rows is None:
            found = [(code, *row[1:]) for row in kept[keep]]
        else:
            found = rows(resource)
            if keep >= 0:
                kept.append(found)
        if found:
            out[kind] += found
    return out


def _evaluate_all(resource: dict[str, Any], plans: tuple[ParamPlan, ...]) -> IndexValues:
    """Every plan's expression evaluated by the compiled FHIRPath, its rows by the extractor."""
    out: IndexValues = {kind: [] for kind in INDEXED_TYPES}
    done: list[list[Row]] = []
    focus = [resource]
    for plan in plans:
        if plan.same_as >= 0:
            found = [(plan.code, *row[1:]) for row in done[plan.same_as]]
        else:
            found = rows_of(plan.evaluate(focus), plan.extract)
        done.append(found)
        out[plan.kind].extend(found)
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
    """The rows of one value the expression selects (``param`` first)."""
    evaluate: Callable[[list[Any]], list[Any]]
    """``path.fn``: the expression as a function of the focus collection ``[resource]``."""
    rows: RowsFn
    """``rows_of(evaluate([resource]), extract)`` as one function (``plan_rows.rows_function``)."""
    same_as: int = -1
    """Index of an earlier plan with the same rows (``name`` and ``phonetic`` are both Patient.name)."""
    needs: frozenset[str] | None = None
    """The top-level elements the expression starts from, when it is made only of paths below them (and
    ``where``/``ofType``/``as``, which keep an empty input empty): without any of them it finds nothing.
    None: always evaluated (``exists()``, comparisons, ... can find a value in an empty input)."""


Step = tuple[RowsFn | None, str, int, str]
"""One parameter ``extract_values`` runs: its rows function (None: it copies the rows kept at the slot
given, ``ParamPlan.same_as``), its kind, the slot its rows are kept at for a later copy (-1: not kept),
and its code."""

MAX_SCHEDULES = 256
"""Schedules kept per resource type (one per set of top-level keys seen); all dropped when full."""


@dataclass(slots=True)
class _Entry:
    """The plans of one resource type for one state of a registry, and their schedules."""

    registry: Registry
    params: tuple[SearchParam, ...]
    plans: tuple[ParamPlan, ...]
    schedules: dict[tuple[str, ...], tuple[Step, ...]]

    def schedule(self, keys: tuple[str, ...], resource: dict[str, Any]) -> tuple[Step, ...]:
        """The steps for a resource with top-level ``keys``: the plans that may find values in it, in
        plan order (so the rows come in the order ``_evaluate_all`` gives them)."""
        present = _present_elements(resource, str(resource.get("resourceType")))
        slots: dict[int, int] = {}
        copied = {plan.same_as for plan in self.plans if plan.same_as >= 0}
        steps: list[Step] = []
        for index, plan in enumerate(self.plans):
            if plan.needs is not None and plan.needs.isdisjoint(present):
                continue
            if plan.same_as >= 0:
                if plan.same_as in slots:  # else its source was skipped: no rows to copy
                    steps.append((None, plan.kind, slots[plan.same_as], plan.code))
                continue
            if index in copied:
                slots[index] = len(slots)
            steps.append((plan.rows, plan.kind, slots.get(index, -1), plan.code))
        if len(self.schedules) >= MAX_SCHEDULES:
            self.schedules.clear()
        schedule = self.schedules[keys] = tuple(steps)
        return schedule


_entries: dict[tuple[int, str], _Entry] = {}


def plan_for(resource_type: str, registry: Registry) -> tuple[ParamPlan, ...]:
    """The extraction plan of ``resource_type``, rebuilt only when the registry's parameters change."""
    return _entry(resource_type, registry).plans


def _entry(resource_type: str, registry: Registry) -> _Entry:
    params = registry.for_type(resource_type)
    cached = _entries.get((id(registry), resource_type))
    if cached is not None and cached.registry is registry and cached.params == tuple(params.values()):
        return cached  # (the same parameters: equal tuples of the same objects, compared by identity first)
    plans: list[ParamPlan] = []
    first: dict[tuple[str, str, tuple[str, ...]], int] = {}
    for param in params.values():
        if _indexed(param):
            key = (param.type, str(param.expression), param.targets)
            plan = _plan(param)
            plans.append(replace(plan, same_as=first[key]) if key in first else plan)
            first.setdefault(key, len(plans) - 1)
    entry = _entries[(id(registry), resource_type)] = _Entry(registry, tuple(params.values()), tuple(plans), {})
    return entry


def _indexed(param: SearchParam) -> bool:
    return param.type in COLUMNS and param.code not in SKIPPED_CODES and bool(param.expression)


def _plan(param: SearchParam) -> ParamPlan:
    path = compile_expression(param.resource_type, str(param.expression))
    extractor = extractor_for(param.type, path.types, param.targets, param.code)
    if extractor is None:
        raise IndexPlanError(f"{param.resource_type}.{param.code}: a {param.type} parameter cannot index {path.types}")
    needs = _needs(param.resource_type, param.expression)
    return ParamPlan(param.code, param.type, path, extractor, path.fn, rows_function(path, extractor), needs=needs)


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
