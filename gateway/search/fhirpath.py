"""A compiler for the FHIRPath subset used by R4 SearchParameter expressions.

SearchParameter.expression (https://hl7.org/fhir/R4/searchparameter-definitions.html#SearchParameter.expression)
is FHIRPath (https://hl7.org/fhirpath/N1/). Index extraction runs on every write, so an expression is
parsed and type-checked once and turned into nested Python closures over plain JSON (dicts, lists,
strings, numbers, bools); evaluating it is then a few dict lookups.

Supported (everything else raises ``FhirPathError`` at compile time, never a silent empty result):

- paths ``Patient.name.given`` over lists (flattening, https://hl7.org/fhirpath/N1/#path-selection);
  a leading ``Patient``/``Resource``/``DomainResource`` names the context;
- choice elements (https://hl7.org/fhir/R4/formats.html#choice): ``Patient.deceased`` reads whichever
  ``deceasedBoolean``/``deceasedDateTime`` key is present; ``x as T``, ``x.as(T)`` and ``x.ofType(T)``
  narrow them;
- ``|`` (https://hl7.org/fhirpath/N1/#union-collections), ``=``/``!=``, ``and``/``or`` (three-valued,
  https://hl7.org/fhirpath/N1/#boolean-logic), string/boolean/number literals, parentheses;
- ``where(criteria)``, ``where(resolve() is T)`` (keeps references that point at type ``T``),
  ``extension('url')``, ``exists()``, ``empty()``, ``not()``, ``first()``.

Paths are checked against the R4 element tables (``gateway.search.fhirpath_model``), so a misspelt
element is a compile error, a choice element compiles to the list of its typed JSON keys, and callers
learn the FHIR types of the results (``CompiledPath.types``) to pick how to index them. Syntax is in
``gateway.search.fhirpath_parser``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from gateway.search.fhirpath_model import ROOT_ALIASES, elements, narrow
from gateway.search.fhirpath_parser import FhirPathError, Node, parse

__all__ = [
    "CompiledPath",
    "FhirPathError",
    "Walk",
    "compile_expression",
    "reference_type",
    "split_reference",
    "walk_of",
]

Fn = Callable[[list[Any]], list[Any]]


@dataclass(frozen=True, slots=True)
class CompiledPath:
    """A compiled expression: call it with a resource to get the list of matching JSON values."""

    expression: str
    types: tuple[str, ...]
    """FHIR type names the results may have (``CodeableConcept``, ``code``, ``boolean``, ...)."""
    fn: Fn

    def __call__(self, resource: dict[str, Any]) -> list[Any]:
        return self.fn([resource])


@lru_cache(maxsize=4096)
def compile_expression(resource_type: str, expression: str) -> CompiledPath:
    """Compile ``expression`` for resources of ``resource_type`` (cached per type and expression)."""
    try:
        node = parse(expression)
        fn, types = _Compiler(resource_type).compile(node, (resource_type,), top=True)
    except FhirPathError as exc:
        raise FhirPathError(f"{resource_type}: {expression!r}: {exc}") from None
    return CompiledPath(expression, tuple(dict.fromkeys(types)), fn)


_LITERAL_REF = re.compile(
    r"^(?:(?P<base>[a-z][a-z0-9+.\-]*://[^?#]*?)/)?(?P<type>[A-Z][A-Za-z]{1,63})/(?P<id>[A-Za-z0-9\-.]{1,64})"
    r"(?:/_history/[A-Za-z0-9\-.]{1,64})?$"
)


def split_reference(text: str) -> tuple[str, str, bool] | None:
    """``(type, id, absolute)`` of a literal reference ``Type/id[/_history/v]``, relative or absolute.

    https://hl7.org/fhir/R4/references.html#literal; None for ``urn:``, ``#contained`` and anything else.
    """
    return _split_cached(text) if len(text) <= _CACHED_LENGTH else _split(text)


_CACHED_LENGTH = 256
"""Texts up to this length are split once and remembered (``_split_cached``), so the cache stays small."""


@lru_cache(maxsize=4096)
def _split_cached(text: str) -> tuple[str, str, bool] | None:
    """``_split``, cached: a write names the same few targets many times (the member's Patient, the
    plan's Organizations: 5-8 references per distinct text in the HN import and the core bench)."""
    return _split(text)


def _split(text: str) -> tuple[str, str, bool] | None:
    match = _LITERAL_REF.match(text)
    if match is None:
        return None
    return match["type"], match["id"], match["base"] is not None


def reference_type(ref: Any) -> str | None:
    """The resource type a Reference points at: from its literal reference, else ``Reference.type``."""
    if type(ref) is not dict:
        return None
    text = ref.get("reference")
    if type(text) is str:
        parts = split_reference(text)
        if parts is not None:
            return parts[0]
    declared = ref.get("type")
    # Reference.type is a uri; R4 allows absolute StructureDefinition URLs for logical types.
    return declared.rsplit("/", 1)[-1] if type(declared) is str else None


# -------------------------------------------------------------------------------------------- compiling

Typed = tuple[Fn, tuple[str, ...]]


class _Compiler:
    def __init__(self, resource_type: str) -> None:
        self.resource_type = resource_type

    def compile(self, node: Node, focus: tuple[str, ...], *, top: bool = False) -> Typed:
        """``node`` as a function of the focus collection, with the FHIR types of its results."""
        if node.kind == "paren":
            return self.compile(node.args[0], focus, top=top)
        if node.kind == "this":
            return _identity, focus
        if node.kind == "literal":
            value = [node.value]
            kind = {bool: "boolean", int: "integer", float: "decimal", str: "string"}[type(node.value)]
            return (lambda _items: value), (kind,)
        if node.kind == "ident":
            if self._is_root(node, top):
                return _identity, focus
            return self._navigate(_identity, focus, node.name)
        if node.kind == "member":
            source, types = self.compile(node.args[0], focus, top=top)
            return self._navigate(source, types, node.name)
        if node.kind == "typeop":
            if node.name == "is":
                raise FhirPathError("'is' is only supported as where(resolve() is Type)")
            return self._as(node.args[0], focus, str(node.value), top)
        if node.kind == "binary":
            return self._binary(node, focus, top)
        if node.kind == "call":
            return self._call(node, focus, top)
        raise FhirPathError(f"unsupported node {node.kind}")  # pragma: no cover - parser emits no others

    def _navigate(self, source: Fn, types: tuple[str, ...], name: str) -> Typed:
        keys: list[tuple[str, str]] = []
        for type_name in types:
            choices = elements(type_name).get(name)
            if choices is None:
                raise FhirPathError(f"{type_name} has no element {name!r}")
            keys.extend(c for c in choices if c not in keys)
        return _step(source, tuple(k for k, _ in keys)), tuple(t for _, t in keys)

    def _as(self, operand: Node, focus: tuple[str, ...], type_name: str, top: bool) -> Typed:
        # A choice element's key names its type (onsetAge), so narrowing is done on keys, statically.
        if operand.kind == "paren":
            return self._as(operand.args[0], focus, type_name, top)
        if operand.kind == "member" or (operand.kind == "ident" and not self._is_root(operand, top)):
            parent, parent_types = (
                self.compile(operand.args[0], focus, top=top) if operand.kind == "member" else (_identity, focus)
            )
            self._navigate(parent, parent_types, operand.name)  # raises for unknown elements
            choices = dict.fromkeys(c for t in parent_types for c in elements(t)[operand.name])
            kept = [(key, t) for key, t in choices if narrow(t, type_name)]
            if not kept:
                raise FhirPathError(f"{operand.name} can never be a {type_name}")
            return _step(parent, tuple(key for key, _ in kept)), tuple(t for _, t in kept)
        fn, types = self.compile(operand, focus, top=top)
        if all(narrow(t, type_name) for t in types):
            return fn, types
        raise FhirPathError(f"as {type_name} is only supported on an element path")

    def _is_root(self, node: Node, top: bool) -> bool:
        return top and node.kind == "ident" and node.name in (self.resource_type, *ROOT_ALIASES)

    def _binary(self, node: Node, focus: tuple[str, ...], top: bool) -> Typed:
        (left, ltypes), (right, rtypes) = (self.compile(a, focus, top=top) for a in node.args)
        if node.name == "|":
            return _union(left, right), ltypes + tuple(t for t in rtypes if t not in ltypes)
        if node.name in ("=", "!="):
            return _equality(left, right, negate=node.name == "!="), ("boolean",)
        return _logic(left, right, node.name), ("boolean",)

    def _call(self, node: Node, focus: tuple[str, ...], top: bool) -> Typed:
        name, (subject, *args) = node.name, node.args
        if name in ("as", "ofType") and len(args) == 1:
            return self._as(subject, focus, str(args[0].value), top)
        source, types = self.compile(subject, focus, top=top)
        if name == "where" and len(args) == 1:
            return self._where(source, types, args[0])
        if name == "extension" and len(args) == 1 and args[0].kind == "literal":
            if any("extension" not in elements(t) for t in types):
                raise FhirPathError(f"extension() on a type without extensions: {types}")
            return _extension(source, str(args[0].value)), ("Extension",)
        if args:
            raise FhirPathError(f"unsupported function {name}() with arguments")
        simple = _NO_ARG_FUNCTIONS.get(name)
        if simple is None:
            raise FhirPathError(f"unsupported function {name}()")
        wrapped, result_type = simple
        return wrapped(source), ((result_type,) if result_type else types)

    def _where(self, source: Fn, types: tuple[str, ...], criteria: Node) -> Typed:
        if criteria.kind == "typeop" and criteria.name == "is":
            inner = criteria.args[0]
            if not (inner.kind == "call" and inner.name == "resolve" and inner.args[0].kind == "this"):
                raise FhirPathError("'is' is only supported as where(resolve() is Type)")
            if set(types) - {"Reference"}:
                raise FhirPathError("resolve() is only supported on Reference elements")
            return _resolves_to(source, str(criteria.value)), types
        test, _ = self.compile(criteria, types)
        left, right = criteria.args if criteria.kind == "binary" and criteria.name == "=" else (None, None)
        if left is not None and right is not None and left.kind == "ident" and right.kind == "literal":
            # where(system = 'email') runs on every write: compare one key instead of evaluating.
            keys = {key for t in types for key, _ in elements(t)[left.name]}
            if len(keys) == 1 and type(right.value) is str:
                return _filter_equal(source, keys.pop(), right.value), types
        return _filter(source, test), types


def _identity(items: list[Any]) -> list[Any]:
    return items


class _Path:
    """Element steps run in one loop: most expressions are plain paths (``Task.for``, ``Patient.name.given``)."""

    __slots__ = ("source", "steps")

    def __init__(self, source: Fn | None, steps: tuple[tuple[str, ...], ...]) -> None:
        self.source = source
        self.steps = steps  # per step, the JSON keys to read: one, or one per type of a choice

    def __call__(self, items: list[Any]) -> list[Any]:
        if self.source is not None:
            items = self.source(items)
        for keys in self.steps:
            out: list[Any] = []
            for item in items:
                if type(item) is dict:
                    for key in keys:
                        value = item.get(key)
                        if value is None:
                            continue
                        if type(value) is not list:
                            out.append(value)
                        elif None in value:
                            # Primitive arrays hold nulls where only the _key array has content.
                            out.extend(v for v in value if v is not None)
                        else:
                            out.extend(value)
            if not out:
                return out
            items = out
        return items


@dataclass(frozen=True, slots=True)
class Walk:
    """An expression a caller may walk over the JSON itself (``gateway.search.plan_rows``), with the same
    result as its compiled function: the values of the element ``first`` of the resource (one key per type
    of a choice element), those passing ``where`` (None: all), then each one's ``then`` element (None: the
    values themselves). ``Task.for``, ``ServiceRequest.occurrence``, ``Resource.meta.tag``,
    ``Patient.telecom.where(system='email')``, ``Task.for.where(resolve() is Patient)``,
    ``Task.extension.where(url='...').value as Coding``."""

    first: tuple[str, ...]
    where: Callable[[Any], bool] | None = None
    then: str | None = None
    equals: tuple[str, str] | None = None
    """``(key, literal)`` when ``where`` is ``where(key = 'literal')`` (``url`` of an extension), which a
    caller may test inline: an object whose ``key`` is the literal, or a one-element list of it."""


def walk_of(path: CompiledPath) -> Walk | None:
    """``path`` as a ``Walk``, when it is one of those shapes; None otherwise."""
    fn: Any = path.fn
    then: str | None = None
    if isinstance(fn, _Path):
        last = fn.steps[-1]
        if fn.source is None and len(fn.steps) <= 2 and all(len(keys) == 1 for keys in fn.steps[1:]):
            return Walk(fn.steps[0], None, fn.steps[1][0] if len(fn.steps) == 2 else None)
        if fn.source is None or len(fn.steps) != 1 or len(last) != 1:
            return None
        fn, then = fn.source, last[0]
    if isinstance(fn, _FilterEqual | _ResolvesTo):
        source = fn.source
        if isinstance(source, _Path) and source.source is None and len(source.steps) == 1:
            equals = (fn.key, fn.literal) if isinstance(fn, _FilterEqual) else None
            return Walk(source.steps[0], fn.keeps, then, equals)
    return None


def _step(source: Fn, keys: tuple[str, ...]) -> Fn:
    if isinstance(source, _Path):
        return _Path(source.source, (*source.steps, keys))
    return _Path(None if source is _identity else source, (keys,))


def _union(left: Fn, right: Fn) -> Fn:
    def union(items: list[Any]) -> list[Any]:
        out: list[Any] = []
        for value in (*left(items), *right(items)):
            if not any(_same(value, seen) for seen in out):
                out.append(value)
        return out

    return union


def _same(a: Any, b: Any) -> bool:
    # Python has True == 1; FHIRPath compares booleans only with booleans.
    if (type(a) is bool) != (type(b) is bool):
        return False
    return bool(a == b)


def _equality(left: Fn, right: Fn, *, negate: bool) -> Fn:
    """https://hl7.org/fhirpath/N1/#equality: empty if either side is empty, else item-wise."""

    def equal(items: list[Any]) -> list[Any]:
        a, b = left(items), right(items)
        if not a or not b:
            return []
        same = len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
        return [same != negate]

    return equal


def _truth(values: list[Any]) -> bool | None:
    """Singleton evaluation (https://hl7.org/fhirpath/N1/#singleton-evaluation-of-collections)."""
    if not values:
        return None
    if len(values) > 1:
        return None  # an evaluation error in FHIRPath; extraction treats it as unknown
    return values[0] if type(values[0]) is bool else True


def _logic(left: Fn, right: Fn, op: str) -> Fn:
    def logic(items: list[Any]) -> list[Any]:
        a, b = _truth(left(items)), _truth(right(items))
        if op == "and":
            result = False if a is False or b is False else (None if a is None or b is None else True)
        else:
            result = True if a is True or b is True else (None if a is None or b is None else False)
        return [] if result is None else [result]

    return logic


def _filter(source: Fn, test: Fn) -> Fn:
    def where(items: list[Any]) -> list[Any]:
        return [item for item in source(items) if test([item]) == [True]]

    return where


class _FilterEqual:
    """``where(key = 'literal')``, comparing one key instead of evaluating the criteria."""

    __slots__ = ("key", "literal", "single", "source")

    def __init__(self, source: Fn, key: str, literal: str) -> None:
        self.source, self.key, self.literal, self.single = source, key, literal, [literal]

    def keeps(self, item: Any) -> bool:
        """Whether ``item`` passes the criteria (a one-element list of the literal is equal to it)."""
        if type(item) is not dict:
            return False
        value = item.get(self.key)
        return (value == self.literal and type(value) is str) or value == self.single

    def __call__(self, items: list[Any]) -> list[Any]:
        keeps = self.keeps
        return [item for item in self.source(items) if keeps(item)]


def _filter_equal(source: Fn, key: str, literal: str) -> Fn:
    return _FilterEqual(source, key, literal)


class _ResolvesTo:
    """``where(resolve() is Type)``: the references that point at ``Type`` (``reference_type``)."""

    __slots__ = ("source", "target")

    def __init__(self, source: Fn, target: str) -> None:
        self.source, self.target = source, target

    def keeps(self, ref: Any) -> bool:
        """Whether ``ref`` points at the type."""
        return reference_type(ref) == self.target

    def __call__(self, items: list[Any]) -> list[Any]:
        target = self.target
        return [ref for ref in self.source(items) if reference_type(ref) == target]


def _resolves_to(source: Fn, target: str) -> Fn:
    return _ResolvesTo(source, target)


def _extension(source: Fn, url: str) -> Fn:
    def extension(items: list[Any]) -> list[Any]:
        out: list[Any] = []
        for item in source(items):
            if type(item) is dict:
                out.extend(e for e in item.get("extension") or () if type(e) is dict and e.get("url") == url)
        return out

    return extension


def _wrap(result: Callable[[list[Any]], list[Any]]) -> Callable[[Fn], Fn]:
    def wrap(source: Fn) -> Fn:
        return lambda items: result(source(items))

    return wrap


_NO_ARG_FUNCTIONS: dict[str, tuple[Callable[[Fn], Fn], str | None]] = {
    "exists": (_wrap(lambda v: [bool(v)]), "boolean"),
    "empty": (_wrap(lambda v: [not v]), "boolean"),
    "not": (_wrap(lambda v: [] if _truth(v) is None else [not _truth(v)]), "boolean"),
    "first": (_wrap(lambda v: v[:1]), None),
}
