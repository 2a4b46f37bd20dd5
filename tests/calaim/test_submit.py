"""$submit (gateway/calaim/submit.py): the EHR-facing authorization check, answered at once from the
stored authorizations; the request and the answer are both stored."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from gateway.calaim.config import HCPCS_SYSTEM, SERVICE_SYSTEM
from tests.calaim.support import ECM_LINE, SD, add_member, assert_emitted_valid, decide, decision, expressions, refer
from tests.conftest import post


def _check(
    service: str = "ecm", day: str = "2024-07-15", purpose: str = "auth-requirements", **item: Any
) -> dict[str, Any]:
    return {
        "resourceType": "CoverageEligibilityRequest",
        "status": "active",
        "purpose": [purpose],
        "patient": {"reference": "Patient/m-1"},
        "servicedDate": day,
        "created": "2024-07-15",
        "insurer": {"reference": "Organization/calop"},
        "item": [{"category": {"coding": [{"system": SERVICE_SYSTEM, "code": service}]}, **item}],
    }


def test_the_check_answers_from_the_authorizations(client: TestClient) -> None:
    add_member(client)
    referral_id = refer(client, "ecm", pofs=("1a",))["id"]
    auth = decide(client, referral_id, decision("A1", ECM_LINE, periodStart="2024-06-01")).json()
    answer = post(client, "CoverageEligibilityRequest/$submit", _check())
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["preAuthRef"] == auth["preAuthRef"]
    assert body["insurance"][0]["inforce"] is True
    assert body["insurance"][0]["benefitPeriod"] == {"start": "2024-06-01", "end": "2025-05-31"}
    party = [e for e in body["extension"] if e["url"] == f"{SD}/ext-responsible-party"]
    assert party[0]["valueCoding"]["code"] == "plan"
    assert "identifier" not in body and "meta" in body and "profile" not in body["meta"]
    request = client.get(f"/fhir/{body['request']['reference']}").json()
    assert request["meta"]["profile"] == [f"{SD}/calaim-authorization-request"]
    for resource in (body, request):
        assert_emitted_valid(resource)
    # Outside the period, for another service, or for a line the authorization lacks: not authorized.
    for check in (
        _check(day="2025-06-01"),
        _check(service="respite-services"),
        _check(productOrService={"coding": [{"system": HCPCS_SYSTEM, "code": "G9008"}]}),
    ):
        refused = post(client, "CoverageEligibilityRequest/$submit", check).json()
        assert refused["insurance"][0]["inforce"] is False and "preAuthRef" not in refused
        assert refused["disposition"].startswith("Not authorized")
        assert_emitted_valid(refused)
    assert client.get("/fhir/CoverageEligibilityRequest?_summary=count").json()["total"] == 1 + 4
    # The resource may come as the ``resource`` parameter, with purpose validation.
    wrapped = {
        "resourceType": "Parameters",
        "parameter": [{"name": "resource", "resource": _check(purpose="validation")}],
    }
    assert post(client, "CoverageEligibilityRequest/$submit", wrapped).json()["preAuthRef"] == auth["preAuthRef"]


def test_what_the_check_refuses(client: TestClient) -> None:
    add_member(client)
    discovery = post(client, "CoverageEligibilityRequest/$submit", _check(purpose="discovery"))
    assert discovery.status_code == 422 and expressions(discovery) == ["CoverageEligibilityRequest.purpose"]
    two = _check()
    two["item"].append({"category": {"coding": [{"system": SERVICE_SYSTEM, "code": "respite-services"}]}})
    mixed = post(client, "CoverageEligibilityRequest/$submit", two)
    assert mixed.status_code == 422 and expressions(mixed) == ["CoverageEligibilityRequest.item"]
    assert post(client, "CoverageEligibilityRequest/$submit", {"resourceType": "Patient"}).status_code == 400
    assert client.get("/fhir/CoverageEligibilityRequest?_summary=count").json()["total"] == 0
