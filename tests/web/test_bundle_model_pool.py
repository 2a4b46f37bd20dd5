"""Validation and index rows of large transactions in worker processes (gateway/fhir/model_pool.py): the
same judgements as in the request thread, the same answers to the client, the same stored index rows, and
nothing committed when an entry is rejected."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from gateway import jsonutil
from gateway.fhir import model_pool
from gateway.fhir.bundles import METHOD_ORDER, EntryJudgements, _core_request, _parse_entry
from gateway.fhir.context import Context
from gateway.fhir.core import dispatch
from gateway.fhir.request import FhirRequest, FhirResponse
from gateway.fhir.validation import validate_resource
from gateway.search.extract import extract_values
from gateway.search.sources import stored_values
from gateway.settings import Settings
from gateway.store.schema import INDEX_TABLES
from gateway.web.app import create_app
from tests.conftest import FHIR_JSON, patient

WORKERS = 2
COUNT = model_pool.MIN_RESOURCES + 8


@pytest.fixture(autouse=True)
def warm_pool() -> None:
    """Workers ready for each test (a served app stops the process's pool when it shuts down)."""
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


def _sent(resources: list[dict[str, Any]]) -> list[tuple[str, bytes]]:
    return [(str(r["resourceType"]), jsonutil.dumps(r)) for r in resources]


def test_pool_judgements_equal_the_request_thread() -> None:
    resources = [patient(cin=f"91{n:06d}A") for n in range(COUNT)]
    for n, bad in enumerate(_model_rejects()):
        resources[3 + 7 * n] = bad
    pending = model_pool.pool().submit(_sent(resources), workers=WORKERS)
    assert pending is not None and len(pending) == COUNT
    for position, resource in enumerate(resources):
        judged = pending.get(position)
        assert judged.issues == validate_resource(resource, resource_type=str(resource["resourceType"]))
        if judged.errors:
            assert judged.rows is None
        else:
            assert judged.rows is not None  # JSON arrays from a worker, tuples from the thread (chunks it took)
            assert {kind: [list(row) for row in rows] for kind, rows in judged.rows.items()} == {
                kind: [list(row) for row in rows] for kind, rows in extract_values(resource).items() if rows
            }
    assert sum(1 for p in range(COUNT) if pending.get(p).errors) == len(_model_rejects())


def test_rows_are_used_only_for_the_content_judged() -> None:
    resources = [patient(cin=f"96{n:06d}A") for n in range(COUNT)]
    pending = model_pool.pool().submit(_sent(resources), workers=WORKERS)
    assert pending is not None
    judged = pending.get(0)
    assert judged.rows_for(resources[0]) == judged.rows
    changed = {**resources[0], "gender": "other"}  # what a write hook could have done before the insert
    assert judged.rows_for(changed) is None


def test_chunks_grow_from_a_small_first_one() -> None:
    starts = model_pool.chunk_bounds(1000, 2)
    assert starts[:4] == [0, 8, 24, 56]
    sizes = [b - a for a, b in zip(starts, [*starts[1:], 1000], strict=True)]
    assert max(sizes) == 125 and sum(sizes) == 1000


def test_small_sets_stay_in_the_request_thread() -> None:
    few = _sent([patient()] * (model_pool.MIN_RESOURCES - 1))
    assert model_pool.pool().submit(few, workers=WORKERS) is None
    assert model_pool.pool().submit(_sent([patient()] * COUNT), workers=0) is None


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
        if request.param:  # the app's lifespan starts the pool in the background: wait for it
            assert model_pool.pool().warm(request.param, timeout_s=120)
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


def test_stored_index_rows_are_those_of_the_stored_bodies(client_with_workers: TestClient) -> None:
    client = client_with_workers
    resources = [patient(cin=f"97{n:06d}A", family=f"Rows{n}", gender="female") for n in range(COUNT)]
    response = client.post("/fhir", json=_transaction(resources))
    assert response.status_code == 200, response.text
    engine = client.app.state.ctx.repo.engine  # type: ignore[attr-defined]
    with engine.connect() as conn:
        bodies = conn.execute(text("SELECT rid, body FROM resource WHERE res_type = 'Patient'")).all()
        for rid, body in bodies:
            # What the store keeps of the full extraction (each row once: gateway/search/sources.py).
            expected = stored_values("Patient", extract_values(jsonutil.loads_any(bytes(body), max_depth=64)))
            for kind, table in INDEX_TABLES.items():
                columns = [c.name for c in table.columns if c.name not in ("rid", "res_type") and c.computed is None]
                stored = conn.execute(text(f"SELECT {', '.join(columns)} FROM {table.name} WHERE rid = :r"), {"r": rid})
                assert sorted(map(tuple, stored), key=repr) == sorted(map(tuple, expected.get(kind, [])), key=repr)


def test_a_matched_conditional_create_is_not_judged(ctx: Context) -> None:
    resources = [patient(cin=f"94{n:06d}A") for n in range(COUNT)]
    outer = FhirRequest(method="POST", path="")
    entries = [_parse_entry(n, e, outer) for n, e in enumerate(_transaction(resources)["entry"])]
    requests = {entry.index: _core_request(entry, outer) for entry in entries}
    requests[5].method, requests[5].path, requests[5].resource = "GET", "Patient/existing", None
    ctx.settings = Settings(database_url=ctx.settings.database_url, validation_workers=WORKERS)
    order = sorted(entries, key=lambda e: (METHOD_ORDER[e.method], e.index))
    judged = EntryJudgements.start(ctx, order, requests)
    assert judged is not None
    assert 5 not in judged.positions and len(judged.positions) == COUNT - 1
    judged.attach(requests[6], 6, idle=lambda: None)
    assert requests[6].judgement is not None and not requests[6].judgement.errors
    assert judged.pending.ready(judged.positions[6])


def test_the_wait_for_a_judgement_is_used_for_idle_work() -> None:
    """An entry whose judgement is not back runs ``idle`` first (the transaction writes its buffered rows)
    and then waits; one whose judgement is there does not."""
    answer: Future[bytes] = Future()
    pending = model_pool.Judgements(["Patient", "Patient"], [b"{}", b"{}"], [0], send=lambda _: answer, window=1)
    judged = EntryJudgements(pending, {0: 0, 1: 1})
    calls: list[str] = []

    def idle() -> None:
        calls.append("idle")
        answer.set_result(orjson.dumps([[[], None], [[], None]]))

    first, second = FhirRequest(method="POST", path="Patient"), FhirRequest(method="POST", path="Patient")
    judged.attach(first, 0, idle=idle)
    judged.attach(second, 1, idle=idle)
    assert calls == ["idle"]
    assert first.judgement is not None and second.judgement is not None


def _same_as_the_thread(judged: model_pool.Judgement, resource: dict[str, Any]) -> None:
    assert judged.issues == validate_resource(resource, resource_type=str(resource["resourceType"]))
    rows = judged.rows or {}
    assert {kind: [list(row) for row in found] for kind, found in rows.items()} == (
        {}
        if judged.errors
        else {kind: [list(row) for row in found] for kind, found in extract_values(resource).items() if found}
    )


def test_a_thread_that_would_wait_judges_the_last_resources_no_worker_was_given() -> None:
    """Work stealing from the back: while chunk 0 is out, the thread judges the last resources itself,
    one at a time, until chunk 0 is back; the rest go to the workers without them; every resource is
    judged once, with the same verdict and rows as in the thread."""
    resources = [patient(cin=f"94{n:06d}A") for n in range(9)]
    resources[7] = {"resourceType": "Patient", "gender": 5}
    sent: list[bytes] = []
    first: Future[bytes] = Future()

    def send(payload: bytes) -> Future[bytes]:  # a pool whose first chunk is slow and the others instant
        sent.append(payload)
        if len(sent) == 1:
            return first
        answered: Future[bytes] = Future()
        answered.set_result(model_pool._judge_chunk(payload))
        return answered

    sent_types = _sent(resources)
    pending = model_pool.Judgements(
        [t for t, _ in sent_types], [b for _, b in sent_types], [0, 3, 6], send=send, window=1
    )
    assert len(sent) == 1, "one chunk ahead: the others wait in the thread"

    def worker() -> None:
        deadline = time.monotonic() + 30
        while pending.stolen < 2 and time.monotonic() < deadline:
            time.sleep(0.001)
        first.set_result(model_pool._judge_chunk(sent[0]))

    answering = threading.Thread(target=worker)
    answering.start()
    judged = [pending.get(position) for position in range(9)]
    answering.join(30)
    assert pending.stolen >= 2
    assert sum(len(orjson.loads(payload)) for payload in sent) + pending.stolen == 9, "each judged once"
    for judgement, resource in zip(judged, resources, strict=True):
        _same_as_the_thread(judgement, resource)
    assert [bool(j.errors) for j in judged] == [False] * 7 + [True, False]


def test_chunks_the_pool_refuses_are_judged_by_the_thread() -> None:
    resources = [patient(cin=f"93{n:06d}A") for n in range(6)]

    def send(payload: bytes) -> Future[bytes]:
        raise RuntimeError("cannot schedule new futures after shutdown")

    sent_types = _sent(resources)
    pending = model_pool.Judgements([t for t, _ in sent_types], [b for _, b in sent_types], [0, 3], send=send, window=2)
    assert pending.handed_over == 0
    for position, resource in enumerate(resources):
        _same_as_the_thread(pending.get(position), resource)


def test_a_killed_worker_costs_nothing_but_time() -> None:
    pool = model_pool.pool()
    assert pool.warm(WORKERS, timeout_s=120)
    executor = pool._executor
    assert executor is not None
    resources = _sent([patient(cin=f"95{n:06d}A") for n in range(COUNT)])
    resources[9] = ("Patient", jsonutil.dumps({"resourceType": "Patient", "gender": 5}))
    for pid in list(executor._processes):  # the workers die before they answer
        os.kill(pid, signal.SIGKILL)
    pending = pool.submit(resources, workers=WORKERS)
    if pending is not None:  # the executor noticed the deaths only after taking the chunks
        assert [p for p in range(COUNT) if pending.get(p).errors] == [9]
    assert pool.warm(WORKERS, timeout_s=120), "a new pool starts after the old one broke"
    pending = pool.submit(resources, workers=WORKERS)
    assert pending is not None
    assert [p for p in range(COUNT) if pending.get(p).errors] == [9]


def test_a_pool_whose_workers_died_unseen_is_restarted_when_warmed() -> None:
    """Chunks judged in the waiting thread never show a caller that the workers died: ``warm`` (the
    app's start-up, the tests) finds the executor refusing work and starts a new one."""
    pool = model_pool.pool()
    assert pool.warm(WORKERS, timeout_s=120)
    executor = pool._executor
    assert executor is not None
    for pid in list(executor._processes):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            executor.submit(os.getpid)
        except BrokenProcessPool:
            break
        time.sleep(0.01)
    assert pool.warm(WORKERS, timeout_s=120)
    assert pool._executor is not executor
    assert pool.submit(_sent([patient(cin=f"92{n:06d}A") for n in range(COUNT)]), workers=WORKERS) is not None


def test_judgements_start_while_another_writer_holds_the_store(ctx: Context, database_url: str) -> None:
    """A transaction without conditional parts sends its entries to the workers before it waits for the
    store's writer (SQLite has one): its judgements are computed while another transaction writes."""
    ctx.settings = Settings(database_url=database_url, validation_workers=WORKERS)
    body = jsonutil.dumps(_transaction([patient(cin=f"98{n:06d}A") for n in range(COUNT)]))
    request = FhirRequest("POST", "", headers={"content-type": FHIR_JSON, "accept": FHIR_JSON}, body=body)
    sent_before = model_pool.pool().submitted
    answers: list[FhirResponse] = []
    poster = threading.Thread(target=lambda: answers.append(dispatch(ctx, request)))
    with ctx.repo.write():
        poster.start()
        deadline = time.monotonic() + 60
        while model_pool.pool().submitted - sent_before < COUNT and time.monotonic() < deadline:
            time.sleep(0.005)
        assert model_pool.pool().submitted - sent_before == COUNT, "judged while the store was held"
        if ctx.repo.sqlite:
            assert not answers, "the transaction waits for the writer"
    poster.join(60)
    assert answers and answers[0].status == 200, answers


_HOLDS_A_POOL = """
import sys, time
from gateway.fhir import model_pool
pool = model_pool.pool()
assert pool.warm(2, timeout_s=120)
print(" ".join(str(pid) for pid in pool._executor._processes), flush=True)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie is gone too (its parent has not reaped it yet)
        return stat.read().split(") ", 1)[1][0] != "Z"


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc")
def test_workers_end_when_their_parent_is_killed() -> None:
    """A parent killed by a signal runs no exit hooks: its workers must notice and end by themselves."""
    holder = subprocess.Popen([sys.executable, "-c", _HOLDS_A_POOL], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        workers = [int(pid) for pid in holder.stdout.readline().split()]
        assert len(workers) == 2 and all(_alive(pid) for pid in workers)
    finally:
        holder.kill()
        holder.wait(30)
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in workers), "orphaned model-check workers"
