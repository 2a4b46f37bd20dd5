"""The R4B library's per-model checks computed once per class (gateway/fhir/model_checks.py): in use by
every model the served types build, and the same verdicts and errors as the library's own functions."""

from __future__ import annotations

import contextlib
import copy
import functools
import random
import typing
from typing import Any

import pydantic
import pytest
from fhir_core.fhirabstractmodel import FHIRAbstractModel
from fhir_core.types import FhirBase

from gateway.fhir import model_checks, model_memo, validation
from gateway.fhir.resource_types import SERVED_TYPE_SET
from gateway.types import JSONObject
from tests.fhir.test_validation import EXAMPLES, _mutations, example


def _model_classes() -> list[type[FHIRAbstractModel]]:
    """Every model class the served resource types build: the resources and the types of their elements."""
    found: dict[type, None] = {}
    pending: list[Any] = [validation._model(name) for name in sorted(SERVED_TYPE_SET)]
    while pending:
        item = pending.pop()
        if isinstance(item, type) and issubclass(item, FHIRAbstractModel):
            if item in found:
                continue
            found[item] = None
            pending.extend(field.annotation for field in item.model_fields.values())
        elif isinstance(item, type) and issubclass(item, FhirBase):
            if hasattr(item, "get_model_klass"):  # an element's type: its model is built when validated
                pending.append(item.get_model_klass())
        else:
            pending.extend(typing.get_args(item))
    return list(found)


def _verdict(call: typing.Callable[[], Any]) -> tuple[str, Any]:
    """What a check answers: its value, or the errors it raised (type, location, message, input)."""
    try:
        return ("ok", call())
    except pydantic.ValidationError as exc:
        return ("invalid", [(e["type"], e["loc"], e["msg"], repr(e["input"])) for e in exc.errors()])
    except Exception as exc:  # the library trips over some wrong JSON types (TypeError, AttributeError)
        return (type(exc).__name__, str(exc))


def _issues(resource: JSONObject) -> object:
    """The R4B model's raw answer on ``resource`` (its errors, before the gateway maps or drops any)."""
    model = validation._model(str(resource["resourceType"]))
    return _verdict(lambda: model.model_validate(resource) and None)


def test_every_model_of_the_served_types_runs_these_checks() -> None:
    assert model_checks.installed()
    classes = _model_classes()
    assert len(classes) > 100
    assert [c.__name__ for c in classes if not model_checks.in_use(c)] == []


def _null_inputs(cls: type[FHIRAbstractModel], rng: random.Random) -> list[object]:
    """Inputs for the null check: not a dict, empty, and per list field nulls under its alias and its name."""
    inputs: list[object] = ["x", None, [], {}]
    for name, field in cls.model_fields.items():
        alias = field.alias or name
        inputs.append({alias: [None]})
        inputs.append({alias: [{}, None], name: [None]})
        inputs.append({name: [None, {}]})
        inputs.append({alias: rng.choice([[{}], None, "x", [{}, {}]]), name: [None]})
    return inputs


def test_the_null_check_answers_as_the_librarys_for_every_model_class() -> None:
    rng = random.Random(11)
    ours = model_checks._reject_null_complex_elements
    library = model_checks._library["reject_null_complex_elements"]
    compared = 0
    for cls in _model_classes():
        for data in _null_inputs(cls, rng):
            expected = _verdict(functools.partial(library, cls, copy.deepcopy(data)))
            assert _verdict(functools.partial(ours, cls, copy.deepcopy(data))) == expected, (cls.__name__, data)
            compared += expected[0] == "invalid"
    assert compared > 500


def _special_cases() -> list[JSONObject]:
    """Resources that reach each check's error: nulls in complex lists, a choice twice, a required primitive
    missing with and without its ``_field`` extension."""
    cases: list[JSONObject] = []
    patient = example("Patient")
    cases.append({**patient, "identifier": [None]})
    cases.append({**patient, "name": [{"family": "Doe"}, None], "telecom": [None]})
    cases.append({**patient, "deceasedBoolean": False, "deceasedDateTime": "2020-01-01"})
    cases.append({**patient, "multipleBirthBoolean": True, "multipleBirthInteger": 2, "deceasedBoolean": True})
    cases.append({**patient, "link": [{"type": "seealso"}]})  # Patient.link.other required
    cases.append({**patient, "communication": [{"preferred": True}]})  # language required
    no_status = {k: v for k, v in example("Task").items() if k != "status"}
    task = example("Task")
    cases.append(no_status)
    cases.append({**no_status, "_status": {"extension": [{"url": "urn:x", "valueString": "why"}]}})
    cases.append({**no_status, "_status": {"id": "s"}})
    cases.append({**task, "input": [{"type": {"text": "t"}}]})  # value[x] required
    cases.append({**task, "input": [{"type": {"text": "t"}, "valueString": "a", "valueBoolean": True}]})
    return cases


@pytest.mark.parametrize("memo", [True, False], ids=["with the element memo", "without it"])
def test_same_verdicts_as_the_librarys_checks_on_random_mutations(memo: bool) -> None:
    resources = EXAMPLES + _special_cases() + _mutations(random.Random(20261125), 1200)
    with model_memo.suspended() if not memo else contextlib.nullcontext():
        with model_checks.suspended():
            library = [_issues(copy.deepcopy(r)) for r in resources]
        ours = [_issues(copy.deepcopy(r)) for r in resources]
    assert ours == library
    assert sum(1 for verdict in library if verdict != ("ok", None)) > 300, "the corpus has invalid resources"


def test_special_cases_fail_where_expected() -> None:
    """The cases above do reach the checks (else the comparison would prove little)."""
    verdicts = [_issues(copy.deepcopy(r)) for r in _special_cases()]
    assert [n for n, verdict in enumerate(verdicts) if verdict == ("ok", None)] == [7], verdicts
