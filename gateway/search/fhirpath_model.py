"""The FHIR R4 type model the FHIRPath compiler checks paths against.

Each element of a FHIR type (https://hl7.org/fhir/R4/elementdefinition.html) is known by its name in
FHIRPath and, in JSON, by one key, or by one key per type for a choice element ``value[x]``
(https://hl7.org/fhir/R4/formats.html#choice: ``deceased[x]`` of types boolean and dateTime is written
``deceasedBoolean`` or ``deceasedDateTime``).

The element tables come from ``profiles/r4/elements.json`` (vendored from the R4 StructureDefinitions
for the served types and the datatypes they reach), so the compiler and the validator share one copy
of the definitions. A backbone element has no type name of its own: it is named by its path
(``CarePlan.activity``), and ``contentReference`` elements (``Consent.provision.provision``) take the
type of the path they refer to.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import orjson

from gateway.search.registry import PROFILES_DIR

ELEMENTS_FILE = PROFILES_DIR / "r4" / "elements.json"

ROOT_ALIASES = ("Resource", "DomainResource")
"""Names an expression may start with to mean "the resource" (https://hl7.org/fhir/R4/resource.html)."""

_BACKBONE = frozenset({"BackboneElement", "Element"})

# FHIRPath type tests honour specialization (https://hl7.org/fhirpath/N1/#is-type-specifier): the
# Quantity profiles are Quantities (https://hl7.org/fhir/R4/datatypes.html#quantity), and the FHIR
# primitives derived from string, uri and integer pass as those.
_SPECIALIZATIONS = {
    "Quantity": frozenset({"Age", "Count", "Distance", "Duration", "SimpleQuantity", "MoneyQuantity"}),
    "string": frozenset({"code", "id", "markdown"}),
    "uri": frozenset({"url", "canonical", "oid", "uuid"}),
    "integer": frozenset({"positiveInt", "unsignedInt"}),
}

Elements = dict[str, tuple[tuple[str, str], ...]]
"""Element name -> ``((json_key, fhir_type), ...)``: one pair, or one per type of a choice element."""


def elements(type_name: str) -> Elements:
    """The elements of a type or backbone path (``{}`` for primitives and types not vendored)."""
    return _all_elements().get(type_name, {})


def narrow(actual: str, wanted: str) -> bool:
    """Whether a value of FHIR type ``actual`` passes ``as wanted`` / ``ofType(wanted)``."""
    return actual == wanted or actual in _SPECIALIZATIONS.get(wanted, ())


@lru_cache(maxsize=1)
def _all_elements() -> dict[str, Elements]:
    """Every type and backbone path of the vendored tables, each with its child elements."""
    tables: dict[str, dict[str, dict[str, Any]]] = orjson.loads(ELEMENTS_FILE.read_bytes())["types"]
    model: dict[str, dict[str, list[tuple[str, str]]]] = {}
    for type_name, table in tables.items():
        model.setdefault(type_name, {})
        for path, definition in table.items():
            parent, _, name = path.rpartition(".")
            children = model.setdefault(parent, {})
            if name.endswith("[x]"):
                name = name[:-3]
                children[name] = [(name + t[:1].upper() + t[1:], t) for t in definition.get("types", ())]
                continue
            if "ref" in definition:
                child_type = str(definition["ref"])
            else:
                types = list(definition.get("types", ()))
                child_type = path if set(types) <= _BACKBONE else types[0]
            children[name] = [(name, child_type)]
    return {name: {k: tuple(v) for k, v in children.items()} for name, children in model.items()}
