"""Write hooks run inside the write's transaction: what they write commits with it, what they refuse
rolls it back, and they may answer a create with an existing resource."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from gateway.errors import Unprocessable
from gateway.fhir.context import Context
from gateway.fhir.core import dispatch
from gateway.fhir.hooks import WriteEvent
from gateway.fhir.request import FhirRequest
from gateway.store.repository import StoredResource
from tests.conftest import patient, post


def _request(subject: str, note: str = "") -> dict[str, Any]:
    body: dict[str, Any] = {"resourceType": "ServiceRequest", "status": "active", "intent": "order"}
    body["subject"] = {"reference": subject}
    if note:
        body["note"] = [{"text": note}]
    return body


class TaskPerRequest:
    """Creates a Task for each new ServiceRequest; refuses notes saying 'refuse' (after the Task is written)."""

    def before(self, ctx: Context, event: WriteEvent) -> StoredResource | None:
        return None

    def after(self, ctx: Context, event: WriteEvent) -> None:
        if event.interaction != "create" or event.stored is None:
            return
        task = {
            "resourceType": "Task",
            "status": "requested",
            "intent": "order",
            "focus": {"reference": f"ServiceRequest/{event.stored.res_id}"},
        }
        dispatch(ctx, FhirRequest("POST", "Task", resource=task, base_url="http://hook"))
        notes = (event.resource or {}).get("note", [])
        if any(n.get("text") == "refuse" for n in notes):
            raise Unprocessable("refused by policy")


class AnswerWithExisting:
    """Answers a create with the first ServiceRequest of the same subject, if any."""

    def before(self, ctx: Context, event: WriteEvent) -> StoredResource | None:
        assert ctx.tx is not None and event.resource is not None
        subject = event.resource["subject"]["reference"]
        ctx.tx.flush()
        found = ctx.search.find(ctx.tx.conn, resource_type="ServiceRequest", params=[("subject", subject)], limit=1)
        return ctx.tx.current("ServiceRequest", found[0].res_id) if found else None

    def after(self, ctx: Context, event: WriteEvent) -> None:
        return None


def test_hook_writes_commit_with_the_write(client: TestClient, ctx: Context) -> None:
    ctx.hooks.register("ServiceRequest", TaskPerRequest())
    pid = post(client, "Patient", patient()).json()["id"]
    created = post(client, "ServiceRequest", _request(f"Patient/{pid}"))
    assert created.status_code == 201
    tasks = client.get("/fhir/Task", params={"focus": f"ServiceRequest/{created.json()['id']}"}).json()
    assert len(tasks["entry"]) == 1


def test_hook_refusal_rolls_back_everything(client: TestClient, ctx: Context) -> None:
    ctx.hooks.register("ServiceRequest", TaskPerRequest())
    pid = post(client, "Patient", patient()).json()["id"]
    refused = post(client, "ServiceRequest", _request(f"Patient/{pid}", note="refuse"))
    assert refused.status_code == 422
    assert client.get("/fhir/ServiceRequest?_summary=count").json()["total"] == 0
    assert client.get("/fhir/Task?_summary=count").json()["total"] == 0  # the hook's own write is gone too


def test_hook_answers_create_with_existing(client: TestClient, ctx: Context) -> None:
    ctx.hooks.register("ServiceRequest", AnswerWithExisting())
    pid = post(client, "Patient", patient()).json()["id"]
    first = post(client, "ServiceRequest", _request(f"Patient/{pid}"))
    second = post(client, "ServiceRequest", _request(f"Patient/{pid}"))
    assert (first.status_code, second.status_code) == (201, 200)
    assert second.json()["id"] == first.json()["id"]
