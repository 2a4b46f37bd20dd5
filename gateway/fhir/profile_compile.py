"""Compile a profile's differential into a ``Node`` tree: https://hl7.org/fhir/R4/profiling.html.

A StructureDefinition with ``derivation = constraint`` lists in ``differential.element`` the
ElementDefinitions (https://hl7.org/fhir/R4/elementdefinition.html) it changes. Each is placed by its
``id`` (``Patient.identifier:cin.system``: element names, ``:sliceName`` for slices), or, without an id,
by its ``path`` and ``sliceName`` in document order, and navigated over the R4 element tables
(``gateway.search.fhirpath_model``, from profiles/r4/elements.json), so a misspelt element, a type the
base does not allow or a child of a many-typed element is an error at compile time.

Interpreted: ``min``/``max``; ``type`` (restricting a choice, ``profile`` for extensions and datatype
profiles in the same set, ``targetProfile`` of References: base R4 types or profiles in the set);
``fixed[x]``; ``pattern[x]``; ``binding`` with strength ``required`` (ValueSets of the set or R4 core:
``gateway.fhir.terminology``); ``maxLength``; numeric ``minValue[x]``/``maxValue[x]``; ``constraint``
whose FHIRPath the gateway's subset compiles (``gateway.search.fhirpath``; restated base invariants,
whose ``source`` is an R4 definition, are left to the base validation); ``slicing`` with discriminators
of type ``value``, ``pattern`` or ``exists`` on ``$this`` or a path (``system``, ``url``,
``coding.system``), rules open/closed/openAtEnd, ordered; slices of ``extension`` without a slicing
(discriminator ``url``, as R4 implies); type slices of a choice (``value[x]:valueCodeableConcept``).
How slices recognise their values: ``gateway.fhir.profile_slicing``.
Documentation elements (short, definition, mustSupport, mapping, ...) mean nothing to an instance.

Refused with ``ProfileError`` (https://hl7.org/fhir/R4/validation.html says a validator must not claim
to have checked what it did not): any other ElementDefinition key (``contentReference``,
``defaultValue[x]``, ...), ``binding`` on a type that has no code, discriminators of type ``type`` or
``profile`` or on paths the FHIRPath subset does not compile, reslicing, constraints inside a primitive,
``aggregation``/``versioning`` of references, ``targetProfile`` of canonicals, unknown profiles, and a
base definition that is neither the R4 type nor a profile of the set.
"""

from __future__ import annotations

from typing import Any, Protocol

from gateway.fhir.profile_model import CompiledProfile, Invariant, Node, ProfileError
from gateway.fhir.profile_slicing import finish_slices, on_one, read_slicing
from gateway.fhir.terminology import Expansion, TerminologyError
from gateway.search.fhirpath import FhirPathError, compile_expression
from gateway.search.fhirpath_model import elements
from gateway.types import JSONObject

BASE = "http://hl7.org/fhir/StructureDefinition/"
_SYSTEM_TYPE = "http://hl7.org/fhirpath/System."
_QUANTITIES = frozenset({"Quantity", "Age", "Count", "Distance", "Duration", "SimpleQuantity", "MoneyQuantity"})
_BINDABLE = frozenset({"code", "Coding", "CodeableConcept", "string", "uri", *_QUANTITIES})
_NUMERIC = frozenset({"integer", "decimal", "positiveInt", "unsignedInt"})
_DOCUMENTATION = frozenset(
    {
        "id", "path", "extension", "modifierExtension", "sliceName", "label", "code", "short", "definition",
        "comment", "requirements", "alias", "base", "example", "meaningWhenMissing", "orderMeaning",
        "mustSupport", "isModifier", "isModifierReason", "isSummary", "mapping", "condition", "representation",
    }
)  # fmt: skip
_HANDLED = frozenset({"min", "max", "type", "binding", "slicing", "maxLength", "constraint"})
_TYPE_KEYS = frozenset({"code", "profile", "targetProfile", "extension"})


