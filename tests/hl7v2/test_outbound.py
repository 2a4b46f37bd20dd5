"""Outbound RRI^I12 to a real MLLP listener playing the county: sent for county referrals when the plan
decides or the status changes, resent until AA, recorded when answered AE, one message per change; the
messages parse with python-hl7 and hl7apy."""

from __future__ import annotations

import logging
from typing import Any

import hl7
import orjson
import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message
from sqlalchemy import select, update

from adapters.hl7v2 import messagelog
from adapters.hl7v2.config import mapping_config
from adapters.hl7v2.outbound import RriSender
from gateway.calaim.config import HCPCS_SYSTEM
from gateway.calaim.policy import Policy
from gateway.fhir.context import Context
from gateway.fhir.core import dispatch
from gateway.fhir.request import FhirRequest
from gateway.settings import Settings
from gateway.store.outbox import enqueue
from gateway.store.schema import outbox
from tests.hl7v2.support import CountyListener, county_listener, msa, processor_for, ref_i12, search

ECM_LINE = {
    "name": "line",
    "part": [
        {"name": "productOrService", "valueCoding": {"system": HCPCS_SYSTEM, "code": "G9012"}},
        {"name": "modifier", "valueCoding": {"system": HCPCS_SYSTEM, "code": "U1"}},
        {"name": "units", "valueInteger": 48},
    ],
}


def sender_for(ctx: Context, settings: Settings, listener: CountyListener) -> RriSender:
    configured = settings.model_copy(
        update={"hl7v2_county_endpoint": f"127.0.0.1:{listener.port}", "hl7v2_ack_timeout_s": 5.0}
    )
    policy = Policy.load(None)
    return RriSender(ctx, configured, policy, mapping_config(configured, policy))


def deliver_all(sender: RriSender) -> int:
    return sum(worker.run_once() for worker in sender.workers())


def county_referral(ctx: Context, settings: Settings, control_id: str = "REF-O1") -> dict[str, Any]:
    (ack,) = processor_for(ctx, settings).process(ref_i12(control_id, mrn="MRN-5", referral_id="CR-55").encode())
    assert msa(ack)[0] == "AA"
    (referral,) = search(ctx, "ServiceRequest", [("identifier", "CR-55")])
    return referral


def decide(ctx: Context, referral_id: str, code: str = "A1") -> None:
    parameters = {"resourceType": "Parameters", "parameter": [{"name": "decision", "valueCode": code}, ECM_LINE]}
    response = dispatch(ctx, FhirRequest("POST", f"ServiceRequest/{referral_id}/$decide", resource=parameters))
    assert response.status in (200, 201), response.body


def segments(raw: bytes) -> dict[str, list[str]]:
    return {line[:3]: line.split("|") for line in raw.decode().split("\r") if line}


def test_decision_on_a_county_referral_sends_rri(ctx: Context, settings: Settings) -> None:
    referral = county_referral(ctx, settings)
    with county_listener() as county:
        sender = sender_for(ctx, settings, county)
        deliver_all(sender)  # the Pending status of the new referral
        decide(ctx, referral["id"])
        deliver_all(sender)
        sender.client.close()
    assert len(county.received) == 3  # the new referral (Pending), the authorization, the Task accepted
    pending, authorized, accepted = (segments(raw) for raw in county.received)
    assert accepted["RF1"][1].startswith("A^") and "accepted^^CALAIMRS" in accepted["RF1"][4]
    assert pending["RF1"][1].startswith("P^") and "pending^^CALAIMRS" in pending["RF1"][4]
    assert pending["MSA"][1:3] == ["AA", "REF-O1"]  # answers the county's REF^I12
    assert authorized["MSH"][8] == "RRI^I12^RRI_I12"
    assert authorized["RF1"][1].startswith("A^Accepted") and authorized["RF1"][6].startswith("CR-55")
    assert authorized["RF1"][11] == referral["id"]
    aut = authorized["AUT"]
    assert aut[6].startswith("AUTH-") and aut[4] and aut[5] and aut[9] == "48"
    assert authorized["PID"][3].startswith("91000001A^^^MEDI-CAL^MA~MRN-5^^^COUNTY^MR")
    rows = messagelog.search(ctx.repo.engine, direction="out")
    assert sorted(r.status for r in rows) == ["AA", "AA", "AA"]


