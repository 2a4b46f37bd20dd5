"""Two members with data of every patient-compartment type, each referred to a different provider, and
helpers to run FHIR interactions in the core as a given ``Grant`` (issue 5 leak tests).

Member A (``m-a``): health network hn-altamed, ECM referral to ``hn-ccn`` (provider X).
Member B (``m-b``): health network hn-noble, ECM referral to ``hn-choc`` (provider Y).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson
from fastapi.testclient import TestClient

from gateway.auth.grant import Grant
from gateway.errors import FhirError
from gateway.fhir.context import Context
from gateway.fhir.core import dispatch
from gateway.fhir.request import FhirRequest, FhirResponse
from tests.calaim.support import add_member, referral
from tests.conftest import post

BASE = "http://gateway.test/fhir"
PROVIDER_X, PROVIDER_Y = "hn-ccn", "hn-choc"
NETWORK_A, NETWORK_B = "hn-altamed", "hn-noble"


@dataclass
class Member:
    """A member's id and the ids of its resources, per type."""

    patient: str
    resources: dict[str, list[str]]

    def refs(self) -> set[str]:
        """Every ``Type/id`` of the member (the Patient included)."""
        return {f"Patient/{self.patient}"} | {f"{t}/{i}" for t, ids in self.resources.items() for i in ids}


def compartment_resources(patient: str, provider: str) -> list[dict[str, Any]]:
    """One resource of each patient-compartment type the gateway serves, for ``patient``."""
    subject = {"reference": f"Patient/{patient}"}
    return [
        {"resourceType": "Condition", "subject": subject, "code": {"text": "housing instability"}},
        {"resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"}, "subject": subject},
        {"resourceType": "CarePlan", "status": "active", "intent": "plan", "subject": subject},
        {
            "resourceType": "Goal",
            "lifecycleStatus": "active",
            "description": {"text": "stable housing"},
            "subject": subject,
        },
        {"resourceType": "CareTeam", "subject": subject},
        {
            "resourceType": "Consent",
            "status": "active",
            "scope": {"text": "treatment"},
            "category": [{"text": "x"}],
            "patient": subject,
        },
        {"resourceType": "Communication", "status": "completed", "subject": subject},
        {
            "resourceType": "EpisodeOfCare",
            "status": "active",
            "patient": subject,
            "managingOrganization": {"reference": f"Organization/{provider}"},
        },
        {"resourceType": "Procedure", "status": "completed", "subject": subject, "code": {"text": "outreach"}},
        {
            "resourceType": "Provenance",
            "target": [subject],
            "recorded": "2024-05-01T00:00:00Z",
            "agent": [{"who": {"reference": f"Organization/{provider}"}}],
        },
    ]


def seed_member(client: TestClient, ctx: Context, key: str, *, network: str, provider: str) -> Member:
    """A member, its Coverage, an ECM referral to ``provider`` (with its Task), and compartment data."""
    patient = add_member(client, key, network=network)
    body = referral("ecm", patient, performer=provider)
    body["requester"] = {"reference": f"Organization/{provider}"}
    response = post(client, "ServiceRequest", body)
    assert response.status_code == 201, response.text
    resources: dict[str, list[str]] = {"Coverage": [f"cov-{key}"], "ServiceRequest": [response.json()["id"]]}
    for resource in compartment_resources(patient, provider):
        created = post(client, resource["resourceType"], resource)
        assert created.status_code == 201, created.text
        resources.setdefault(resource["resourceType"], []).append(created.json()["id"])
    tasks = as_grant(ctx, None, "GET", "Task", query=[("patient", f"Patient/{patient}")])
    resources["Task"] = [e["resource"]["id"] for e in body_of(tasks).get("entry", [])]
    assert resources["Task"], "the workflow creates the referral's Task"
    return Member(patient, resources)


@dataclass
class World:
    """Two members: ``a`` in health network A assigned to provider X, ``b`` in B assigned to Y."""

    ctx: Context
    a: Member
    b: Member