class Definitions(Protocol):
    """What compiling needs from the set of conformance resources (``gateway.fhir.profiles.ProfileSet``)."""

    def structure(self, url: str) -> JSONObject | None: ...

    def expand(self, url: str) -> Expansion: ...


def compile_structure(sd: JSONObject, definitions: Definitions) -> CompiledProfile:
    """Compile one StructureDefinition (a constraint on an R4 resource or datatype, or an extension)."""
    url, type_name = sd.get("url"), sd.get("type")
    if not isinstance(url, str) or not isinstance(type_name, str):
        raise ProfileError("a StructureDefinition needs a url and a type")
    if sd.get("derivation") != "constraint":
        raise ProfileError(f"{url}: only profiles (derivation 'constraint') can be checked")
    if not str(sd.get("fhirVersion", "4.0.1")).startswith("4.0"):
        raise ProfileError(f"{url}: fhirVersion {sd.get('fhirVersion')} is not R4")
    if not elements(type_name):
        raise ProfileError(f"{url}: type {type_name} is not one the gateway has definitions for")
    base = sd.get("baseDefinition")
    uses: list[str] = []
    if base != BASE + type_name:
        parent = definitions.structure(base) if isinstance(base, str) else None
        if parent is None or parent.get("type") != type_name:
            raise ProfileError(f"{url}: base {base} is neither {BASE}{type_name} nor a {type_name} profile here")
        uses.append(str(base))
    differential = sd.get("differential")
    items = differential.get("element") if isinstance(differential, dict) else None
    if not isinstance(items, list) or not all(isinstance(e, dict) for e in items):
        raise ProfileError(f"{url}: differential.element must be a list of ElementDefinitions")
    compiler = _Compiler(url, type_name, definitions, uses)
    for element in items:
        try:
            compiler.element(element)
        except ProfileError as exc:
            raise ProfileError(f"{url}: {element.get('id') or element.get('path')}: {exc}") from None
    finish_slices(compiler.root, url)
    compiler.root.settle()
    parent_url = str(base) if base != BASE + type_name else None
    return CompiledProfile(url, type_name, compiler.root, parent_url, tuple(uses))