def test_rri_parses_with_python_hl7_and_hl7apy(ctx: Context, settings: Settings) -> None:
    referral = county_referral(ctx, settings)
    with county_listener() as county:
        sender = sender_for(ctx, settings, county)
        decide(ctx, referral["id"])
        deliver_all(sender)
        sender.client.close()
    assert county.received
    for raw in county.received:
        text = raw.decode()
        parsed = hl7.parse(text)  # python-hl7, an independent implementation
        assert str(parsed.segment("MSH")[9]) == "RRI^I12^RRI_I12"
        assert str(parsed.segment("PID")[5][0][0]) == "Testmember"
        strict = parse_message(text, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
        assert strict.msh.msh_10.to_er7() == text.split("|")[9]
        assert strict.validate()


def test_ae_is_recorded_and_retried_until_aa(ctx: Context, settings: Settings) -> None:
    referral = county_referral(ctx, settings)
    with county_listener("AE") as county:
        sender = sender_for(ctx, settings, county)
        assert deliver_all(sender) == 0  # the Pending status event is answered AE: nothing completes
        (row,) = messagelog.search(ctx.repo.engine, direction="out")
        assert row.status == "AE" and row.error == "AE 204"
        with ctx.repo.connect() as conn:
            (event,) = conn.execute(select(outbox).where(outbox.c.topic == "calaim.referral-status>hl7v2")).all()
        assert event.delivered_at is None and event.attempts == 1 and event.last_error == "AE 204"
        county.answer = "AA"
        with ctx.repo.engine.begin() as conn:  # skip the backoff instead of waiting for it
            conn.execute(update(outbox).where(outbox.c.id == event.id).values(available_at=0))
        assert deliver_all(sender) == 1
        sender.client.close()
    assert len(county.received) == 2
    first, second = (segments(raw)["MSH"][9] for raw in county.received)
    assert first == second == f"RRI{event.id}"  # the resend of one change has the same MSH-10
    (row,) = messagelog.search(ctx.repo.engine, direction="out")
    assert row.status == "AA" and row.attempts == 2 and referral["id"] in orjson.dumps(row.resources).decode()


def test_referrals_not_of_the_county_send_nothing(
    ctx: Context, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """The workflow writes no ``hl7v2`` event for a referral that is not the county's; one written anyway
    (before session 7) is completed unsent by the sender, counted and logged without PHI."""
    for body in (
        {
            "resourceType": "Patient",
            "id": "m-9",
            "identifier": [{"system": "https://fhir.calaim-gateway.org/sid/medi-cal-cin", "value": "91000009A"}],
        },
    ):
        dispatch(ctx, FhirRequest("PUT", "Patient/m-9", resource=body))
    referral = {
        "resourceType": "ServiceRequest",
        "status": "active",
        "intent": "order",
        "code": {"coding": [{"system": "https://fhir.calaim-gateway.org/CodeSystem/calaim-service", "code": "ecm"}]},
        "subject": {"reference": "Patient/m-9"},
        "authoredOn": "2025-03-01",
        "requester": {"reference": "Organization/hn-altamed"},
        "extension": [
            {
                "url": "https://fhir.calaim-gateway.org/StructureDefinition/ext-pof",
                "valueCoding": {"system": "https://fhir.calaim-gateway.org/CodeSystem/pof", "code": "6"},
            }
        ],
    }
    created = dispatch(ctx, FhirRequest("POST", "ServiceRequest", resource=referral))
    assert created.status == 201
    with ctx.repo.connect() as conn:
        assert conn.execute(select(outbox.c.id).where(outbox.c.topic.like("%>hl7v2"))).all() == []
    assert created.stored is not None
    referral_id = created.stored.res_id
    legacy = {
        "resource": "Task/t-9",
        "version": 1,
        "referral": f"ServiceRequest/{referral_id}",
        "taskStatus": "requested",
    }
    with ctx.repo.engine.begin() as conn:
        enqueue(conn, topic="calaim.referral-status>hl7v2", payload=legacy, dedupe_key="Task/t-9/_history/1")
    with county_listener() as county, caplog.at_level(logging.INFO, logger="adapters.hl7v2"):
        sender = sender_for(ctx, settings, county)
        assert deliver_all(sender) == 1
        sender.client.close()
    assert county.received == [] and sender.skipped == 1
    (line,) = [r.getMessage() for r in caplog.records if "county referral" in r.getMessage()]
    assert "calaim.referral-status>hl7v2" in line and "m-9" not in line and referral_id not in line
    with ctx.repo.connect() as conn:
        pending = conn.execute(
            select(outbox.c.id).where(outbox.c.topic.like("%>hl7v2"), outbox.c.delivered_at.is_(None))
        ).all()
    assert pending == []


@pytest.mark.parametrize("decision", ["A3"])
def test_denial_is_sent_as_rejected(ctx: Context, settings: Settings, decision: str) -> None:
    referral = county_referral(ctx, settings)
    parameters = {
        "resourceType": "Parameters",
        "parameter": [{"name": "decision", "valueCode": decision}, ECM_LINE, {"name": "reason", "valueString": "x"}],
    }
    assert dispatch(
        ctx, FhirRequest("POST", f"ServiceRequest/{referral['id']}/$decide", resource=parameters)
    ).status in (
        200,
        201,
    )
    with county_listener() as county:
        sender = sender_for(ctx, settings, county)
        deliver_all(sender)
        sender.client.close()
    statuses = [segments(raw)["RF1"][1][:1] for raw in county.received]
    assert "R" in statuses