def two_members(client: TestClient, ctx: Context) -> World:
    """Seed the ``World`` of the leak tests."""
    a = seed_member(client, ctx, "a", network=NETWORK_A, provider=PROVIDER_X)
    b = seed_member(client, ctx, "b", network=NETWORK_B, provider=PROVIDER_Y)
    return World(ctx, a, b)


def two_members_one_deleted(client: TestClient, ctx: Context) -> World:
    """``two_members``, with member a's first Condition deleted (a 410 to whoever may see it)."""
    world = two_members(client, ctx)
    deleted = client.delete(f"/fhir/Condition/{world.a.resources['Condition'][0]}")
    assert deleted.status_code in (200, 204)
    return world


def grant(scope: str, *, organization: str | None, patient: str | None = None, name: str = "caller") -> Grant:
    """A grant as the authorization server would issue it (one hour from now)."""
    return Grant(
        subject=name,
        client_id=f"client-{name}",
        scope=scope,
        token_id=f"jti-{name}-{scope}-{organization}-{patient}",
        expires_at=int(time.time()) + 3600,
        patient=patient,
        organization=organization,
    )


def as_grant(
    ctx: Context,
    caller: Grant | None,
    method: str,
    path: str,
    *,
    query: list[tuple[str, str]] | None = None,
    body: dict[str, Any] | None = None,
) -> FhirResponse:
    """Run one interaction in the core as ``caller``; errors come back as their status (like HTTP)."""
    request = FhirRequest(
        method=method,
        path=path,
        query=query or [],
        headers={"content-type": "application/fhir+json"} if body is not None else {},
        body=orjson.dumps(body) if body is not None else None,
        base_url=BASE,
        grant=caller,
    )
    try:
        return dispatch(ctx, request)
    except FhirError as error:
        return FhirResponse(error.status, orjson.dumps(error.outcome()))


def body_of(response: FhirResponse) -> dict[str, Any]:
    """The JSON body of a core response."""
    assert response.body is not None
    parsed: dict[str, Any] = orjson.loads(response.body)
    return parsed


def all_pages(ctx: Context, caller: Grant, path: str, query: list[tuple[str, str]]) -> list[str]:
    """``Type/id`` of every entry of every page of a search or history, following ``next`` links."""
    refs: list[str] = []
    while True:
        response = as_grant(ctx, caller, "GET", path, query=query)
        assert response.status == 200, response.body
        bundle = body_of(response)
        for entry in bundle.get("entry", []):
            resource = entry.get("resource")
            if resource is not None and resource["resourceType"] != "OperationOutcome":
                refs.append(f"{resource['resourceType']}/{resource['id']}")
        following = [link["url"] for link in bundle.get("link", []) if link["relation"] == "next"]
        if not following:
            return refs
        parts = urlsplit(following[0])
        path = parts.path.removeprefix("/fhir").strip("/")
        query = parse_qsl(parts.query, keep_blank_values=True)


READ_GRANTS = [
    grant("system/*.rs", organization="calop"),
    grant("user/*.rs", organization=PROVIDER_X),
    grant("system/*.rs", organization=PROVIDER_Y),
    grant("user/*.rs", organization=NETWORK_A),
    grant("user/*.rs", organization=None),
    grant("patient/*.rs", organization=PROVIDER_X, patient="m-a"),
    grant("patient/*.rs", organization=PROVIDER_Y, patient="m-a"),  # a patient its organization does not see
    grant("patient/Condition.rs?code=http://example.org|x patient/Patient.rs", organization="calop", patient="m-b"),
    grant("user/Condition.rs user/Patient.r", organization=PROVIDER_X),  # 403 on every other type
    grant("user/AuditEvent.rs", organization="calop"),
]
"""Callers of the read-path tests (tests/auth): the plan, providers, a network, no organization, patients (one
its organization does not see), a granular scope, a scope of two types, an auditor."""
