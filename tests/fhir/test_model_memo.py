"""The memo of the R4B model's element verdicts (gateway/fhir/model_memo.py): same issues as the library
alone, on valid resources and on random single mutations of every served type's example."""

from __future__ import annotations

import copy
import random

import pytest

from bench.data import Generator
from gateway.fhir import model_memo, validation
from gateway.types import JSONObject
from tests.fhir.test_validation import EXAMPLES, _mutations, example


def _issues(resource: JSONObject) -> object:
    found = validation.model_issues(resource, str(resource["resourceType"]))
    return None if found is None else [(i.code, i.expression, i.diagnostics) for i in found]


def test_installed_when_validation_is_imported() -> None:
    assert model_memo.installed()


def test_same_verdicts_as_the_library_alone_on_random_mutations() -> None:
    resources = EXAMPLES + _mutations(random.Random(20261124), 1200)
    with model_memo.suspended():
        alone = [_issues(copy.deepcopy(r)) for r in resources]
    model_memo.clear()
    first = [_issues(copy.deepcopy(r)) for r in resources]  # fills the memo
    again = [_issues(copy.deepcopy(r)) for r in resources]  # answered from it where it can
    assert first == alone
    assert again == alone
    assert any(issues for issues in alone), "the corpus has invalid resources"


def test_recurring_elements_are_answered_from_the_memo() -> None:
    resources = [e["resource"] for b in Generator(seed=11).bundles(200, 100) for e in b["entry"]]
    model_memo.clear()
    for resource in resources:
        assert _issues(resource) == []
    remembered = model_memo.size()
    for resource in resources:
        assert _issues(resource) == []
    assert 0 < remembered == model_memo.size()


def test_a_failing_element_is_never_remembered() -> None:
    resource = example("Patient")
    resource["identifier"] = [{"system": "urn:oid:1.2", "period": {"start": "2024-13-01"}}]
    model_memo.clear()
    verdicts = [_issues(copy.deepcopy(resource)) for _ in range(3)]
    assert verdicts[0] and verdicts[0] == verdicts[1] == verdicts[2]
    fixed = copy.deepcopy(resource)
    fixed["identifier"][0]["period"]["start"] = "2024-12-01"
    assert _issues(fixed) == []
    assert _issues(copy.deepcopy(resource)) == verdicts[0]  # the valid neighbour changed nothing


def test_json_types_are_part_of_the_key() -> None:
    """``1`` and ``1.0`` are equal in Python but different JSON: each is judged on its own."""
    model_memo.clear()
    for value in (1, 1.0):
        resource = example("Patient")
        resource["extension"] = [{"url": "urn:x", "valueDecimal": value}]
        assert _issues(resource) == []
    keys = {key for key in model_memo._memo if key[0].__name__ == "Extension" and b"urn:x" in key[1]}
    assert {key[1] for key in keys} == {b'{"url":"urn:x","valueDecimal":1}', b'{"url":"urn:x","valueDecimal":1.0}'}


def test_the_memo_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(model_memo, "MAX_ENTRIES", 50)
    model_memo.clear()
    for n in range(200):
        resource = example("Patient")
        resource["identifier"] = [{"system": "urn:oid:1.2", "value": f"v{n}"}]
        assert _issues(resource) == []
        assert model_memo.size() <= 50
