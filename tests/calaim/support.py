"""Builders and checks shared by the CalAIM workflow tests (synthetic data only).

``assert_emitted_valid`` checks a resource the gateway emitted against the official R4 JSON schema (one
compiled Draft 6 validator per type, built at import) and against every CalAIM profile it claims
(``gateway.fhir.profiles.validate_against_profile``), plus the gateway's own R4 validator.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]  # no stubs in the locked dev group
import orjson
from fastapi.testclient import TestClient
from sqlalchemy import select

from gateway.calaim.config import HCPCS_SYSTEM, IG_BASE, POF_SYSTEM, SERVICE_SYSTEM
from gateway.calaim.county import County, is_county_referral
from gateway.calaim.events import CONSUMERS, HL7V2, queue
from gateway.calaim.resources import load, ref_id
from gateway.fhir.context import Context
from gateway.fhir.profiles import validate_against_profile
from gateway.fhir.validation import validate_resource
from gateway.store.schema import outbox
from tests.conftest import post, put

SD = f"{IG_BASE}/StructureDefinition"
COUNTY = "county-hca-bhs"
"""The county's Organization (``CALAIM_HL7V2_COUNTY_ORGANIZATION``): a referral it requests is a county
referral, whose status and authorization events also go to the county's RRI queue (``events``)."""
SCHEMA_FILE = Path(__file__).resolve().parents[2] / "profiles" / "r4" / "fhir.schema.json"
_DEFINITIONS = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))["definitions"]
SCHEMA_VALIDATORS = {
    rtype: jsonschema.Draft6Validator({"$ref": f"#/definitions/{rtype}", "definitions": _DEFINITIONS})
    for rtype in (
        "Patient",
        "Coverage",
        "Organization",
        "ServiceRequest",
        "Task",
        "CoverageEligibilityRequest",
        "CoverageEligibilityResponse",
        "Procedure",
        "Encounter",
        "Parameters",
    )
}
"""The R4 JSON schema, compiled once per emitted type (module level: built at import)."""


def assert_emitted_valid(resource: dict[str, Any]) -> None:
    """The resource conforms to the R4 JSON schema, the gateway's R4 checks and every profile it claims."""
    rtype = resource["resourceType"]
    schema_errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message[:200]}"
        for e in SCHEMA_VALIDATORS[rtype].iter_errors(resource)
    ]
    assert schema_errors == [], (rtype, schema_errors)
    if rtype == "Parameters":
        return
    assert [i for i in validate_resource(resource) if i.severity in ("error", "fatal")] == [], resource
    for profile in resource.get("meta", {}).get("profile", ()):
        issues = validate_against_profile(resource, profile)
        assert [i for i in issues if i.severity in ("error", "fatal")] == [], (profile, issues)


def ext(name: str, **value: Any) -> dict[str, Any]:
    """An IG extension ``name`` with ``value[x]``."""
    return {"url": f"{SD}/{name}", **value}


def add_member(
    client: TestClient, key: str = "1", *, pofs: tuple[str, ...] = ("1a",), network: str | None = "hn-altamed"
) -> str:
    """PUT a synthetic member (calaim-member) and its Coverage (calaim-coverage); the Patient id."""
    patient: dict[str, Any] = {
        "resourceType": "Patient",
        "id": f"m-{key}",
        "meta": {"profile": [f"{SD}/calaim-member"]},
        "identifier": [{"system": f"{IG_BASE}/sid/medi-cal-cin", "value": f"9100000{key}A"}],
        "name": [{"family": f"Member{key}", "given": ["Test"]}],
    }
    if pofs:
        patient["extension"] = [ext("ext-pof", valueCoding={"system": POF_SYSTEM, "code": p}) for p in pofs]
    assert put(client, f"Patient/m-{key}", patient).status_code in (200, 201)
    coverage: dict[str, Any] = {
        "resourceType": "Coverage",
        "id": f"cov-{key}",
        "meta": {"profile": [f"{SD}/calaim-coverage"]},
        "status": "active",
        "beneficiary": {"reference": f"Patient/m-{key}"},
        "payor": [{"reference": "Organization/calop"}],
    }
    if network:
        coverage["extension"] = [ext("ext-health-network", valueReference={"reference": f"Organization/{network}"})]
    assert put(client, f"Coverage/cov-{key}", coverage).status_code in (200, 201)
    return f"m-{key}"


def referral(
    service: str = "ecm",
    patient: str = "m-1",
    *,
    pofs: tuple[str, ...] = (),
    performer: str | None = None,
    status: str = "active",
    requester: str = "hn-altamed",
) -> dict[str, Any]:
    """A referral (calaim-referral) for ``service`` (``requester=COUNTY``: a county referral)."""
    body: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "meta": {"profile": [f"{SD}/calaim-referral"]},
        "status": status,
        "intent": "order",
        "code": {"coding": [{"system": SERVICE_SYSTEM, "code": service}]},
        "subject": {"reference": f"Patient/{patient}"},
        "authoredOn": "2024-05-01",
        "requester": {"reference": f"Organization/{requester}"},
    }
    if pofs:
        body["extension"] = [ext("ext-pof", valueCoding={"system": POF_SYSTEM, "code": p}) for p in pofs]
    if performer:
        body["performer"] = [{"reference": f"Organization/{performer}"}]
    return body


def plain_request(patient: str = "m-1") -> dict[str, Any]:
    """A ServiceRequest that is not a CalAIM referral (no profile, no service code)."""
    return {
        "resourceType": "ServiceRequest",
        "status": "active",
        "intent": "order",
        "subject": {"reference": f"Patient/{patient}"},
    }


