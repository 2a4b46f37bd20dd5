"""Slicing of profiles: https://hl7.org/fhir/R4/profiling.html#slicing.

A sliced element (``Patient.identifier``) declares how its values are told apart (``slicing``: the
discriminators, https://hl7.org/fhir/R4/profiling.html#discriminator, and whether values outside the
slices are allowed); each slice (``Patient.identifier:cin``) is recognised by the values its own
elements fix. Here, once a differential has been read (``gateway.fhir.profile_compile``), each slice gets
its ``Matcher``s: for a discriminator of type ``value`` or ``pattern`` the fixed or pattern value found
at the discriminator's path inside the slice (also inside a ``patternIdentifier`` of the slice itself,
or the url of an extension slice's ``type.profile``), for type ``exists`` whether the slice requires or
forbids the path. A slice whose value cannot be found is a ``ProfileError``, not a slice that matches
everything.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gateway.fhir.profile_model import ABSENT, FIXED, PATTERN, PRESENT, Extract, Matcher, Node, ProfileError, Slicing
from gateway.search.fhirpath import FhirPathError, compile_expression


def read_slicing(node: Node, slicing: Any) -> Slicing | None:
    """ElementDefinition.slicing of ``node``; None for type slices of a choice (see ``profile_compile``)."""
    if not isinstance(slicing, dict):
        raise ProfileError("slicing must be an object")
    rules, ordered = slicing.get("rules", "open"), slicing.get("ordered", False)
    if rules not in ("open", "closed", "openAtEnd") or type(ordered) is not bool:
        raise ProfileError(f"slicing rules {rules!r} / ordered {ordered!r} not understood")
    discriminators = slicing.get("discriminator")
    if not isinstance(discriminators, list) or not discriminators:
        raise ProfileError("slicing without a discriminator cannot be checked")
    pairs = [(d.get("type"), d.get("path")) for d in discriminators if isinstance(d, dict)]
    if pairs == [("type", "$this")] and node.name.endswith("[x]"):
        return None  # type slices of a choice: each becomes its typed element (profile_compile._child)
    for kind, path in pairs:
        if kind not in ("value", "pattern", "exists") or not isinstance(path, str):
            raise ProfileError(f"discriminator {kind} on {path} is not supported")
    if len(pairs) != len(discriminators):
        raise ProfileError("a discriminator must be an object")
    return Slicing(tuple((str(k), str(p)) for k, p in pairs), str(rules), ordered)


def finish_slices(node: Node, url: str) -> None:
    """Give every slice its matchers, now that all of its elements are known."""
    for child in (*node.children.values(), *node.slices.values()):
        finish_slices(child, url)
    if not node.slices:
        return
    slicing = node.slicing
    if slicing is None:
        if node.name not in ("extension", "modifierExtension"):
            raise ProfileError(f"{url}: {node.path} has slices but no slicing")
        slicing = node.slicing = Slicing((("value", "url"),), "open", False)
    for name, piece in node.slices.items():
        try:
            piece.matchers = tuple(_matcher(piece, kind, path) for kind, path in slicing.discriminators)
        except ProfileError as exc:
            raise ProfileError(f"{url}: {node.path}:{name}: {exc}") from None
        if node.name in ("extension", "modifierExtension"):
            piece.extension_url = next((str(m.expected[0]) for m in piece.matchers if m.path == "url"), None)


def _matcher(piece: Node, kind: str, path: str) -> Matcher:
    """How one discriminator recognises the values of one slice."""
    parts = [] if path == "$this" else path.split(".")
    extract = _extractor(piece, path)
    target, rest = piece, parts
    while rest and (found := target.children.get(rest[0]) or target.children.get(rest[0] + "[x]")) is not None:
        target, rest = found, rest[1:]
    if kind == "exists":
        if rest:
            raise ProfileError(f"exists discriminator {path}: the slice does not constrain it")
        if target.min is not None and target.min >= 1:
            return Matcher(path, extract, (), PRESENT)
        if target.max == 0:
            return Matcher(path, extract, (), ABSENT)
        raise ProfileError(f"exists discriminator {path}: the slice neither requires nor forbids it")
    if parts == ["url"] and target is piece:
        urls = {url for urls in piece.profiles.values() for url in urls}
        if len(urls) == 1:
            return Matcher(path, extract, (urls.pop(),), FIXED)
    source, mode = (target.fixed, FIXED) if target.fixed is not None else (target.pattern, PATTERN)
    expected = _json_at(source, rest) if source is not None else []
    if not expected:
        raise ProfileError(f"no fixed or pattern value at {path} tells its values apart")
    return Matcher(path, extract, tuple(expected), mode)


def _extractor(piece: Node, path: str) -> Extract:
    if path == "$this":
        return _this
    context = piece.context
    if context is None:
        raise ProfileError(f"discriminator {path} on an element of several types")
    try:
        return on_one(compile_expression(context, path).fn)
    except FhirPathError as exc:
        raise ProfileError(f"discriminator {path}: {exc}") from None


def _this(value: Any) -> list[Any]:
    return [value]


def on_one(fn: Callable[[list[Any]], list[Any]]) -> Extract:
    """A compiled FHIRPath (a function of a collection) as a function of one element."""
    return lambda value: fn([value])


def _json_at(value: Any, parts: list[str]) -> list[Any]:
    """The values at ``parts`` inside a fixed/pattern JSON value (arrays flattened, choices by prefix)."""
    items = [value]
    for part in parts:
        out: list[Any] = []
        for item in items:
            if type(item) is not dict:
                continue
            keys = [k for k in item if k == part or (k.startswith(part) and k[len(part) : len(part) + 1].isupper())]
            for key in keys:
                found = item[key]
                out.extend(found if type(found) is list else [found])
        items = out
    return items
