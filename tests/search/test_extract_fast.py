"""Index extraction's fast path (gateway/search/extract.py schedules, gateway/search/plan_rows.py walks,
the remembered reference texts and day ranges) gives exactly the rows of evaluating every compiled
FHIRPath expression, and exactly the rows the extraction gave before it (extract_golden.json: rows of
the committed code of session 10, on the guide's examples, three HN first-import rows and bench
families)."""

from __future__ import annotations

import copy
import json
import math
import random
from pathlib import Path
from typing import Any

import pytest

from bench.data import Generator
from gateway.search import extract as extract_module
from gateway.search.dates import DateFormatError, parse_range
from gateway.search.extract import MAX_SCHEDULES, extract_values, plan_for
from gateway.search.fhirpath import compile_expression, split_reference, walk_of
from gateway.search.registry import INDEXED_TYPES, default_registry

GOLDEN = Path(__file__).with_name("extract_golden.json")
EXAMPLES = Path(__file__).parents[1] / "fhir" / "examples"


def _golden() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = json.loads(GOLDEN.read_text())["cases"]
    return cases


def _encoded(values: dict[str, list[tuple[Any, ...]]]) -> dict[str, list[list[Any]]]:
    """The golden file's form: kinds with rows only, infinities as text (JSON has none)."""

    def one(value: Any) -> Any:
        return ("+inf" if value > 0 else "-inf") if isinstance(value, float) and math.isinf(value) else value

    return {kind: [[one(v) for v in row] for row in rows] for kind, rows in values.items() if rows}


def _resources() -> list[dict[str, Any]]:
    found = [case["resource"] for case in _golden()]
    for path in sorted(EXAMPLES.glob("*.json")):
        found.extend(entry["resource"] for entry in json.loads(path.read_text()).get("entry", []))
    found.extend(resource for _, resource in Generator(seed=7).single_creates(150))
    return [r for r in found if isinstance(r, dict) and isinstance(r.get("resourceType"), str)]


def _outcome(resource: dict[str, Any], *, fast: bool) -> Any:
    try:
        return extract_values(resource, skip_absent=fast)
    except Exception as exc:  # both forms must fail alike on malformed input
        return type(exc).__name__


@pytest.mark.parametrize("case", _golden(), ids=lambda c: str(c["resource"]["resourceType"]))
def test_rows_are_those_of_the_committed_extraction(case: dict[str, Any]) -> None:
    resource = copy.deepcopy(case["resource"])
    assert _encoded(extract_values(resource)) == case["rows"]
    assert _encoded(extract_values(resource, skip_absent=False)) == case["rows"]
    assert resource == case["resource"]  # extraction reads, never writes


_ODD_VALUES: tuple[Any, ...] = (None, "x", "", 7, 1.5, True, False, {}, [], [None], {"text": "y"}, "Patient/p1")


def _mutated(node: Any, rng: random.Random, depth: int = 0) -> Any:
    """``node`` with some of its elements dropped, wrapped in or taken out of a list, given nulls, or
    replaced by a value of another JSON type."""
    if isinstance(node, list):
        items = [_mutated(item, rng, depth + 1) for item in node]
        if items and rng.random() < 0.2:
            items.insert(rng.randrange(len(items) + 1), None)
        if items and rng.random() < 0.1:
            items.append(copy.deepcopy(items[0]))
        return items
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        roll = rng.random()
        if key == "resourceType" and depth == 0:
            out[key] = value
        elif roll < 0.1:
            continue
        elif roll < 0.15:
            out[key] = rng.choice(_ODD_VALUES)
        elif roll < 0.2 and not isinstance(value, list):
            out[key] = [_mutated(value, rng, depth + 1)]
        elif roll < 0.25 and isinstance(value, list) and value:
            out[key] = _mutated(value[0], rng, depth + 1)
        else:
            out[key] = _mutated(value, rng, depth + 1)
    return out


def test_the_fast_path_gives_the_rows_of_every_expression_evaluated() -> None:
    rng = random.Random(20261125)
    resources = _resources()
    assert len(resources) > 200
    for resource in resources:
        for variant in (resource, *(_mutated(resource, rng) for _ in range(8))):
            assert _outcome(variant, fast=True) == _outcome(variant, fast=False), variant["resourceType"]