def refer(client: TestClient, service: str = "ecm", patient: str = "m-1", **kwargs: Any) -> dict[str, Any]:
    """POST a referral; the stored ServiceRequest (201 expected)."""
    response = post(client, "ServiceRequest", referral(service, patient, **kwargs))
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def line(code: str, *modifiers: str, units: int | None = None) -> dict[str, Any]:
    """A ``line`` parameter of $decide."""
    parts: list[dict[str, Any]] = [{"name": "productOrService", "valueCoding": {"system": HCPCS_SYSTEM, "code": code}}]
    parts += [{"name": "modifier", "valueCoding": {"system": HCPCS_SYSTEM, "code": m}} for m in modifiers]
    if units is not None:
        parts.append({"name": "units", "valueInteger": units})
    return {"name": "line", "part": parts}


def decision(code: str, *lines: dict[str, Any], **values: Any) -> dict[str, Any]:
    """$decide Parameters: the decision, lines, then periodStart/periodEnd (valueDate), reason, kind, requestId."""
    parameters: list[dict[str, Any]] = [{"name": "decision", "valueCode": code}, *lines]
    kinds = {
        "periodStart": "valueDate",
        "periodEnd": "valueDate",
        "reason": "valueString",
        "kind": "valueCode",
        "requestId": "valueString",
    }
    for name, value in values.items():
        parameters.append({"name": name, kinds[name]: value})
    return {"resourceType": "Parameters", "parameter": parameters}


def decide(client: TestClient, referral_id: str, parameters: dict[str, Any]) -> Any:
    """POST $decide on a referral."""
    return post(client, f"ServiceRequest/{referral_id}/$decide", parameters)


ECM_LINE = line("G9012", "U1", units=48)


def task_of(client: TestClient, referral_id: str) -> dict[str, Any]:
    """The referral's Task."""
    bundle = client.get("/fhir/Task", params={"focus": f"ServiceRequest/{referral_id}"}).json()
    assert len(bundle["entry"]) == 1
    task: dict[str, Any] = bundle["entry"][0]["resource"]
    return task


def referral_status(task: dict[str, Any]) -> tuple[str, str]:
    """The DHCS status code and date of a Task (ext-referral-status)."""
    (found,) = [e for e in task["extension"] if e["url"] == f"{SD}/ext-referral-status"]
    parts = {p["url"]: p for p in found["extension"]}
    return parts["status"]["valueCoding"]["code"], parts["date"]["valueDateTime"]


def events(ctx: Context, topic: str) -> list[dict[str, Any]]:
    """The outbox payloads of ``topic``, oldest first, checking what each consumer's queue got: every
    consumer but ``hl7v2`` the same events, ``hl7v2`` exactly those of county referrals (the referral as
    stored now, gateway/calaim/county.py), none twice. For a topic whose only consumer is ``hl7v2``
    (``calaim.referral-status``) that is the county referrals' events only. A topic without consumers
    (events.CONSUMERS) has none: this checks that it wrote no outbox row at all."""
    per_consumer: dict[str, list[dict[str, Any]]] = {}
    with ctx.repo.connect() as conn:
        if not CONSUMERS[topic]:
            written = conn.execute(select(outbox.c.topic).where(outbox.c.topic.startswith(f"{topic}>"))).all()
            assert written == [], f"{topic} has no consumer but wrote {written}"
            return []
        others = conn.execute(
            select(outbox.c.topic).where(
                outbox.c.topic.startswith(f"{topic}>"),
                outbox.c.topic.not_in([queue(topic, c) for c in CONSUMERS[topic]]),
            )
        ).all()
        assert others == [], f"{topic} wrote queues of no consumer: {others}"
        for consumer in CONSUMERS[topic]:
            query = select(outbox.c.payload).where(outbox.c.topic == queue(topic, consumer)).order_by(outbox.c.id)
            per_consumer[consumer] = [orjson.loads(row.payload) for row in conn.execute(query)]
        county = County.of(ctx.settings)

        def of_county(payload: dict[str, Any]) -> bool:
            referral_id = ref_id(payload.get("referral"), "ServiceRequest")
            found = load(conn, "ServiceRequest", referral_id) if referral_id else None
            return found is not None and is_county_referral(found[1], county)

        lists = [payloads for consumer, payloads in per_consumer.items() if consumer != HL7V2]
        assert all(payloads == lists[0] for payloads in lists), "consumer queues differ"
        county_queue = per_consumer.get(HL7V2)
        if county_queue is not None:
            assert all(of_county(p) for p in county_queue), "an event of a referral not the county's went to hl7v2"
            if lists:
                assert county_queue == [p for p in lists[0] if of_county(p)], "a county referral's event is missing"
    keys = [(p["resource"], p["version"]) for p in (lists[0] if lists else county_queue or [])]
    assert len(keys) == len(set(keys)), "an event written twice"
    return lists[0] if lists else county_queue or []


def expressions(response: Any) -> list[str]:
    """The error expressions of an OperationOutcome response."""
    body = response.json()
    assert body["resourceType"] == "OperationOutcome", body
    return [e for issue in body["issue"] if issue["severity"] == "error" for e in issue.get("expression", [])]


def diagnostics(response: Any) -> str:
    """All diagnostics of an OperationOutcome response, joined."""
    return " | ".join(issue["diagnostics"] for issue in response.json()["issue"])
