"""$decide (gateway/calaim/decide.py, decision_rules.py): the pair it writes, the period, the responsible
party and Notice of Action, the Task, the outbox event, and each refusal with its OperationOutcome."""

from __future__ import annotations

import threading
from datetime import date, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gateway.calaim import decide as decide_module
from gateway.calaim.authorizations import Line
from gateway.calaim.config import IG_BASE
from gateway.calaim.decision_rules import DecisionInput
from gateway.calaim.policy import Policy
from gateway.calaim.resources import add_months
from gateway.errors import Unprocessable
from gateway.fhir.context import Context
from gateway.fhir.core import dispatch
from gateway.fhir.request import FhirRequest
from tests.calaim.support import (
    ECM_LINE,
    SD,
    add_member,
    assert_emitted_valid,
    decide,
    decision,
    diagnostics,
    events,
    expressions,
    line,
    plain_request,
    refer,
    referral_status,
    task_of,
)

POLICY = Policy.load()
PARAM = "Parameters.parameter"
LINE = f"{PARAM}[1]"


def _ext(resource: dict[str, Any], name: str) -> Any:
    (found,) = [e for e in resource["extension"] if e["url"] == f"{SD}/{name}"]
    return next(v for k, v in found.items() if k.startswith("value"))


def _ecm(client: TestClient, key: str = "1", pofs: tuple[str, ...] = ("1a",), network: str = "hn-altamed") -> str:
    add_member(client, key, pofs=pofs, network=network)
    return str(refer(client, "ecm", f"m-{key}")["id"])


def test_an_ecm_decision_writes_the_pair_and_accepts_the_task(client: TestClient, ctx: Context) -> None:
    referral_id = _ecm(client)
    answer = decide(client, referral_id, decision("A1", ECM_LINE, periodStart="2024-06-01"))
    assert answer.status_code == 200, answer.text
    auth = answer.json()
    assert auth["meta"]["profile"] == [f"{SD}/calaim-authorization"]
    number = auth["preAuthRef"]
    assert auth["identifier"] == [
        {"system": "https://fhir.calaim-gateway.org/sid/authorization-number", "value": number}
    ]
    # ECM effective from 2023-07-01: 12 months initial.
    assert auth["insurance"][0]["benefitPeriod"] == {"start": "2024-06-01", "end": "2025-05-31"}
    (item,) = auth["insurance"][0]["item"]
    assert item["productOrService"]["coding"][0]["code"] == "G9012"
    assert item["modifier"][0]["coding"][0]["code"] == "U1"
    assert _ext(item, "ext-authorized-units") == 48
    assert _ext(auth, "ext-authorization-decision")["coding"][0]["code"] == "A1"
    assert _ext(auth, "ext-responsible-party")["code"] == "plan"
    assert _ext(auth, "ext-authorization-kind")["code"] == "initial"
    assert _ext(auth, "ext-answers-referral") == {"reference": f"ServiceRequest/{referral_id}"}
    assert not [e for e in auth["extension"] if e["url"].endswith("ext-notice-of-action-owner")]  # A1: nothing adverse
    request = client.get(f"/fhir/{auth['request']['reference']}").json()
    task = task_of(client, referral_id)
    assert task["status"] == "accepted" and referral_status(task)[0] == "accepted"
    for resource in (auth, request, task):
        assert_emitted_valid(resource)
    (event,) = events(ctx, "calaim.authorization")
    assert event["resource"] == f"CoverageEligibilityResponse/{auth['id']}"
    assert (event["authorization"], event["decision"], event["kind"], event["responsibleParty"]) == (
        number,
        "A1",
        "initial",
        "plan",
    )
    assert event["healthNetwork"] == "Organization/hn-altamed" and event["provider"] == "Organization/hn-altamed"
    assert event["period"] == {"start": "2024-06-01", "end": "2025-05-31"}
    assert event["lines"] == [{"code": "G9012", "modifiers": ["U1"], "units": 48}]


