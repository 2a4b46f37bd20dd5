"""The gateway as a real process: ``calaim-gateway serve`` under uvicorn, spoken to over TCP."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import FHIR_JSON, patient


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def server(database_url: str) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "CALAIM_LOG_LEVEL": "warning"}
    cli = Path(sys.executable).parent / "calaim-gateway"
    process = subprocess.Popen(
        [str(cli), "serve", "--port", str(port), "--database-url", database_url],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.1)
    else:  # pragma: no cover - diagnostic path
        process.kill()
        raise AssertionError(process.stdout.read().decode() if process.stdout else "server did not start")
    yield base
    process.terminate()
    process.wait(timeout=10)


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