def test_plain_and_filtered_paths_are_walked_directly() -> None:
    """The shapes ``plan_rows`` walks itself are recognised (else it would evaluate the compiled path)."""
    assert walk_of(compile_expression("Task", "Task.for")) is not None
    assert walk_of(compile_expression("Task", "Resource.meta.tag")) is not None
    occurrence = walk_of(compile_expression("ServiceRequest", "ServiceRequest.occurrence"))
    assert occurrence is not None and len(occurrence.first) == 3
    patient = walk_of(compile_expression("Task", "Task.for.where(resolve() is Patient)"))
    assert patient is not None and patient.where is not None and patient.then is None
    assert patient.where({"reference": "Patient/1"}) and not patient.where({"reference": "Group/1"})
    pof = "ServiceRequest.extension.where(url='http://x/pof').value as Coding"
    walk = walk_of(compile_expression("ServiceRequest", pof))
    assert walk is not None and walk.first == ("extension",) and walk.then == "valueCoding"
    three_steps = "CoverageEligibilityResponse.insurance.item.category"
    assert walk_of(compile_expression("CoverageEligibilityResponse", three_steps)) is None
    assert walk_of(compile_expression("Patient", "Patient.deceased.exists() and Patient.deceased != false")) is None


def test_schedules_are_bounded_and_rebuilt() -> None:
    """A schedule per set of top-level keys, at most ``MAX_SCHEDULES`` per type; the rows stay right
    when they are dropped and built again."""
    registry = default_registry()
    for n in range(MAX_SCHEDULES + 40):
        task = {"resourceType": "Task", "status": "ready", f"x{n}": 1, "for": {"reference": f"Patient/p{n}"}}
        if n % 2:
            task = dict(reversed(list(task.items())))
        assert extract_values(task) == extract_values(task, skip_absent=False)
    entry = extract_module._entries[(id(registry), "Task")]
    assert 0 < len(entry.schedules) <= MAX_SCHEDULES
    assert entry.plans is plan_for("Task", registry)


def test_every_kind_is_present() -> None:
    assert tuple(extract_values({"resourceType": "Task", "status": "ready"})) == INDEXED_TYPES
    assert tuple(extract_values({"resourceType": "Task"}, skip_absent=False)) == INDEXED_TYPES


def test_remembered_reference_texts_do_not_hide_identifiers_or_types() -> None:
    """A reference parameter remembers the row of a text-only Reference; the same text with an
    identifier, or a text that is no target, still gives its own row."""

    def subject(value: Any) -> list[tuple[Any, ...]]:
        return [r for r in extract_values({"resourceType": "Task", "for": value})["reference"] if r[0] == "subject"]

    assert subject({"reference": "Patient/r1"}) == [("subject", "Patient", "r1", None, None, None)]
    assert subject({"reference": "Patient/r1", "identifier": {"system": "s", "value": "v"}}) == [
        ("subject", "Patient", "r1", None, "s", "v")
    ]
    assert subject({"reference": "not-a-target"}) == []
    assert subject({"reference": "not-a-target", "identifier": {"value": "v"}, "type": "Group"}) == [
        ("subject", "Group", None, None, None, "v")
    ]
    assert subject({"reference": "#contained"}) == []
    assert subject({"reference": "urn:uuid:1234"}) == [("subject", None, None, "urn:uuid:1234", None, None)]
    base = "https://other.example.org/fhir/"
    assert subject({"reference": base + "Patient/r2/_history/3"}) == [
        ("subject", "Patient", "r2", base + "Patient/r2", None, None)
    ]
    for n in range(1100):  # more texts than a parameter remembers
        assert subject({"reference": f"Patient/m{n}"}) == [("subject", "Patient", f"m{n}", None, None, None)]
    long_text = "https://example.org/" + "a" * 300 + "/Patient/r3"
    assert split_reference(long_text) == ("Patient", "r3", True)
    assert subject({"reference": long_text}) == [("subject", "Patient", "r3", long_text, None, None)]


def test_remembered_day_ranges_still_reject_bad_days() -> None:
    assert parse_range("2024-02-29") == parse_range(" 2024-02-29")
    for _ in range(2):
        with pytest.raises(DateFormatError):
            parse_range("2023-02-29")