def test_a_denial_declines_the_task_and_owes_a_notice(client: TestClient) -> None:
    add_member(client)
    referral_id = refer(client, "medically-tailored-meals")["id"]
    auth = decide(client, referral_id, decision("A3", reason="Does not meet the criteria")).json()
    assert auth["disposition"] == "Does not meet the criteria"
    assert "benefitPeriod" not in auth["insurance"][0] and auth["insurance"][0]["inforce"] is False
    assert _ext(auth, "ext-notice-of-action-owner") == {
        "reference": "Organization/calop",
        "display": "CalOptima Health",
    }
    task = task_of(client, referral_id)
    assert (task["status"], referral_status(task)[0]) == ("rejected", "declined")
    assert client.get(f"/fhir/ServiceRequest/{referral_id}").json()["status"] == "revoked"
    assert_emitted_valid(auth)
    again = decide(client, referral_id, decision("A1", line("S5170", "U6")))
    assert again.status_code == 409  # the referral is closed: no new authorization on it


def test_pended_and_cancelled(client: TestClient) -> None:
    add_member(client)
    pended_id = refer(client, "housing-deposits")["id"]
    pended = decide(client, pended_id, decision("A4")).json()
    assert pended["outcome"] == "queued"
    assert task_of(client, pended_id)["status"] == "requested"
    cancelled = decide(client, pended_id, decision("C", reason="Member withdrew")).json()
    task = task_of(client, pended_id)
    assert (task["status"], referral_status(task)[0]) == ("cancelled", "loop-closed")
    reason = [e for e in task["extension"] if e["url"].endswith("ext-loop-closure-reason")]
    assert reason[0]["valueCodeableConcept"]["text"] == "Member withdrew"
    assert pended["preAuthRef"] != cancelled["preAuthRef"]
    for resource in (pended, cancelled, task):
        assert_emitted_valid(resource)


def test_periods_before_the_2023_rule_and_for_community_supports(client: TestClient) -> None:
    early = _ecm(client, "1")
    # Effective before 2023-07-01: at most 6 months, and a shorter period is allowed.
    auth = decide(client, early, decision("A1", ECM_LINE, periodStart="2023-03-01", periodEnd="2023-06-30")).json()
    assert auth["insurance"][0]["benefitPeriod"] == {"start": "2023-03-01", "end": "2023-06-30"}
    add_member(client, "2")
    care = refer(client, "recuperative-care", "m-2")["id"]
    cs = decide(client, care, decision("A1", line("T2033", "U6"), periodStart="2024-02-15")).json()
    assert cs["insurance"][0]["benefitPeriod"] == {"start": "2024-02-15", "end": "2024-05-14"}  # plan.json: 3 months


