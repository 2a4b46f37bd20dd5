"""Operation input read against its OperationDefinition (https://hl7.org/fhir/R4/operations.html#request,
https://hl7.org/fhir/R4/parameters.html): names, parts, value types, cardinality and required bindings
come from the IG's OperationDefinition JSON, so the check follows the published definition.

What the definition does not name is refused (422, ``business-rule``), extensions included: REFERENCE.md
§3 forbids authorization requirements beyond the POF criteria and restrictions beyond the DHCS service
definitions, and an unknown parameter or extension (say a minimum number of contacts) would be one.
Each issue's ``expression`` points at the offending element: ``Parameters.parameter[2].part[0]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gateway.calaim.policy import Policy
from gateway.errors import Issue, Unprocessable
from gateway.fhir.resource_types import SERVED_TYPE_SET
from gateway.types import JSONObject


@dataclass(frozen=True, slots=True)
class Param:
    """One parameter (or part) of the request, with the FHIRPath of where it is."""

    name: str
    expression: str
    value: Any = None
    resource: JSONObject | None = None
    parts: tuple[Param, ...] = ()

    def all(self, name: str) -> list[Param]:
        """The parts called ``name``."""
        return [p for p in self.parts if p.name == name]

    def one(self, name: str) -> Param | None:
        """The first part called ``name``."""
        found = self.all(name)
        return found[0] if found else None


def read_parameters(body: JSONObject, definition: JSONObject, *, policy: Policy, beyond: str) -> Param:
    """The input ``Parameters`` as a root ``Param`` whose parts are the parameters; 422 listing every problem.

    ``beyond`` explains why something the definition does not name is refused.
    """
    reader = _Reader(str(definition.get("code")), policy, beyond)
    if body.get("resourceType") != "Parameters":
        text = f"${reader.operation} takes a Parameters resource"
        raise Unprocessable(message=text, issues=[Issue("invalid", text, expression=("resourceType",))])
    inputs = [p for p in definition.get("parameter", ()) if p.get("use") == "in"]
    reader.extensions(body, "Parameters")
    parts = reader.read_list(body.get("parameter"), "Parameters.parameter", inputs)
    if reader.issues:
        raise Unprocessable(message=reader.issues[0].diagnostics, issues=reader.issues)
    return Param("Parameters", "Parameters", parts=parts)


@dataclass
class _Reader:
    operation: str
    policy: Policy
    beyond: str
    issues: list[Issue] = field(default_factory=list)

    def read_list(self, raw: Any, path: str, definitions: list[JSONObject]) -> tuple[Param, ...]:
        out: list[Param] = []
        by_name = {str(d["name"]): d for d in definitions}
        for i, item in enumerate(raw if isinstance(raw, list) else []):
            where = f"{path}[{i}]"
            name = item.get("name") if isinstance(item, dict) else None
            if not isinstance(name, str) or name not in by_name:
                allowed = ", ".join(by_name) or "none"
                text = f"{name!r} is not a parameter of ${self.operation} (it takes {allowed}): {self.beyond}"
                self.issues.append(Issue("business-rule", text, expression=(where,)))
                continue
            self.extensions(item, where)
            out.append(self.read_one(item, where, by_name[name]))
        for name, definition in by_name.items():
            count = sum(1 for p in out if p.name == name)
            if count < int(definition.get("min", 0)):
                text = f"${self.operation} needs the parameter {name!r}"
                self.issues.append(Issue("required", text, expression=(path,)))
            high = str(definition.get("max", "*"))
            if high != "*" and count > int(high):
                text = f"${self.operation} takes {name!r} at most {high} time(s)"
                self.issues.append(Issue("invalid", text, expression=(path,)))
        return tuple(out)

    def read_one(self, item: JSONObject, where: str, definition: JSONObject) -> Param:
        name = str(definition["name"])
        if definition.get("part"):
            return Param(name, where, parts=self.read_list(item.get("part"), f"{where}.part", definition["part"]))
        kind = str(definition.get("type", ""))
        if kind in SERVED_TYPE_SET or kind == "Resource":
            resource = item.get("resource")
            if not isinstance(resource, dict) or (kind != "Resource" and resource.get("resourceType") != kind):
                self.issues.append(Issue("invalid", f"{name!r} takes a {kind} resource", expression=(where,)))
                return Param(name, where)
            return Param(name, where, resource=resource)
        key = f"value{kind[:1].upper()}{kind[1:]}"
        if [k for k in item if k.startswith("value")] != [key]:
            self.issues.append(Issue("invalid", f"{name!r} takes {key}", expression=(where,)))
            return Param(name, where)
        self.check_binding(item[key], kind, definition, f"{where}.{key}")
        return Param(name, where, value=item[key])

    def check_binding(self, value: Any, kind: str, definition: JSONObject, where: str) -> None:
        """Required bindings to the IG's ValueSets (https://hl7.org/fhir/R4/terminologies.html#required)."""
        binding = definition.get("binding") or {}
        url = binding.get("valueSet")
        if binding.get("strength") != "required" or url not in self.policy.ig.value_sets:
            return
        pairs = self.policy.ig.expand(str(url))
        if kind == "code":
            ok = isinstance(value, str) and any(code == value for _, code in pairs)
            shown = str(value)
        else:
            ok = isinstance(value, dict) and (value.get("system"), value.get("code")) in pairs
            shown = f"{value.get('system')}|{value.get('code')}" if isinstance(value, dict) else str(value)
        if not ok:
            text = f"{shown} is not in the ValueSet {url} that {definition['name']!r} is bound to"
            self.issues.append(Issue("code-invalid", text, expression=(where,)))

    def extensions(self, element: JSONObject, where: str) -> None:
        for key in ("extension", "modifierExtension"):
            for j, _ in enumerate(element.get(key) or ()):
                text = f"{where} carries an {key}, which the operation does not define: {self.beyond}"
                self.issues.append(Issue("business-rule", text, expression=(f"{where}.{key}[{j}]",)))
