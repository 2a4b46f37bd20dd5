"""The index rows of one parameter of a resource, as one function: resource in, rows out.

``gateway.search.extract`` runs such a function for each parameter a resource may have values for, on
every write. The general form evaluates the compiled FHIRPath expression (a list of JSON values) and runs
the parameter's extractor on each value. Most R4 and CalAIM expressions are plain or filtered paths
(``Task.for``, ``Resource.meta.tag``, ``ServiceRequest.occurrence``, ``Task.for.where(resolve() is
Patient)``, ``Task.extension.where(url='...').value``: ``fhirpath.walk_of``); those are walked here over
the JSON directly, without the compiled functions' intermediate lists. Either way the rows are those of
https://hl7.org/fhir/R4/search.html#ptypes for each value the expression selects, in document order, each
row once (``rows_of``): tests/search/test_extract_fast.py compares both forms on the examples and on
randomly altered copies of them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gateway.search.extractors import Extractor, Row
from gateway.search.fhirpath import CompiledPath, walk_of

RowsFn = Callable[[dict[str, Any]], list[Row]]
"""The deduplicated index rows of one parameter of a resource."""


def rows_of(values: list[Any], extract: Extractor) -> list[Row]:
    """The rows of each of ``values`` in order, each row once (a parameter indexes a value once even if
    the expression finds it twice, https://hl7.org/fhir/R4/search.html)."""
    if not values:
        return []
    found = extract(values[0]) if len(values) == 1 else [row for value in values for row in extract(value)]
    return found if len(found) < 2 else list(dict.fromkeys(found))


def rows_function(path: CompiledPath, extract: Extractor) -> RowsFn:
    """``rows_of(path(resource), extract)`` as one function of the resource."""
    walk = walk_of(path)
    if walk is None:
        return _general(path, extract)
    if walk.where is None and walk.then is None:
        return _element(walk.first[0], extract) if len(walk.first) == 1 else _choice(walk.first, extract)
    if len(walk.first) != 1:
        return _general(path, extract)
    if walk.where is None:
        assert walk.then is not None
        return _element_of(walk.first[0], walk.then, extract)
    if walk.equals is not None and walk.then is not None:
        return _selected(walk.first[0], *walk.equals, walk.then, extract)
    return _filtered(walk.first[0], walk.where, walk.then, extract)


def _general(path: CompiledPath, extract: Extractor) -> RowsFn:
    evaluate = path.fn

    def rows(resource: dict[str, Any]) -> list[Row]:
        return rows_of(evaluate([resource]), extract)

    return rows


def _element(key: str, extract: Extractor) -> RowsFn:
    """``Type.element``: the element's value, or each of its values (JSON nulls of a primitive array,
    https://hl7.org/fhir/R4/json.html#primitive, are no values)."""

    def rows(resource: dict[str, Any]) -> list[Row]:
        value = resource.get(key)
        if value is None:
            return []
        if type(value) is not list:
            found = extract(value)
        elif len(value) == 1:  # the usual list: one identifier, one performer
            item = value[0]
            found = extract(item) if item is not None else []
        else:
            found = [row for item in value if item is not None for row in extract(item)]
        return found if len(found) < 2 else list(dict.fromkeys(found))

    return rows


def _choice(keys: tuple[str, ...], extract: Extractor) -> RowsFn:
    """``Type.choice``: the values of each of its typed keys (``occurrenceDateTime``, ``occurrencePeriod``)."""

    def rows(resource: dict[str, Any]) -> list[Row]:
        values: list[Any] = []
        for key in keys:
            _add(values, resource.get(key))
        return rows_of(values, extract)

    return rows


def _element_of(first: str, then: str, extract: Extractor) -> RowsFn:
    """``Type.a.b``: ``b`` of ``a``, or of each of its values."""

    def rows(resource: dict[str, Any]) -> list[Row]:
        parent = resource.get(first)
        if type(parent) is dict:  # meta, code, ...: one object, read directly
            value = parent.get(then)
            if value is None:
                return []
            if type(value) is not list:
                found = extract(value)
            else:
                found = [row for item in value if item is not None for row in extract(item)]
            return found if len(found) < 2 else list(dict.fromkeys(found))
        if type(parent) is not list:
            return []  # absent, or a primitive: it has no elements
        values: list[Any] = []
        for item in parent:
            if type(item) is dict:
                _add(values, item.get(then))
        return rows_of(values, extract)

    return rows


def _filtered(first: str, where: Callable[[Any], bool], then: str | None, extract: Extractor) -> RowsFn:
    """``Type.a.where(...)[.b]``."""

    def rows(resource: dict[str, Any]) -> list[Row]:
        value = resource.get(first)
        if value is None:
            return []
        values: list[Any] = []
        for item in value if type(value) is list else (value,):
            if item is not None and where(item):
                if then is None:
                    values.append(item)
                elif type(item) is dict:
                    _add(values, item.get(then))
        return rows_of(values, extract)

    return rows


def _selected(first: str, key: str, literal: str, then: str, extract: Extractor) -> RowsFn:
    """``Type.a.where(key = 'literal').b``: ``_filtered`` with ``fhirpath._FilterEqual.keeps`` inline
    (``extension.where(url = '...').value``: every extension of the resource is tested by each such
    parameter)."""
    single = [literal]

    def rows(resource: dict[str, Any]) -> list[Row]:
        value = resource.get(first)
        if value is None:
            return []
        values: list[Any] = []
        for item in value if type(value) is list else (value,):
            if type(item) is dict:
                test = item.get(key)
                if (test == literal and type(test) is str) or test == single:
                    _add(values, item.get(then))
        return rows_of(values, extract)

    return rows


def _add(values: list[Any], value: Any) -> None:
    """One step of a path (``fhirpath._Path``): a value, or the values of a list but its nulls."""
    if value is None:
        return
    if type(value) is not list:
        values.append(value)
    else:
        values.extend([item for item in value if item is not None])