class _Compiler:
    def __init__(self, url: str, type_name: str, definitions: Definitions, uses: list[str]) -> None:
        self.url, self.type_name, self.definitions, self.uses = url, type_name, definitions, uses
        self.root = Node(path=type_name, name=type_name, choices=((type_name, type_name),))
        self.last: dict[str, list[tuple[str, str | None]]] = {}
        """Path -> segments of the last element placed at it, to place elements that have no id."""

    def element(self, element: JSONObject) -> None:
        node = self.root
        for name, slice_name in self._segments(element)[1:]:
            node = _child(node, name, slice_name)
        self._apply(node, element)

    def _segments(self, element: JSONObject) -> list[tuple[str, str | None]]:
        path, slice_name, element_id = element.get("path"), element.get("sliceName"), element.get("id")
        if not isinstance(path, str) or path.split(".")[0] != self.type_name:
            raise ProfileError(f"path {path!r} is not inside {self.type_name}")
        if isinstance(element_id, str):
            segments = [(name, part or None) for name, _, part in (s.partition(":") for s in element_id.split("."))]
            if ".".join(name for name, _ in segments) != path:
                raise ProfileError(f"id {element_id!r} does not match path {path!r}")
            if slice_name is not None and segments[-1][1] != slice_name:
                raise ProfileError(f"id {element_id!r} does not end with slice {slice_name!r}")
        else:
            parent, _, name = path.rpartition(".")
            above = self.last.get(parent) or [(n, None) for n in parent.split(".") if n]
            segments = (
                [*above, (name, slice_name if isinstance(slice_name, str) else None)] if parent else [(name, None)]
            )
        self.last[path] = segments
        return segments

    def _apply(self, node: Node, element: JSONObject) -> None:
        values = {k: v for k, v in element.items() if k[:1] != "_" and k not in _DOCUMENTATION}
        for key, value in values.items():
            if key in _HANDLED:
                continue
            if key.startswith(("fixed", "pattern", "minValue", "maxValue")):
                self._value(node, key, value)
            else:
                raise ProfileError(f"{key} is not supported")
        if "type" in values:
            self._types(node, values["type"])
        if "min" in values:
            node.min = _int(values["min"], "min")
        if "max" in values:
            node.max = None if values["max"] == "*" else _int(_digits(values["max"]), "max")
        if "binding" in values:
            self._binding(node, values["binding"])
        if "maxLength" in values:
            node.max_length = _int(values["maxLength"], "maxLength")
        if "constraint" in values:
            node.invariants = (*node.invariants, *self._invariants(node, values["constraint"]))
        if "slicing" in values:
            node.slicing = read_slicing(node, values["slicing"])

    def _types(self, node: Node, types: Any) -> None:
        if not isinstance(types, list) or not types or not all(isinstance(t, dict) for t in types):
            raise ProfileError("type must be a non-empty list")
        if any(str(t.get("code", "")).startswith(_SYSTEM_TYPE) for t in types):
            return  # the FHIRPath system type of id/url elements: nothing to restrict
        allowed: list[tuple[str, str]] = []
        for spec in types:
            code = spec.get("code")
            unknown = set(spec) - _TYPE_KEYS
            if unknown:
                raise ProfileError(f"type {code}: {', '.join(sorted(unknown))} not supported")
            matched = [(key, t) for key, t in node.choices if _type_code(t) == code]
            if not matched:
                shown = ", ".join(_type_code(t) for _, t in node.choices)
                raise ProfileError(f"type {code} is not allowed by the base definition ({shown})")
            allowed.extend(matched)
            for key, _ in matched:
                self._type_profiles(node, key, str(code), _urls(spec, "profile"))
            targets = _urls(spec, "targetProfile")
            if targets:
                if code != "Reference":
                    raise ProfileError(f"targetProfile on {code} cannot be checked (only Reference targets)")
                types = frozenset(self._target_type(url) for url in targets)
                # Reference(Resource) allows any type: keep the base definition's targets only.
                node.targets = None if "Resource" in types else types
                node.target_profiles = tuple(targets)
        node.removed = (*node.removed, *(c for c in node.choices if c not in allowed))
        node.choices = tuple(allowed)

    def _type_profiles(self, node: Node, key: str, code: str, urls: list[str]) -> None:
        wanted = [url for url in urls if url != BASE + code]
        for url in wanted:
            found = self.definitions.structure(url)
            if found is None:
                raise ProfileError(f"profile {url} of type {code} is unknown")
            if found.get("type") != code:
                raise ProfileError(f"profile {url} constrains {found.get('type')}, not {code}")
            if url not in self.uses:
                self.uses.append(url)
        if wanted:
            node.profiles[key] = tuple(wanted)

    def _target_type(self, url: str) -> str:
        if url.startswith(BASE) and url[len(BASE) :].isalpha():
            return url[len(BASE) :]
        found = self.definitions.structure(url)
        if found is None or not isinstance(found.get("type"), str):
            raise ProfileError(f"targetProfile {url} is unknown")
        return str(found["type"])

    def _value(self, node: Node, key: str, value: Any) -> None:
        prefix = next(p for p in ("fixed", "pattern", "minValue", "maxValue") if key.startswith(p))
        suffix = key[len(prefix) :]
        types = {t for _, t in node.choices}
        if suffix not in types and suffix[:1].lower() + suffix[1:] not in types:
            raise ProfileError(f"{key} does not fit the element's types")
        if prefix in ("fixed", "pattern"):
            if node.value_key:
                raise ProfileError(f"{key} and {node.value_key} on one element")
            node.value_key = key
            if prefix == "fixed":
                node.fixed = value
            else:
                node.pattern = value
            return
        if suffix[:1].lower() + suffix[1:] not in _NUMERIC or type(value) not in (int, float):
            raise ProfileError(f"{key}: only numeric limits are supported")
        if prefix == "minValue":
            node.min_value = value
        else:
            node.max_value = value

    def _binding(self, node: Node, binding: Any) -> None:
        if not isinstance(binding, dict) or binding.get("strength") != "required":
            return  # extensible, preferred and example bindings do not make an instance invalid
        value_set = binding.get("valueSet")
        if not isinstance(value_set, str):
            raise ProfileError("a required binding needs a valueSet")
        if not any(t in _BINDABLE for _, t in node.choices):
            raise ProfileError(f"required binding on {', '.join(t for _, t in node.choices)}: no code to check")
        try:
            node.binding = self.definitions.expand(value_set)
        except TerminologyError as exc:
            raise ProfileError(f"required binding: {exc}") from None

    def _invariants(self, node: Node, constraints: Any) -> list[Invariant]:
        if not isinstance(constraints, list):
            raise ProfileError("constraint must be a list")
        out: list[Invariant] = []
        for item in constraints:
            if not isinstance(item, dict):
                raise ProfileError("constraint must be a list of objects")
            if str(item.get("source", "")).startswith(BASE):
                continue  # a base R4 invariant restated: the base validation owns it
            key, expression, severity = item.get("key"), item.get("expression"), item.get("severity")
            context = node.context
            if not isinstance(expression, str) or severity not in ("error", "warning") or context is None:
                raise ProfileError(f"constraint {key}: needs an expression, a severity and a single-typed element")
            try:
                compiled = compile_expression(context, expression)
            except FhirPathError as exc:
                raise ProfileError(f"constraint {key}: {exc}") from None
            out.append(Invariant(str(key), severity, str(item.get("human", "")), expression, on_one(compiled.fn)))
        return out


