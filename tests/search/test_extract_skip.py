"""Index extraction skips parameters whose elements a resource lacks (gateway/search/extract.py
``ParamPlan.needs``): the rows are exactly those of evaluating every parameter."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from bench.data import Generator
from gateway.search.extract import extract, plan_for
from gateway.search.registry import default_registry

EXAMPLES = Path(__file__).parents[1] / "fhir" / "examples"


def _resources() -> list[dict[str, Any]]:
    """The guide's examples (Bundles of every served type) and the benchmark's synthetic families."""
    found: list[dict[str, Any]] = []
    for path in sorted(EXAMPLES.glob("*.json")):
        found.extend(entry["resource"] for entry in json.loads(path.read_text()).get("entry", []))
    found.extend(resource for _, resource in Generator(seed=3).single_creates(200))
    return [r for r in found if isinstance(r, dict) and isinstance(r.get("resourceType"), str)]


def _without_some_keys(resource: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    keys = [k for k in resource if k != "resourceType"]
    dropped = set(rng.sample(keys, k=rng.randint(0, len(keys))))
    return {k: v for k, v in resource.items() if k not in dropped}


def test_skipping_absent_elements_changes_no_row() -> None:
    rng = random.Random(11)
    resources = [r for r in _resources() if plan_for(str(r["resourceType"]), default_registry())]
    assert len(resources) > 200
    for resource in resources:
        for variant in (resource, *(_without_some_keys(resource, rng) for _ in range(5))):
            assert extract(variant) == extract(variant, skip_absent=False), variant["resourceType"]


@pytest.mark.parametrize("resource_type", ["Patient", "ServiceRequest", "Task", "Encounter", "Coverage"])
def test_most_parameters_can_be_skipped(resource_type: str) -> None:
    plans = plan_for(resource_type, default_registry())
    assert sum(p.needs is not None for p in plans) >= len(plans) - 2
    assert all(p.needs is None for p in plans if p.code == "deceased")  # exists(): finds "false" in nothing