def test_reauthorization_modification_and_termination(client: TestClient, ctx: Context) -> None:
    referral_id = _ecm(client)
    start = date.today().replace(day=1) - timedelta(days=31)
    first = decide(client, referral_id, decision("A1", ECM_LINE, periodStart=start.isoformat())).json()
    first_end = date.fromisoformat(first["insurance"][0]["benefitPeriod"]["end"])
    renewed = decide(client, referral_id, decision("A1", ECM_LINE)).json()
    assert _ext(renewed, "ext-authorization-kind")["code"] == "reauthorization"
    # 6 months, continuing the first authorization.
    renewed_start = first_end + timedelta(days=1)
    expected = {
        "start": renewed_start.isoformat(),
        "end": (add_months(renewed_start, 6) - timedelta(days=1)).isoformat(),
    }
    assert renewed["insurance"][0]["benefitPeriod"] == expected
    assert renewed["preAuthRef"] != first["preAuthRef"]
    modified = decide(
        client, referral_id, decision("A6", line("G9008", "U2", units=24), reason="Fewer hours", kind="modification")
    )
    assert modified.status_code == 200, modified.text
    changed = modified.json()
    assert (changed["id"], changed["meta"]["versionId"], changed["preAuthRef"]) == (
        renewed["id"],
        "2",
        renewed["preAuthRef"],
    )
    assert changed["insurance"][0]["item"][0]["productOrService"]["coding"][0]["code"] == "G9008"
    assert changed["insurance"][0]["benefitPeriod"] == expected
    end = (renewed_start + timedelta(days=40)).isoformat()
    ended = decide(client, referral_id, decision("A6", periodEnd=end, reason="Graduated", kind="termination")).json()
    assert ended["insurance"][0]["benefitPeriod"] == {"start": renewed_start.isoformat(), "end": end}
    assert _ext(ended, "ext-notice-of-action-owner")["reference"] == "Organization/calop"
    task = task_of(client, referral_id)
    assert (task["status"], referral_status(task)[0]) == ("completed", "loop-closed")
    assert client.get(f"/fhir/ServiceRequest/{referral_id}").json()["status"] == "completed"
    for resource in (first, renewed, changed, ended, task):
        assert_emitted_valid(resource)
    kinds = [e["kind"] for e in events(ctx, "calaim.authorization")]
    assert kinds == ["initial", "reauthorization", "modification", "termination"]


def test_presumptive_authorization(client: TestClient) -> None:
    justice = _ecm(client, "1", pofs=("4",))  # routed to the county, which is trusted
    auth = decide(client, justice, decision("A1", ECM_LINE, periodStart="2024-06-01")).json()
    assert _ext(auth, "ext-authorization-kind")["code"] == "presumptive"  # POF 4: presumptive by default
    other = _ecm(client, "2", pofs=("4",))
    refused = decide(client, other, decision("A1", ECM_LINE, kind="initial"))
    assert refused.status_code == 422
    assert expressions(refused) == ["Parameters.parameter[2]"]
    assert "requires presumptive" in diagnostics(refused)
    untrusted = _ecm(client, "3", pofs=("1a",))  # AltaMed is not trusted
    refused = decide(client, untrusted, decision("A1", ECM_LINE, kind="presumptive"))
    assert refused.status_code == 422 and expressions(refused) == ["Parameters.parameter[2]"]
    assert "ext-trusted-presumptive-provider" in diagnostics(refused)


@pytest.mark.parametrize(
    ("service", "parameters", "expression", "text"),
    [
        ("ecm", decision("A1", line("H9999", "U1")), f"{LINE}.part[0].valueCoding", "not in the ValueSet"),
        ("ecm", decision("A1", line("T2033", "U6")), "Parameters.parameter[1].part[0]", "not a DHCS code of ecm"),
        ("ecm", decision("A1", line("G9012", "U6")), "Parameters.parameter[1].part[1]", "not a DHCS combination"),
        ("ecm", decision("A1", line("G9012", "U1", "U2")), "Parameters.parameter[1].part[2]", "additional modifiers"),
        ("housing-transition-navigation", decision("A1", line("H0043", "U6"), line("H0044", "U2")),
         "Parameters.parameter[2].part[0]", "housing-deposits needs its own referral"),
        ("respite-services", decision("A1", line("S5151", "U6"), periodStart="2022-12-01"),
         "Parameters.parameter[2]", "offers respite-services from 2023-01-01"),
        ("ecm", decision("A1", ECM_LINE, periodStart="2024-06-01", periodEnd="2024-08-31"),
         "Parameters.parameter[3]", "blanket reassessment"),
        ("ecm", {"resourceType": "Parameters", "parameter": [
            {"name": "decision", "valueCode": "A1"}, ECM_LINE, {"name": "minimumContacts", "valueInteger": 4}]},
         "Parameters.parameter[2]", "beyond the Population of Focus criteria"),
        ("ecm", {"resourceType": "Parameters", "parameter": [
            {"name": "decision", "valueCode": "A1", "extension": [{"url": "urn:x:min-contacts", "valueInteger": 4}]},
            ECM_LINE]}, "Parameters.parameter[0].extension[0]", "beyond the Population of Focus criteria"),
        ("ecm", decision("A1"), "Parameters.parameter[0]", "at least one service line"),
        ("ecm", decision("A3"), "Parameters.parameter[0]", "needs a reason"),
        ("ecm", decision("A6", ECM_LINE, reason="x", kind="modification"), f"{PARAM}[3]", "earlier certified"),
        ("ecm", decision("A1", line("G9012", "U1", units=-1)), "Parameters.parameter[1].part[2]", "0 or more"),
        ("ecm", decision("B9"), "Parameters.parameter[0].valueCode", "not in the ValueSet"),
    ],
)  # fmt: skip
def test_refusals(
    client: TestClient, ctx: Context, service: str, parameters: dict[str, Any], expression: str, text: str
) -> None:
    add_member(client)
    referral_id = refer(client, service)["id"]
    refused = decide(client, referral_id, parameters)
    assert refused.status_code == 422, refused.text
    assert expression in expressions(refused)
    assert text in diagnostics(refused)
    # Nothing was written: no pair, the Task unmoved, no event.
    assert client.get("/fhir/CoverageEligibilityResponse?_summary=count").json()["total"] == 0
    assert client.get("/fhir/CoverageEligibilityRequest?_summary=count").json()["total"] == 0
    assert task_of(client, referral_id)["status"] == "requested"
    assert events(ctx, "calaim.authorization") == []


