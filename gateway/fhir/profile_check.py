"""Check a resource against a compiled profile: https://hl7.org/fhir/R4/validation.html#profiles.

The walk follows the ``Node`` tree of ``gateway.fhir.profile_compile`` over the JSON, one instance at a
time, so cardinality is counted per instance of the enclosing element
(https://hl7.org/fhir/R4/profiling.html#cardinality: ``insurance.item.productOrService`` 1..1 means once
in every item of every insurance). Each issue's ``expression`` is a FHIRPath location in the style of
the base validation (``CoverageEligibilityResponse.insurance[0].item[1].productOrService``); a missing
extension is ``X.extension('url')`` and a missing slice of another element ``X.identifier.where(system =
'...')``. Diagnostics name the profile (and the extension definition, inside an extension).

The JSON is assumed to have passed the base R4 walk or to be reported by it: values of the wrong JSON
kind are skipped here, not reported twice.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from gateway.errors import Issue
from gateway.fhir.profile_model import FIXED, PATTERN, CompiledProfile, Node, ProfileError, contains, same
from gateway.search.fhirpath import reference_type

_QUANTITIES = frozenset({"Quantity", "Age", "Count", "Distance", "Duration", "SimpleQuantity", "MoneyQuantity"})

Occurrence = tuple[Any, str, str]
"""(JSON value, its expression, the JSON key it was found under)."""

Compile = Callable[[str], CompiledProfile]
"""Looks up a compiled profile by url (raises ProfileError)."""


def check_profile(compiled: CompiledProfile, value: Any, expression: str, compile_url: Compile) -> list[Issue]:
    """Every way ``value`` (a resource, or an element for datatype and extension profiles) fails ``compiled``
    and the profiles it derives from."""
    out: list[Issue] = []
    _Walker(compile_url, out).profile(compiled, value, expression, f"profile {compiled.url}")
    return out


class _Walker:
    def __init__(self, compile_url: Compile, out: list[Issue]) -> None:
        self.compile_url = compile_url
        self.out = out

    def issue(self, code: str, expression: str, text: str, where: str, severity: str = "error") -> None:
        self.out.append(Issue(code, f"{expression}: {text} ({where})", severity, (expression,)))

    def profile(self, compiled: CompiledProfile, value: Any, expression: str, where: str) -> None:
        if compiled.base is not None:
            try:
                base = self.compile_url(compiled.base)
            except ProfileError as exc:
                self.issue("not-supported", expression, f"base profile cannot be checked: {exc}", where)
            else:
                self.profile(base, value, expression, f"{where}, base {base.url}")
        self.instance(compiled.root, value, expression, compiled.type, where)

    def instance(self, node: Node, value: Any, expression: str, key: str, where: str) -> None:
        """One value of ``node`` (found under JSON ``key``): its own constraints, then its children."""
        if value is None:  # a primitive present only through its "_name" twin (extensions, no value)
            if node.fixed is not None or node.pattern is not None:
                self.issue("value", expression, f"has no value but the profile sets {node.value_key}", where)
            return
        if node.checks:
            self.values(node, value, expression, key, where)
        if node.children and type(value) is dict:
            self.children(node, value, expression, where)

    def values(self, node: Node, value: Any, expression: str, key: str, where: str) -> None:
        """The constraints on the value itself: fixed, pattern, binding, targets, limits, profiles, invariants."""
        type_name = next((t for k, t in node.choices if k == key), key)
        if node.fixed is not None and not same(value, node.fixed):
            self.issue("value", expression, f"must be exactly {_show(node.fixed)} ({node.value_key})", where)
        if node.pattern is not None and not contains(value, node.pattern):
            self.issue("value", expression, f"must match {_show(node.pattern)} ({node.value_key})", where)
        if node.binding is not None:
            self.binding(node, value, type_name, expression, where)
        if node.targets is not None and type_name == "Reference":
            target = reference_type(value)
            if target is not None and target not in node.targets:
                allowed = ", ".join(node.target_profiles)
                self.issue("value", expression, f"may not refer to a {target} (targetProfile: {allowed})", where)
        self.limits(node, value, expression, where)
        urls = node.profiles.get(key)
        if urls:
            self.conforms(urls, value, expression, where)
        for invariant in node.invariants:
            # True passes, and so does one non-boolean value (FHIRPath singleton evaluation); an empty
            # result fails, as in the reference validator, which converts it to false.
            result = invariant.test(value)
            if result != [True] and not (len(result) == 1 and type(result[0]) is not bool):
                text = f"constraint {invariant.key} fails: {invariant.human or invariant.expression}"
                self.issue("invariant", expression, text, where, invariant.severity)

    def binding(self, node: Node, value: Any, type_name: str, expression: str, where: str) -> None:
        """A required binding (https://hl7.org/fhir/R4/terminologies.html#required)."""
        assert node.binding is not None
        pairs = node.binding.pairs
        if type_name == "CodeableConcept":
            codings = value.get("coding") if type(value) is dict else None
            found = [(c.get("system"), c.get("code")) for c in codings or () if type(c) is dict]
            ok = any(pair in pairs for pair in found)
            shown = ", ".join(f"{s}|{c}" for s, c in found) or "no coding"
        elif type_name == "Coding" or type_name in _QUANTITIES:
            found = [(value.get("system"), value.get("code"))] if type(value) is dict else []
            ok = bool(found) and found[0] in pairs
            shown = f"{found[0][0]}|{found[0][1]}" if found else repr(value)
        else:
            ok, shown = value in node.binding.codes, repr(value)
        if not ok:
            codes = sorted(code for _, code in pairs)
            listing = f" (one of: {', '.join(codes)})" if len(codes) <= 12 else ""
            text = f"{shown} is not in the required value set {node.binding.url}{listing}"
            self.issue("code-invalid", expression, text, where)

    def limits(self, node: Node, value: Any, expression: str, where: str) -> None:
        if node.max_length is not None and type(value) is str and len(value) > node.max_length:
            self.issue("value", expression, f"is longer than {node.max_length} characters (maxLength)", where)
        number = value if type(value) in (int, float) else None
        if number is not None and node.min_value is not None and number < node.min_value:
            self.issue("value", expression, f"{number} is below the minimum {node.min_value} (minValue)", where)
        if number is not None and node.max_value is not None and number > node.max_value:
            self.issue("value", expression, f"{number} is above the maximum {node.max_value} (maxValue)", where)

    def conforms(self, urls: tuple[str, ...], value: Any, expression: str, where: str) -> None:
        """``type.profile``: the value must conform to the extension definition or datatype profile, to
        at least one of them when there are several (https://hl7.org/fhir/R4/elementdefinition-definitions.html#ElementDefinition.type.profile)."""
        attempts: list[list[Issue]] = []
        for url in urls:
            found: list[Issue] = []
            walker = _Walker(self.compile_url, found)
            try:
                compiled = self.compile_url(url)
            except ProfileError as exc:
                walker.issue("not-supported", expression, f"profile {url} cannot be checked: {exc}", where)
            else:
                kind = "extension" if compiled.type == "Extension" else "profile"
                walker.profile(compiled, value, expression, f"{kind} {url} in {where}")
            if not found:
                return
            attempts.append(found)
        if len(urls) > 1:
            text = f"conforms to none of the profiles {', '.join(urls)} (the issues against the first follow)"
            self.issue("structure", expression, text, where)
        self.out.extend(attempts[0])

    def children(self, node: Node, obj: dict[str, Any], expression: str, where: str) -> None:
        for child in node.children.values():
            found = self.occurrences(child, obj, expression, where)
            self.cardinality(child, len(found), f"{expression}.{child.name}", where, "")
            for value, at, key in found:
                self.instance(child, value, at, key, where)
            if child.slices:
                self.slices(child, found, expression, where)

    def occurrences(self, node: Node, obj: dict[str, Any], expression: str, where: str) -> list[Occurrence]:
        found: list[Occurrence] = []
        for key, type_name in node.choices:
            value = obj.get(key)
            if value is None:
                if type_name[:1].islower() and "_" + key in obj:  # a primitive with only extensions
                    found.append((None, f"{expression}.{key}", key))
                continue
            if type(value) is list:
                found.extend((item, f"{expression}.{key}[{i}]", key) for i, item in enumerate(value))
            else:
                found.append((value, f"{expression}.{key}", key))
        if node.removed_keys and not node.removed_keys.isdisjoint(obj):
            for key, type_name in node.removed:
                if key in obj or "_" + key in obj:
                    self.issue("structure", f"{expression}.{key}", f"type {type_name} is not allowed here", where)
        return found

    def cardinality(self, node: Node, count: int, expression: str, where: str, label: str) -> None:
        """min/max (https://hl7.org/fhir/R4/conformance-rules.html#cardinality), per enclosing instance."""
        if node.min is not None and count < node.min:
            text = f"{label}minimum cardinality {node.min} not met ({count} found)"
            self.issue("required", expression, text if count else f"{label}required (min {node.min}), missing", where)
        if node.max is not None and count > node.max:
            text = (
                f"{label}maximum cardinality {node.max} exceeded ({count} found)" if node.max else f"{label}not allowed"
            )
            self.issue("structure", expression, text, where)

    def slices(self, node: Node, found: list[Occurrence], expression: str, where: str) -> None:
        """Assign each value to its slice by the discriminators (https://hl7.org/fhir/R4/profiling.html#slicing)."""
        assert node.slicing is not None
        pieces = list(node.slices.items())
        assigned: list[list[Occurrence]] = [[] for _ in pieces]
        positions: list[int] = []
        for occurrence in found:
            value, at, _ = occurrence
            index = next((i for i, (_, p) in enumerate(pieces) if all(m.matches(value) for m in p.matchers)), -1)
            positions.append(index)
            if index >= 0:
                assigned[index].append(occurrence)
            elif node.slicing.rules == "closed":
                self.issue("structure", at, f"matches no slice of {node.path} (closed slicing)", where)
        matched = [p for p in positions if p >= 0]
        if node.slicing.ordered and matched != sorted(matched):
            self.issue("structure", f"{expression}.{node.name}", "slices are out of the profile's order", where)
        if (
            node.slicing.rules == "openAtEnd"
            and -1 in positions
            and any(p >= 0 for p in positions[positions.index(-1) :])
        ):
            self.issue("structure", f"{expression}.{node.name}", "values outside the slices must come last", where)
        for (name, piece), values in zip(pieces, assigned, strict=True):
            self.cardinality(piece, len(values), _slice_expression(expression, piece), where, f"slice {name}: ")
            for value, at, key in values:
                self.instance(piece, value, at, key, where)


def _slice_expression(expression: str, piece: Node) -> str:
    """A FHIRPath naming a slice's values: ``extension('url')``, or a ``where()`` on its discriminators."""
    if piece.extension_url is not None:
        return f"{expression}.{piece.name}('{piece.extension_url}')"
    terms = []
    for matcher in piece.matchers:
        if matcher.mode not in (FIXED, PATTERN) or matcher.path == "$this" or len(matcher.expected) != 1:
            return f"{expression}.{piece.name}"
        wanted = matcher.expected[0]
        if type(wanted) is not str:
            return f"{expression}.{piece.name}"
        terms.append(f"{matcher.path} = '{_quote(wanted)}'")
    return f"{expression}.{piece.name}.where({' and '.join(terms)})"


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "\\'")


def _show(value: Any) -> str:
    shown = orjson.dumps(value).decode() if type(value) in (dict, list) else repr(value)
    return shown if len(shown) <= 200 else shown[:197] + "..."
