"""The R4B model pass of large transactions in worker processes (gateway/fhir/model_pool.py): the same
verdicts as in the request thread, the same answers to the client, and nothing committed when an entry
is rejected."""

from __future__ import annotations

import copy
import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gateway.errors import Unprocessable
from gateway.fhir import model_pool
from gateway.fhir.bundles import ModelChecks, _core_request, _parse_entry
from gateway.fhir.context import Context
from gateway.fhir.request import FhirRequest
from gateway.fhir.validation import model_issues
from gateway.settings import Settings
from gateway.web.app import create_app
from tests.conftest import FHIR_JSON, patient

WORKERS = 2
COUNT = model_pool.MIN_RESOURCES + 8


@pytest.fixture(scope="module", autouse=True)
def warm_pool() -> None:
    assert model_pool.pool().warm(WORKERS, timeout_s=120), "the model check workers did not start"


def _model_rejects() -> list[dict[str, Any]]:
    """Resources the R4B model rejects (the walk rejects them too)."""
    return [
        {"resourceType": "Patient", "gender": 5},
        {"resourceType": "Patient", "birthDate": "not a date"},
        {"resourceType": "Patient", "name": [{"given": "Jane"}]},
        {"resourceType": "Coverage", "status": "active"},
        {"resourceType": "ServiceRequest", "status": "active", "intent": "order", "subject": {"reference": 7}},
    ]


def test_pool_verdicts_equal_the_request_thread() -> None:
    resources = [patient(cin=f"91{n:06d}A") for n in range(COUNT)]
    for n, bad in enumerate(_model_rejects()):
        resources[3 + 7 * n] = bad
    pairs = [(str(r["resourceType"]), r) for r in resources]
    pending = model_pool.pool().submit(pairs, workers=WORKERS)
    assert pending is not None
    expected = []
    for position, resource in enumerate(resources):
        issues = model_issues(copy.deepcopy(resource), str(resource["resourceType"]))
        if issues is None or issues:
            expected.append((position, issues))
    assert len(expected) == len(_model_rejects())
    assert list(pending.rejected()) == expected


def test_small_sets_stay_in_the_request_thread() -> None:
    few = [("Patient", patient())] * (model_pool.MIN_RESOURCES - 1)
    assert model_pool.pool().submit(few, workers=WORKERS) is None
    assert model_pool.pool().submit([("Patient", patient())] * COUNT, workers=0) is None


def _transaction(resources: list[dict[str, Any]]) -> dict[str, Any]:
    entries = [
        {
            "fullUrl": f"urn:uuid:00000000-0000-4000-8000-{n:012d}",
            "resource": r,
            "request": {"method": "POST", "url": r["resourceType"]},
        }
        for n, r in enumerate(resources)
    ]
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


@pytest.fixture(params=[WORKERS, 0], ids=["pool", "inline"])
def client_with_workers(request: pytest.FixtureRequest, database_url: str) -> Iterator[TestClient]:
    settings = Settings(
        database_url=database_url, sqlite_synchronous="NORMAL", auth_enabled=False, validation_workers=request.param
    )
    with TestClient(create_app(settings), base_url="http://testserver") as client:
        client.headers.update({"Accept": FHIR_JSON, "Content-Type": FHIR_JSON})
        yield client


def test_large_transaction_answers_as_without_the_pool(client_with_workers: TestClient) -> None:
    client = client_with_workers
    good = [patient(cin=f"92{n:06d}A", family=f"Pool{n}") for n in range(COUNT)]
    sent_before = model_pool.pool().submitted
    response = client.post("/fhir", json=_transaction(good))
    assert response.status_code == 200, response.text
    pooled = client.app.state.ctx.settings.validation_workers != 0  # type: ignore[attr-defined]
    assert model_pool.pool().submitted - sent_before == (COUNT if pooled else 0), "the pool judged the entries"
    assert [e["response"]["status"] for e in response.json()["entry"]] == ["201 Created"] * COUNT

    bad = [patient(cin=f"93{n:06d}A", family="Rejected") for n in range(COUNT)]
    bad[17]["birthDate"] = "1990-02-30"
    response = client.post("/fhir", json=_transaction(bad))
    assert response.status_code == 422, response.text
    issue = response.json()["issue"][0]
    assert issue["expression"] == ["Bundle.entry[17].resource.Patient.birthDate"]
    found = client.get("/fhir/Patient", params={"family": "Rejected", "_summary": "count"}).json()
    assert found["total"] == 0, "a rejected transaction must commit nothing"


def _checks_for(ctx: Context, resources: list[dict[str, Any]]) -> tuple[ModelChecks, dict[int, FhirRequest]]:
    outer = FhirRequest(method="POST", path="")
    entries = [_parse_entry(n, e, outer) for n, e in enumerate(_transaction(resources)["entry"])]
    ctx.settings = Settings(database_url=ctx.settings.database_url, validation_workers=WORKERS)
    checks = ModelChecks.start(ctx, entries)
    assert checks is not None
    requests = {entry.index: _core_request(entry, outer) for entry in entries}
    checks.mark(requests)
    return checks, requests


def test_a_rejected_entry_is_located_and_a_matched_conditional_create_is_not_judged(ctx: Context) -> None:
    resources = [patient(cin=f"94{n:06d}A") for n in range(COUNT)]
    resources[5] = {"resourceType": "Patient", "gender": 5}
    checks, requests = _checks_for(ctx, resources)
    assert all(r.model_checked for r in requests.values())
    with pytest.raises(Unprocessable) as raised:
        checks.raise_first_error(requests)
    assert raised.value.issues[0].expression == ("Bundle.entry[5].resource.Patient.gender",)

    # The same entry answered by an existing resource (If-None-Exist matched) writes nothing: not judged.
    requests[5].method, requests[5].path, requests[5].resource = "GET", "Patient/existing", None
    checks.raise_first_error(requests)


def test_a_killed_worker_costs_nothing_but_time() -> None:
    pool = model_pool.pool()
    assert pool.warm(WORKERS, timeout_s=120)
    executor = pool._executor
    assert executor is not None
    resources = [("Patient", patient(cin=f"95{n:06d}A")) for n in range(COUNT)]
    resources[9] = ("Patient", {"resourceType": "Patient", "gender": 5})
    for pid in list(executor._processes):  # the workers die before they answer
        os.kill(pid, signal.SIGKILL)
    pending = pool.submit(resources, workers=WORKERS)
    if pending is not None:  # the executor noticed the deaths only after taking the chunks
        assert [position for position, _ in pending.rejected()] == [9]
    assert pool.warm(WORKERS, timeout_s=120), "a new pool starts after the old one broke"
    pending = pool.submit(resources, workers=WORKERS)
    assert pending is not None
    assert [position for position, _ in pending.rejected()] == [9]