def _child(node: Node, name: str, slice_name: str | None) -> Node:
    """The child element ``name`` (or its slice), created from the base definition on first use."""
    if slice_name is not None and name.endswith("[x]") and slice_name.startswith(name[:-3]):
        name, slice_name = slice_name, None  # a type slice of a choice is its typed element
    child = node.children.get(name)
    if child is None:
        child = node.children[name] = Node(path=f"{node.path}.{name}", name=name, choices=_base_choices(node, name))
    if slice_name is None:
        return child
    if "/" in slice_name:
        raise ProfileError(f"reslicing ({slice_name}) is not supported")
    found = child.slices.get(slice_name)
    if found is None:
        found = child.slices[slice_name] = Node(
            path=child.path,
            name=child.name,
            choices=child.choices,
            removed=child.removed,
            targets=child.targets,
            target_profiles=child.target_profiles,
            profiles=dict(child.profiles),
            slice_name=slice_name,
        )
    return found


def _base_choices(node: Node, name: str) -> tuple[tuple[str, str], ...]:
    context = node.context
    if context is None:
        raise ProfileError(f"{node.path} has several types: restrict it to one before constraining {name}")
    if context[:1].islower():
        raise ProfileError(f"constraints inside the primitive {node.path} are not supported")
    table = elements(context)
    if name.endswith("[x]"):
        found = table.get(name[:-3])
        if found is not None and found[0][0] != name[:-3]:
            return found
    elif name in table and table[name][0][0] == name:
        return table[name]
    for base_name, choices in table.items():
        if choices[0][0] != base_name:  # a choice element: its keys carry the type (valueCodeableConcept)
            for key, type_name in choices:
                if key == name:
                    return ((key, type_name),)
    raise ProfileError(f"{context} has no element {name}")


def _type_code(type_name: str) -> str:
    return "BackboneElement" if "." in type_name else type_name


def _urls(spec: JSONObject, key: str) -> list[str]:
    value = spec.get(key, [])
    if not isinstance(value, list) or not all(isinstance(u, str) for u in value):
        raise ProfileError(f"type.{key} must be a list of canonicals")
    return value


def _int(value: Any, key: str) -> int:
    if type(value) is not int or value < 0:
        raise ProfileError(f"{key} must be a non-negative integer")
    return value


def _digits(value: Any) -> Any:
    return int(value) if isinstance(value, str) and value.isdigit() else value