def test_unknown_referral_and_not_a_referral(client: TestClient) -> None:
    assert decide(client, "nope", decision("A1", ECM_LINE)).status_code == 404
    add_member(client)
    plain = plain_request()
    plain_id = client.post("/fhir/ServiceRequest", json=plain).json()["id"]
    assert decide(client, plain_id, decision("A1", ECM_LINE)).status_code == 422


def test_health_network_authorizations(ctx: Context, client: TestClient) -> None:
    """Created before 2023-01-01: the member's HN is responsible, owes the notice, and alone changes it."""
    referral_id = _ecm(client, network="hn-optum-monarch", pofs=("2",))
    inp = DecisionInput.of("A2", lines=(Line("G9012", ("U1",), 24),), period_start=date(2022, 12, 1), reason="Partial")
    stored = decide_module.decide(ctx, policy=POLICY, referral_id=referral_id, inp=inp, decided_on=date(2022, 11, 15))
    auth = client.get(f"/fhir/CoverageEligibilityResponse/{stored.res_id}").json()
    assert _ext(auth, "ext-responsible-party")["code"] == "hn"
    assert _ext(auth, "ext-notice-of-action-owner")["reference"] == "Organization/hn-optum-monarch"
    assert auth["insurance"][0]["benefitPeriod"] == {"start": "2022-12-01", "end": "2023-05-31"}
    assert_emitted_valid(auth)
    refused = decide(client, referral_id, decision("A6", reason="x", kind="termination"))
    assert refused.status_code == 422 and "daily authorization file" in diagnostics(refused)
    ended = DecisionInput.of("A6", period_end=date(2023, 2, 28), reason="Moved", kind="termination")
    decide_module.decide(
        ctx, policy=POLICY, referral_id=referral_id, inp=ended, decided_on=date(2023, 2, 1), hn_file=True
    )
    auth = client.get(f"/fhir/CoverageEligibilityResponse/{stored.res_id}").json()
    assert auth["insurance"][0]["benefitPeriod"]["end"] == "2023-02-28"
    assert _ext(auth, "ext-responsible-party")["code"] == "hn"
    add_member(client, "2", network=None)
    other = refer(client, "ecm", "m-2")["id"]
    with pytest.raises(Unprocessable, match="names none"):  # no HN on the Coverage: nobody owns a 2022 authorization
        decide_module.decide(ctx, policy=POLICY, referral_id=other, inp=inp, decided_on=date(2022, 11, 15))


