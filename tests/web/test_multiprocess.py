"""Several gateway processes on one database behave as one server: conditional create stays unique,
If-Match prevents lost updates, and a paging link works whichever process serves it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.conftest import FHIR_JSON, patient
from tests.support.server import gateway_processes

PROCESSES = 3


@pytest.fixture(scope="module")
def servers(module_database_url: str) -> Iterator[list[str]]:
    with gateway_processes(module_database_url, PROCESSES) as bases:
        yield bases


def _statuses(send: Callable[[int], httpx.Response], *, requests: int, workers: int) -> list[int]:
    """The status codes of ``send(0)`` ... ``send(requests - 1)``, ``workers`` of them at a time."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return [response.status_code for response in pool.map(send, range(requests))]


def test_conditional_create_across_processes_makes_one(servers: list[str]) -> None:
    body = patient(cin=None, identifier=[{"system": "urn:race", "value": "MP-1"}])

    def fire(i: int) -> httpx.Response:
        return httpx.post(
            f"{servers[i % PROCESSES]}/fhir/Patient",
            json=body,
            headers={"Content-Type": FHIR_JSON, "If-None-Exist": "identifier=urn:race|MP-1"},
            timeout=30,
        )

    statuses = _statuses(fire, requests=24, workers=12)
    assert statuses.count(201) == 1 and statuses.count(200) == 23, statuses
    found = httpx.get(f"{servers[0]}/fhir/Patient", params={"identifier": "urn:race|MP-1", "_total": "accurate"}).json()
    assert found["total"] == 1


def test_if_match_prevents_lost_updates_across_processes(servers: list[str]) -> None:
    created = httpx.post(f"{servers[0]}/fhir/Patient", json=patient(), headers={"Content-Type": FHIR_JSON}).json()
    pid = created["id"]

    def update(i: int) -> httpx.Response:
        return httpx.put(
            f"{servers[i % PROCESSES]}/fhir/Patient/{pid}",
            json={**patient(family=f"Writer{i}"), "id": pid},
            headers={"Content-Type": FHIR_JSON, "If-Match": 'W/"1"'},
            timeout=30,
        )

    statuses = _statuses(update, requests=9, workers=9)
    assert statuses.count(200) == 1 and statuses.count(412) == 8, statuses
    final = httpx.get(f"{servers[1]}/fhir/Patient/{pid}").json()
    assert final["meta"]["versionId"] == "2"


def test_paging_links_work_on_any_process(servers: list[str]) -> None:
    for i in range(7):
        httpx.post(
            f"{servers[0]}/fhir/Patient",
            json=patient(family="Pager", cin=f"PG{i}"),
            headers={"Content-Type": FHIR_JSON},
        )
    page = httpx.get(
        f"{servers[0]}/fhir/Patient", params={"family": "Pager", "_count": 2, "_sort": "identifier"}
    ).json()
    seen: list[str] = []
    hop = 0
    while True:
        seen += [e["resource"]["identifier"][0]["value"] for e in page["entry"]]
        links = {link["relation"]: link["url"] for link in page["link"]}
        if "next" not in links:
            break
        hop += 1
        next_url = links["next"].replace(servers[0], servers[hop % PROCESSES])  # another process serves it
        page = httpx.get(next_url).json()
    assert seen == [f"PG{i}" for i in range(7)]
