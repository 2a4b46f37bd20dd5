"""The R4B model pass run in step 1 (adapters/hl7v2/prevalidate.py) on a real store (SQLite file and
PostgreSQL): its verdicts travel with the prepared message, entries it accepted skip that pass in the
commit, and an entry it rejects is refused by the core exactly as without it."""

from __future__ import annotations

import pickle
from dataclasses import replace

import pytest

from adapters.hl7v2.prepare import Prepared
from adapters.hl7v2.prevalidate import model_verdicts
from adapters.hl7v2.processor import InboundProcessor
from gateway.fhir.context import Context
from gateway.settings import Settings
from tests.hl7v2.support import adt, count, msa, processor_for, ref_i12, segments_of


@pytest.fixture
def processor(ctx: Context, settings: Settings) -> InboundProcessor:
    return processor_for(ctx, settings)


def _err(ack: bytes) -> list[list[str]]:
    return segments_of(ack).get("ERR", [])


def test_verdicts_come_with_the_prepared_message(processor: InboundProcessor) -> None:
    prepared = processor.prepare(ref_i12("V1").encode())
    assert prepared.mapped is not None and prepared.error is None
    entries = prepared.mapped.bundle["entry"]
    assert len(prepared.model_ok) == len(entries) >= 4 and all(prepared.model_ok)
    again: Prepared = pickle.loads(pickle.dumps(prepared))  # as it comes back from a parse worker
    assert again.model_ok == prepared.model_ok
    unchecked = replace(processor.preparer, validate_models=False).prepare(ref_i12("V1").encode())
    assert unchecked.model_ok == () and unchecked.mapped is not None
    assert unchecked.mapped.bundle == prepared.mapped.bundle


def test_model_verdicts_judge_each_entry() -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": {"resourceType": "Patient", "id": "x"}, "request": {"method": "POST", "url": "Patient"}},
            {
                "resource": {"resourceType": "Patient", "name": [{"family": "\u00a0"}]},
                "request": {"method": "POST", "url": "Patient"},
            },
            {"request": {"method": "GET", "url": "Patient?identifier=x"}},
        ],
    }
    assert model_verdicts(bundle) == (True, False, False)


def test_messages_apply_the_same_with_and_without_the_step(ctx: Context, processor: InboundProcessor) -> None:
    plain = replace(processor.preparer, validate_models=False)
    with_step = processor.prepare(ref_i12("S1", cin="91000011A").encode())
    without = plain.prepare(ref_i12("S2", cin="91000012A").encode())
    adt_with = processor.prepare(adt("S3", cin="91000011A", mrn=None).encode())
    outcomes = processor.commit([with_step, without, adt_with])
    assert [o.code for o in outcomes] == ["AA", "AA", "AA"]
    assert [r.split("/")[0] for r in outcomes[0].resources] == [r.split("/")[0] for r in outcomes[1].resources]
    assert count(ctx, "ServiceRequest") == 2 and count(ctx, "Encounter") == 1


@pytest.mark.parametrize(
    ("pid", "edit"),
    [
        # a family name of a no-break space: only the R4B model refuses it (adapters/hl7v2/prevalidate.py)
        ("PID|1||91000001A^^^MEDI-CAL^MA||\u00a0^Alex||19900401|F", False),
        # a Condition edited after the mapping: the walk refuses it, so its verdict stays True
        (None, True),
    ],
)
def test_an_entry_the_model_rejects_is_refused_as_before(
    ctx: Context, processor: InboundProcessor, pid: str | None, edit: bool
) -> None:
    answers = []
    for control_id, validate in (("B1", True), ("B2", False)):
        text = ref_i12(control_id, pid=pid)
        prepared = replace(processor.preparer, validate_models=validate).prepare(text.encode())
        assert prepared.mapped is not None
        if edit:
            for entry in prepared.mapped.bundle["entry"]:
                if entry["resource"]["resourceType"] == "Condition":
                    entry["resource"]["onsetDateTime"] = {"not": "a dateTime"}
            if validate:
                prepared.model_ok = model_verdicts(prepared.mapped.bundle)
                assert all(prepared.model_ok)
        elif validate:
            assert prepared.model_ok[0] is False and all(prepared.model_ok[1:])
        prepared.plan, prepared.planned = None, False  # step 1's plan was of the Bundle before the edit
        (outcome,) = processor.commit([prepared])
        answers.append((msa(outcome.ack)[0], [fields[2:4] for fields in _err(outcome.ack)]))
    assert answers[0][0] == "AE" and answers[0] == answers[1]
    assert count(ctx, "Patient") == 0 and count(ctx, "ServiceRequest") == 0
