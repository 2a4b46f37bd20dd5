"""The R4 element tables the validator walks, compiled once from ``profiles/r4/elements.json``.

elements.json holds the official R4 4.0.1 element definitions (https://hl7.org/fhir/R4/elementdefinition.html)
of the served resource types and the datatypes they use, vendored by ``scripts/vendor/structure.py``.
Here each resource, datatype and backbone element becomes a ``Context``: JSON property name -> ``Slot``
(cardinality, kind, primitive check, required-binding codes, reference targets), choice elements
``value[x]`` expanded to their JSON names (``valueString``, ...) and primitives given their ``_name`` twin
(https://hl7.org/fhir/R4/json.html#primitive), so validation is dictionary look-ups, not path parsing.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple

import orjson

ELEMENTS_FILE = Path(__file__).resolve().parent.parent.parent / "profiles" / "r4" / "elements.json"

_XHTML_NS = "http://www.w3.org/1999/xhtml"
_INT32 = 2**31
_FREE_TEXT = frozenset({"string", "markdown"})
"""Their R4 regex ``[ \\r\\n\\t\\S]+`` only says "not empty": checked inline, no regex call."""
_CALENDAR = frozenset({"date", "dateTime", "instant"})

PRIMITIVE, COMPLEX, RESOURCE, IGNORE = range(4)
"""Slot kinds: a primitive value, an object walked with its own context, a contained resource, and the
``resourceType`` property of a resource (checked by the caller)."""

Check = Callable[[Any], str | None]
"""A primitive check: None when the JSON value is fine, else what is wrong with it."""


def kind_of(value: Any) -> str:
    """The JSON kind of a parsed value, for messages."""
    if value is None:
        return "null"
    names = {bool: "boolean", int: "number", float: "number", str: "string", list: "array"}
    return names.get(type(value), "object")


def string_problem(value: Any) -> str | None:
    """What is wrong with a value of a string-typed primitive, None if nothing (R4 strings are never empty)."""
    if type(value) is not str:
        return f"expected a JSON string, got {kind_of(value)}"
    return None if value else "empty strings are not allowed"


def _pattern(type_code: str, regex: str) -> Check:
    compiled = re.compile(regex)
    # The R4 regex of date, dateTime and instant allows 2024-02-30; a full date must also exist.
    calendar = type_code in _CALENDAR

    def check(value: Any) -> str | None:
        problem = string_problem(value)
        if problem is None:
            if compiled.fullmatch(value) is None:
                problem = f"{value[:80]!r} is not a valid {type_code}"
            elif calendar and len(value) >= 10:
                try:
                    date.fromisoformat(value[:10])
                except ValueError:
                    problem = f"{value[:80]!r} is not a valid {type_code}: no such day"
        return problem

    return check


def _boolean(value: Any) -> str | None:
    return None if type(value) is bool else f"expected a JSON boolean, got {kind_of(value)}"


def _integer(low: int) -> Check:
    def check(value: Any) -> str | None:
        if type(value) is not int:
            return f"expected a JSON integer, got {kind_of(value)} {value!r}"
        return None if low <= value < _INT32 else f"{value} is out of range ({low}..{_INT32 - 1})"

    return check


def _decimal(value: Any) -> str | None:
    return None if type(value) in (int, float) else f"expected a JSON number, got {kind_of(value)}"


def _xhtml(value: Any) -> str | None:
    problem = string_problem(value)
    if problem is None and not (value.lstrip().startswith("<div") and _XHTML_NS in value[: value.find(">")]):
        problem = f'the narrative must be an XHTML <div xmlns="{_XHTML_NS}"> element (txt-1)'
    return problem


class _Rule(NamedTuple):
    """How values of one primitive type are checked."""

    check: Check | None
    text: bool
    match: Callable[[str], object] | None


def _primitive_rules(regexes: dict[str, str | None]) -> dict[str, _Rule]:
    """A rule per primitive type, from the R4 regexes (https://hl7.org/fhir/R4/datatypes.html#primitive)."""
    special: dict[str, Check] = {
        "boolean": _boolean,
        "integer": _integer(-_INT32),
        "unsignedInt": _integer(0),
        "positiveInt": _integer(1),
        "decimal": _decimal,
        "xhtml": _xhtml,
    }
    rules: dict[str, _Rule] = {}
    for type_code, regex in regexes.items():
        if type_code in special:
            rules[type_code] = _Rule(special[type_code], text=False, match=None)
        elif type_code in _FREE_TEXT or not regex:
            rules[type_code] = _Rule(None, text=True, match=None)
        elif type_code in _CALENDAR:
            rules[type_code] = _Rule(_pattern(type_code, regex), text=False, match=None)
        else:
            rules[type_code] = _Rule(_pattern(type_code, regex), text=True, match=re.compile(regex).fullmatch)
    return rules


@dataclass(slots=True, eq=False)
class Slot:
    """One JSON property of a context: ``given``, ``_given``, ``deceasedBoolean``, ..."""

    many: bool
    kind: int
    ctx: Context | None = None
    check: Check | None = None
    text: bool = False
    """A string-typed primitive whose whole check is ``match`` (or just non-empty when None)."""
    match: Callable[[str], object] | None = None
    codes: frozenset[str] | None = None
    """Required binding on a code: the codes of the expanded ValueSet (any system)."""
    pairs: frozenset[tuple[str, str]] | None = None
    """Required binding on a Coding / CodeableConcept: (system, code) of the expanded ValueSet."""
    concept: bool = False
    value_set: str = ""
    group: str | None = None
    """The choice element (``deceased[x]``) this property is one type of."""
    targets: frozenset[str] | None = None
    """Resource types a Reference may point to; None when any will do."""
    plain: bool = False
    """A complex value whose whole check is the walk of ``ctx`` (no binding, no reference targets)."""
    pair_key: str = ""
    """For a primitive ``name`` its ``_name`` twin (extensions of the value), and the other way round."""


@dataclass(slots=True, eq=False)
class Context:
    """The properties allowed in one JSON object: a resource, datatype or backbone element."""

    name: str
    slots: dict[str, Slot] = field(default_factory=dict)
    required: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Tables:
    """Every context by type name or backbone path (``Patient``, ``Patient.contact``)."""

    contexts: dict[str, Context]
    resource_types: frozenset[str]
    id_check: Check
    unexpandable: frozenset[str]


@lru_cache(maxsize=1)
def tables() -> Tables:
    """Compile elements.json into per-path tables, once per process."""
    data = orjson.loads(ELEMENTS_FILE.read_bytes())
    rules = _primitive_rules(data["primitiveTypes"])
    resource_types = frozenset(data["resourceTypes"])
    types: dict[str, dict[str, Any]] = data["types"]
    contexts: dict[str, Context] = {}
    for name, table in types.items():
        contexts[name] = Context(name)
        for path, entry in table.items():
            if entry.get("types") in (["BackboneElement"], ["Element"]):
                contexts[path] = Context(path)
    for name in types:
        if name in resource_types:
            contexts[name].slots["resourceType"] = Slot(many=False, kind=IGNORE)
    for table in types.values():
        for path, entry in table.items():
            parent, _, element = path.rpartition(".")
            _add_element(contexts, contexts[parent], path, element, entry, rules, data["valueSets"])
    id_check = rules["id"].check
    assert id_check is not None
    return Tables(contexts, resource_types, id_check, frozenset(data["unexpandable"]))


def _add_element(
    contexts: dict[str, Context],
    ctx: Context,
    path: str,
    element: str,
    entry: dict[str, Any],
    rules: dict[str, _Rule],
    value_sets: dict[str, dict[str, list[str]]],
) -> None:
    many = entry["max"] != "1"
    if "ref" in entry:
        ctx.slots[element] = Slot(many=many, kind=COMPLEX, ctx=contexts[entry["ref"]])
        if entry["min"]:
            ctx.required.append((element, (element,)))
        return
    choice = element.endswith("[x]")
    expansion = value_sets.get(entry.get("binding", ""))
    keys: list[str] = []
    for type_code in entry["types"]:
        key = element[:-3] + type_code[0].upper() + type_code[1:] if choice else element
        slot = Slot(many=many, kind=COMPLEX, group=element if choice else None)
        if type_code in rules:
            rule = rules[type_code]
            slot.kind, slot.pair_key = PRIMITIVE, "_" + key
            slot.check, slot.text, slot.match = rule.check, rule.text, rule.match
            twin = Slot(many=many, kind=COMPLEX, ctx=contexts["Element"], pair_key=key, plain=True)
            ctx.slots["_" + key] = twin
            keys.append("_" + key)
        elif type_code == "Resource":
            slot.kind = RESOURCE
        else:
            slot.ctx = contexts.get(path if path in contexts else type_code)
        if expansion is not None and type_code in ("code", "Coding", "CodeableConcept"):
            slot.value_set = entry["binding"]
            if type_code == "code":
                slot.codes = frozenset(code for codes in expansion.values() for code in codes)
            else:
                slot.pairs = frozenset((system, code) for system, codes in expansion.items() for code in codes)
                slot.concept = type_code == "CodeableConcept"
        if type_code == "Reference" and "targets" in entry:
            slot.targets = frozenset(entry["targets"])
        slot.plain = slot.kind == COMPLEX and slot.ctx is not None and slot.pairs is None and slot.targets is None
        ctx.slots[key] = slot
        keys.append(key)
    if entry["min"]:
        ctx.required.append((element, tuple(keys)))
