"""The gateway as a real process: ``calaim-gateway serve`` under uvicorn, spoken to over TCP."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import FHIR_JSON, patient
from tests.support.server import free_port, gateway_process


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


def _children(pid: int) -> set[int]:
    """The child processes of ``pid`` (Linux /proc)."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found.update(int(c) for c in (task / "children").read_text().split())
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads child processes from Linux /proc")
def test_a_stopped_server_leaves_no_validation_worker_behind(tmp_path: Path) -> None:
    port = free_port()
    cli = Path(sys.executable).parent / "calaim-gateway"
    env = {
        **os.environ,
        "CALAIM_AUTH_ENABLED": "false",
        "CALAIM_VALIDATION_WORKERS": "1",
        "CALAIM_LOG_LEVEL": "warning",
    }
    command = [str(cli), "serve", "--port", str(port), "--database-url", f"sqlite:///{tmp_path / 'g.db'}"]
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not _children(server.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        workers = _children(server.pid)
        assert workers, "the model-check worker started beside the server"
        server.terminate()  # SIGTERM: uvicorn shuts down, then ends the process with the signal again
        server.wait(timeout=30)
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(pid) for pid in workers), "a validation worker outlived the server"
    finally:
        if server.poll() is None:
            server.kill()
