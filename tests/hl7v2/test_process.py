"""The MLLP listener as a real gateway process: ``calaim-gateway mllp`` killed with SIGKILL in the middle of
a stream loses nothing and applies nothing twice (the sender resends what was not acknowledged), and
``calaim-gateway serve --mllp-port`` with several workers listens in exactly one of them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import func, select

from adapters.hl7v2.client import MllpClient, MllpError
from adapters.hl7v2.parsepool import default_workers
from gateway.fhir.core import build_context
from gateway.settings import Settings
from gateway.store.schema import hl7v2_message
from tests.hl7v2.support import count, msa, ref_i12
from tests.support.server import free_port, gateway_process

pytestmark = pytest.mark.slow
CLI = str(Path(sys.executable).parent / "calaim-gateway")


@contextmanager
def mllp_process(database_url: str, port: int) -> Iterator[subprocess.Popen[bytes]]:
    env = {**os.environ, "CALAIM_LOG_LEVEL": "warning", "CALAIM_SQLITE_SYNCHRONOUS": "FULL"}
    command = [CLI, "mllp", "--port", str(port), "--database-url", database_url]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_listening(port, process)
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_listening(port: int, process: subprocess.Popen[bytes] | None = None, timeout: float = 60) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            output = process.stdout.read().decode() if process.stdout else ""
            raise AssertionError(f"mllp process exited: {output[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("the MLLP listener did not come up")


def test_kill_9_during_a_stream_loses_nothing_and_duplicates_nothing(database_url: str) -> None:
    port = free_port()
    total = 40
    messages = [ref_i12(f"K{i}", cin=f"97{i:06d}A", referral_id=f"CR-K{i}").encode() for i in range(total)]
    acked: set[int] = set()
    with mllp_process(database_url, port) as first:
        client = MllpClient("127.0.0.1", port, timeout=20)
        for i, message in enumerate(messages):
            if i == total // 2:
                workers = children(first.pid)  # the parse workers (adapters/hl7v2/parsepool.py)
                # the next message goes out, and the gateway dies before (or while) answering it
                client.send_raw(b"\x0b" + message + b"\x1c\x0d")
                first.send_signal(signal.SIGKILL)
                first.wait(10)
                break
            code, control_id = msa(client.send(message))
            assert (code, control_id) == ("AA", f"K{i}")
            acked.add(i)
        client.close()
    assert len(acked) == total // 2
    assert len(workers) >= (1 if default_workers() else 0)
    assert_exit(workers)  # no parse worker outlives its listener, even killed with -9
    with mllp_process(database_url, port), MllpClient("127.0.0.1", port, timeout=20) as client:
        for i, message in enumerate(messages):
            if i not in acked:  # the sender resends every message it has no ACK for
                assert msa(client.send(message)) == ("AA", f"K{i}")
        assert msa(client.send(messages[0])) == ("AA", "K0")  # and a duplicate changes nothing
    ctx = build_context(Settings(database_url=database_url))
    try:
        assert count(ctx, "ServiceRequest") == total
        assert count(ctx, "Task") == total
        assert count(ctx, "Patient") == total
        with ctx.repo.connect() as conn:
            rows = conn.execute(select(func.count()).select_from(hl7v2_message)).scalar_one()
        assert rows == total
    finally:
        ctx.repo.engine.dispose()


def children(pid: int) -> list[int]:
    """The live child processes of ``pid`` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def assert_exit(pids: list[int], timeout: float = 20) -> None:
    def alive(pid: int) -> bool:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return False
        return state != "Z"

    deadline = time.monotonic() + timeout
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in pids if alive(pid)], "parse workers outlived their listener"


def test_serve_with_workers_listens_in_one_process(database_url: str) -> None:
    if database_url.startswith("sqlite"):
        pytest.skip("several workers are for PostgreSQL (docs/scaling.md)")
    port = free_port()
    env = {"CALAIM_MLLP_PORT": str(port)}
    with gateway_process(database_url, workers=2, env=env):
        wait_listening(port)
        with MllpClient("127.0.0.1", port, timeout=20) as client:
            for i in range(5):
                assert msa(client.send(ref_i12(f"W{i}", cin=f"96{i:06d}A").encode()))[0] == "AA"
    ctx = build_context(Settings(database_url=database_url))
    try:
        assert count(ctx, "ServiceRequest") == 5
    finally:
        ctx.repo.engine.dispose()


def test_mllp_client_error_when_nobody_listens() -> None:
    with pytest.raises(MllpError):
        MllpClient("127.0.0.1", free_port(), timeout=1).send(b"MSH|^~\\&|x")
