"""The compiled form of a profile: a tree of ``Node``s, one per element the differential constrains.

A profile (https://hl7.org/fhir/R4/profiling.html) states only what it changes (its ``differential``)
over the base definition; ``gateway.fhir.profile_compile`` turns those ElementDefinitions
(https://hl7.org/fhir/R4/elementdefinition.html) into this tree once per profile, and
``gateway.fhir.profile_check`` walks a resource along it. Elements the differential does not mention
do not appear: the base R4 validation (``gateway.fhir.validation``) already covers them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.fhir.terminology import Expansion

Extract = Callable[[Any], list[Any]]
"""The values at a FHIRPath path inside one element (``$this`` gives the element itself)."""

ABSENT, PRESENT, FIXED, PATTERN = "absent", "present", "fixed", "pattern"
"""How a slice recognises its values (``Matcher.mode``)."""


class ProfileError(ValueError):
    """A profile this server cannot interpret: unknown element, unsupported construct, unknown reference.

    Never swallowed: validating against such a profile yields an error issue saying why.
    """


@dataclass(frozen=True, slots=True)
class Invariant:
    """An ElementDefinition.constraint whose FHIRPath the gateway's FHIRPath subset compiles."""

    key: str
    severity: str
    human: str
    expression: str
    test: Extract


@dataclass(frozen=True, slots=True)
class Matcher:
    """One discriminator of a slice (https://hl7.org/fhir/R4/profiling.html#discriminator)."""

    path: str
    extract: Extract
    expected: tuple[Any, ...]
    """Every expected value must be found among the extracted ones (equal, or containing a pattern)."""
    mode: str

    def matches(self, value: Any) -> bool:
        """Whether the element ``value`` belongs to the slice as far as this discriminator says."""
        if self.mode == FIXED and len(self.expected) == 1 and "." not in self.path and type(value) is dict:
            # The common case (an extension's url, an identifier's system): one key, one string.
            single = value.get(self.path)
            if type(single) is str:
                return bool(single == self.expected[0])
        found = self.extract(value)
        if self.mode == PRESENT:
            return bool(found)
        if self.mode == ABSENT:
            return not found
        test = same if self.mode == FIXED else contains
        return all(any(test(item, wanted) for item in found) for wanted in self.expected)


@dataclass(frozen=True, slots=True)
class Slicing:
    """ElementDefinition.slicing: https://hl7.org/fhir/R4/elementdefinition-definitions.html#ElementDefinition.slicing."""

    discriminators: tuple[tuple[str, str], ...]
    """(type, path) pairs: type ``value``, ``pattern`` or ``exists``."""
    rules: str
    ordered: bool


@dataclass(eq=False, slots=True)
class Node:
    """One element of a profile: its JSON keys, the constraints on its values, its children and slices."""

    path: str
    """The element path without slice names (``Patient.identifier``), for messages."""
    name: str
    """Its name in the differential: ``identifier``, ``value[x]``, or a typed ``valueCodeableConcept``."""
    choices: tuple[tuple[str, str], ...]
    """``(json key, type)`` the element may take: one, or one per allowed type of a choice ``[x]``."""
    removed: tuple[tuple[str, str], ...] = ()
    """Types of the base choice the profile does not allow."""
    removed_keys: frozenset[str] = frozenset()
    """Their JSON keys and ``_key`` twins, to spot one with a single set operation (set by ``settle``)."""
    min: int | None = None
    max: int | None = None
    """None: not constrained by the profile (``*`` or left to the base)."""
    fixed: Any = None
    pattern: Any = None
    value_key: str = ""
    """``fixedUri``, ``patternCodeableConcept``...: the ElementDefinition key, for messages."""
    binding: Expansion | None = None
    targets: frozenset[str] | None = None
    """Resource types a Reference may point to, from ``type.targetProfile``; None: as the base says."""
    target_profiles: tuple[str, ...] = ()
    profiles: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """JSON key -> ``type.profile`` urls the value must conform to (extension definitions, datatype
    profiles); several mean any one of them."""
    max_length: int | None = None
    min_value: int | float | None = None
    max_value: int | float | None = None
    invariants: tuple[Invariant, ...] = ()
    children: dict[str, Node] = field(default_factory=dict)
    slicing: Slicing | None = None
    slices: dict[str, Node] = field(default_factory=dict)
    slice_name: str | None = None
    matchers: tuple[Matcher, ...] = ()
    """For a slice: what its values look like (computed from the slicing of the sliced element)."""
    extension_url: str | None = None
    """For a slice of ``extension``: the url its values carry (for ``extension('url')`` expressions)."""
    checks: bool = True
    """Whether the value itself is constrained (fixed, pattern, binding, ...): set when compiled, so the
    walk skips nodes that only hold children."""

    def settle(self) -> None:
        """Set ``checks`` and drop the children that constrain nothing (only documented, mustSupport):
        the walk then visits only what the profile really restricts."""
        self.removed_keys = frozenset(k for key, _ in self.removed for k in (key, "_" + key))
        for piece in self.slices.values():
            piece.settle()
        for name, child in list(self.children.items()):
            child.settle()
            if not child.constrains():
                del self.children[name]
        self.checks = bool(
            self.fixed is not None
            or self.pattern is not None
            or self.binding is not None
            or self.targets is not None
            or self.profiles
            or self.max_length is not None
            or self.min_value is not None
            or self.max_value is not None
            or self.invariants
        )

    def constrains(self) -> bool:
        """Whether the element restricts anything in an instance (after ``settle``)."""
        cardinality = self.min is not None or self.max is not None
        return cardinality or self.checks or bool(self.children or self.slices or self.removed)

    @property
    def context(self) -> str | None:
        """The type (or backbone path) children of this element live in, when it has exactly one."""
        types = {t for _, t in self.choices}
        return types.pop() if len(types) == 1 else None


@dataclass(frozen=True, slots=True)
class CompiledProfile:
    """A profile ready to check: its root node (the resource or datatype) and what it depends on."""

    url: str
    type: str
    root: Node
    base: str | None
    """The profile (in the same set) this one constrains further; None when it constrains the R4 type."""
    uses: tuple[str, ...]
    """Profiles its elements must conform to (extensions, datatype profiles), compiled with it."""


def same(a: Any, b: Any) -> bool:
    """JSON equality, with booleans never equal to numbers (Python has ``True == 1``)."""
    if type(a) is dict:
        return type(b) is dict and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if type(a) is list:
        return type(b) is list and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if (type(a) is bool) != (type(b) is bool):
        return False
    return bool(a == b)


def contains(value: Any, pattern: Any) -> bool:
    """Whether ``value`` matches ``pattern`` (https://hl7.org/fhir/R4/elementdefinition-definitions.html#ElementDefinition.pattern_x_):
    every element of the pattern present with the same value; each item of a repeating element matched
    by some item of the instance; elements the pattern does not mention may be anything."""
    if type(pattern) is dict:
        return type(value) is dict and all(k in value and contains(value[k], v) for k, v in pattern.items())
    if type(pattern) is list:
        return type(value) is list and all(any(contains(item, p) for item in value) for p in pattern)
    return same(value, pattern)