def _count(client: TestClient, rtype: str) -> int:
    total: int = client.get(f"/fhir/{rtype}?_summary=count").json()["total"]
    return total


def test_a_retried_request_id_answers_the_first_authorization(client: TestClient, ctx: Context) -> None:
    referral_id = _ecm(client)
    first = decide(client, referral_id, decision("A1", ECM_LINE, periodStart="2024-06-01", requestId="req-1"))
    assert first.status_code == 200, first.text
    auth = first.json()
    request = client.get(f"/fhir/{auth['request']['reference']}").json()
    assert request["identifier"] == [{"system": f"{IG_BASE}/sid/decision-request-id", "value": "req-1"}]
    assert_emitted_valid(request)
    counts = [_count(client, t) for t in ("CoverageEligibilityResponse", "CoverageEligibilityRequest", "Task")]
    again = decide(client, referral_id, decision("A1", ECM_LINE, periodStart="2024-06-01", requestId="req-1"))
    assert again.status_code == 200, again.text
    assert again.json() == auth  # the same authorization, not a reauthorization
    assert again.headers["etag"] == first.headers["etag"]
    assert [_count(client, t) for t in ("CoverageEligibilityResponse", "CoverageEligibilityRequest", "Task")] == counts
    assert len(events(ctx, "calaim.authorization")) == 1
    # A modification changes the authorization; retrying the first request still answers its version.
    modified = decide(
        client, referral_id, decision("A6", line("G9008", "U2", units=24), reason="Fewer", kind="modification")
    )
    assert modified.json()["meta"]["versionId"] == "2"
    assert (
        decide(client, referral_id, decision("A1", ECM_LINE, periodStart="2024-06-01", requestId="req-1")).json()
        == auth
    )
    # The same requestId with different content is a conflict; nothing is written.
    counts = [_count(client, t) for t in ("CoverageEligibilityResponse", "CoverageEligibilityRequest")]
    conflict = decide(client, referral_id, decision("A3", reason="Changed my mind", requestId="req-1"))
    assert conflict.status_code == 409, conflict.text
    assert conflict.json()["resourceType"] == "OperationOutcome"
    assert "different content" in diagnostics(conflict) and expressions(conflict) == ["Parameters.parameter[2]"]
    assert [_count(client, t) for t in ("CoverageEligibilityResponse", "CoverageEligibilityRequest")] == counts
    # A new requestId is a new decision; the same requestId on another referral is another request.
    renewed = decide(client, referral_id, decision("A1", ECM_LINE, requestId="req-2")).json()
    assert _ext(renewed, "ext-authorization-kind")["code"] == "reauthorization"
    other = _ecm(client, "2")
    assert decide(client, other, decision("A1", ECM_LINE, requestId="req-1")).json()["id"] != auth["id"]


def test_concurrent_retries_make_one_authorization(client: TestClient, ctx: Context) -> None:
    referral_id = _ecm(client)
    body = decision("A1", ECM_LINE, periodStart="2024-06-01", requestId="race-1")
    barrier = threading.Barrier(2)
    answers: list[tuple[int, str]] = []
    errors: list[BaseException] = []

    def fire() -> None:
        request = FhirRequest(
            "POST", f"ServiceRequest/{referral_id}/$decide", resource=body, base_url="http://testserver/fhir"
        )
        barrier.wait()
        try:
            response = dispatch(ctx, request)
            answers.append((response.status, str(response.stored.res_id if response.stored else "")))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=fire) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert [status for status, _ in answers] == [200, 200]
    assert answers[0][1] == answers[1][1]
    assert _count(client, "CoverageEligibilityResponse") == 1
    assert _count(client, "CoverageEligibilityRequest") == 1
    assert len(events(ctx, "calaim.authorization")) == 1
