"""Gateway server processes for tests: ``calaim-gateway serve`` started as a real OS process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def gateway_processes(
    database_url: str, count: int = 1, *, workers: int = 1, env: dict[str, str] | None = None
) -> Iterator[list[str]]:
    """Run ``count`` gateway processes on one database (started in parallel) until the block ends;
    yields their base URLs (``http://127.0.0.1:P``)."""
    cli = Path(sys.executable).parent / "calaim-gateway"
    environment = {
        **os.environ,
        "CALAIM_LOG_LEVEL": "warning",
        "CALAIM_SQLITE_SYNCHRONOUS": "NORMAL",
        "CALAIM_AUTH_ENABLED": "false",  # tests of access control pass CALAIM_AUTH_ENABLED=true
        "CALAIM_VALIDATION_WORKERS": "0",  # no model-check workers per server process (tested in-process)
        **(env or {}),
    }
    started: list[tuple[subprocess.Popen[bytes], str]] = []
    try:
        for _ in range(count):
            port = free_port()
            command = [str(cli), "serve", "--port", str(port), "--database-url", database_url]
            command += ["--workers", str(workers)]
            process = subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            started.append((process, f"http://127.0.0.1:{port}"))
        for process, base in started:
            _wait_ready(process, base)
        yield [base for _, base in started]
    finally:
        for process, _ in started:
            process.terminate()
        for process, _ in started:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextmanager
def gateway_process(database_url: str, *, workers: int = 1, env: dict[str, str] | None = None) -> Iterator[str]:
    """One gateway process; yields its base URL."""
    with gateway_processes(database_url, 1, workers=workers, env=env) as bases:
        yield bases[0]


def _wait_ready(process: subprocess.Popen[bytes], base: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            output = process.stdout.read().decode() if process.stdout else ""
            raise AssertionError(f"gateway did not start: {output[-2000:]}")
        time.sleep(0.1)
