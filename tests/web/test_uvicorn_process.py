"""The gateway as a real process: ``calaim-gateway serve`` under uvicorn, spoken to over TCP."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import FHIR_JSON, patient
from tests.support.server import gateway_process


@pytest.fixture
def server(database_url: str) -> Iterator[str]:
    with gateway_process(database_url) as base:
        yield base


def test_serve_over_tcp(server: str) -> None:
    with httpx.Client(base_url=server, headers={"Accept": FHIR_JSON}) as http:
        assert http.get("/fhir/metadata").json()["fhirVersion"] == "4.0.1"
        created = http.post("/fhir/Patient", json=patient(cin="TCP1"), headers={"Content-Type": FHIR_JSON})
        assert created.status_code == 201
        location = created.headers["Location"]
        assert location.startswith(f"{server}/fhir/Patient/")
        read = http.get(location)
        assert read.status_code == 200 and read.json()["identifier"][0]["value"] == "TCP1"
        found = http.get("/fhir/Patient", params={"identifier": "TCP1"}).json()
        assert [e["resource"]["id"] for e in found["entry"]] == [created.json()["id"]]
        assert http.get("/docs").status_code == 200
