"""Typed views of the IG's conformance resources: the parts of them the gateway reads.

CodeSystem (https://hl7.org/fhir/R4/codesystem.html), ValueSet (https://hl7.org/fhir/R4/valueset.html),
ConceptMap (https://hl7.org/fhir/R4/conceptmap.html) and StructureDefinition differentials
(https://hl7.org/fhir/R4/structuredefinition.html), as frozen pydantic models; elements the gateway
does not read are ignored here and kept in the raw JSON (``gateway.calaim.ig.ImplementationGuide.resources``).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from gateway.types import JSONObject


class _Fhir(BaseModel):
    """The parts of a FHIR resource this module reads; other elements are ignored (kept in the raw JSON)."""

    model_config = ConfigDict(frozen=True, extra="ignore", alias_generator=to_camel, populate_by_name=True)


class ConceptProperty(_Fhir):
    """``CodeSystem.concept.property`` (https://hl7.org/fhir/R4/codesystem-definitions.html#CodeSystem.concept.property)."""

    code: str
    value_code: str | None = None
    value_boolean: bool | None = None
    value_string: str | None = None
    value_integer: int | None = None

    @property
    def value(self) -> str | bool | int | None:
        """Whichever ``value[x]`` is present."""
        for value in (self.value_code, self.value_boolean, self.value_string, self.value_integer):
            if value is not None:
                return value
        return None


class Concept(_Fhir):
    """One concept of a CodeSystem, with its properties by code."""

    code: str
    display: str | None = None
    definition: str | None = None
    properties: tuple[ConceptProperty, ...] = Field(default=(), alias="property")
    concept: tuple[Concept, ...] = ()

    def prop(self, code: str) -> str | bool | int | None:
        """The value of the property ``code`` (None when absent)."""
        return next((p.value for p in self.properties if p.code == code), None)


class CodeSystem(_Fhir):
    """https://hl7.org/fhir/R4/codesystem.html"""

    url: str
    name: str
    content: str
    concept: tuple[Concept, ...] = ()

    def concepts(self) -> dict[str, Concept]:
        """Every concept by code, hierarchies flattened."""
        out: dict[str, Concept] = {}
        stack = list(self.concept)
        while stack:
            concept = stack.pop()
            out[concept.code] = concept
            stack.extend(concept.concept)
        return out


class ComposeConcept(_Fhir):
    """``ValueSet.compose.include.concept``."""

    code: str
    display: str | None = None


class ComposeInclude(_Fhir):
    """``ValueSet.compose.include`` / ``exclude`` (filters are not supported: none of the IG's uses one)."""

    system: str | None = None
    concept: tuple[ComposeConcept, ...] = ()
    filter: tuple[JSONObject, ...] = ()
    value_set: tuple[str, ...] = ()


class Compose(_Fhir):
    """``ValueSet.compose``."""

    include: tuple[ComposeInclude, ...]
    exclude: tuple[ComposeInclude, ...] = ()


class ValueSet(_Fhir):
    """https://hl7.org/fhir/R4/valueset.html"""

    url: str
    name: str
    compose: Compose


class MapProduct(_Fhir):
    """``ConceptMap.group.element.target.product`` / ``dependsOn``."""

    prop: str = Field(alias="property")
    system: str | None = None
    value: str


class MapTarget(_Fhir):
    """``ConceptMap.group.element.target``."""

    code: str | None = None
    equivalence: str
    depends_on: tuple[MapProduct, ...] = ()
    product: tuple[MapProduct, ...] = ()


class MapElement(_Fhir):
    """``ConceptMap.group.element``."""

    code: str
    target: tuple[MapTarget, ...] = ()


class MapGroup(_Fhir):
    """``ConceptMap.group``."""

    source: str | None = None
    target: str | None = None
    element: tuple[MapElement, ...]


class ConceptMap(_Fhir):
    """https://hl7.org/fhir/R4/conceptmap.html"""

    url: str
    name: str
    group: tuple[MapGroup, ...]


class TypeRef(_Fhir):
    """``ElementDefinition.type``."""

    code: str
    profile: tuple[str, ...] = ()
    target_profile: tuple[str, ...] = ()


class Binding(_Fhir):
    """``ElementDefinition.binding``."""

    strength: str
    value_set: str | None = None


class ElementDefinition(_Fhir):
    """One differential element (https://hl7.org/fhir/R4/elementdefinition.html); ``fixed[x]``/``pattern[x]``
    are kept as JSON in ``model_extra`` and read through ``fixed()``/``pattern()``."""

    model_config = ConfigDict(extra="allow")

    id: str
    path: str
    slice_name: str | None = None
    min: int | None = None
    max: str | None = None
    must_support: bool = False
    type: tuple[TypeRef, ...] = ()
    binding: Binding | None = None
    slicing: JSONObject | None = None

    def _choice(self, prefix: str) -> tuple[str, Any] | None:
        for key, value in (self.model_extra or {}).items():
            if key.startswith(prefix) and key[len(prefix) : len(prefix) + 1].isupper():
                return key[len(prefix) :], value
        return None

    def fixed(self) -> tuple[str, Any] | None:
        """``(type, value)`` of ``fixed[x]`` (``("Uri", "https://...")``), or None."""
        return self._choice("fixed")

    def pattern(self) -> tuple[str, Any] | None:
        """``(type, value)`` of ``pattern[x]``, or None."""
        return self._choice("pattern")


class Differential(_Fhir):
    """``StructureDefinition.differential``."""

    element: tuple[ElementDefinition, ...]


class StructureDefinition(_Fhir):
    """A profile or extension (https://hl7.org/fhir/R4/structuredefinition.html), differential only."""

    url: str
    name: str
    type: str
    kind: str
    base_definition: str
    derivation: str
    context: tuple[JSONObject, ...] = ()
    differential: Differential
