"""Real server processes on free loopback ports: the gateway (``calaim-gateway serve``) and the bare
ASGI app (``uvicorn bench.bare_app:app``), both uvicorn with the same worker count."""

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

BIN = Path(sys.executable).parent
HOST = "127.0.0.1"
START_TIMEOUT = 60.0


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_healthy(process: subprocess.Popen[bytes], origin: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}: {log.read_text(errors='replace')[-2000:]}")
        try:
            if httpx.get(f"{origin}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"server did not become healthy: {log.read_text(errors='replace')[-2000:]}")


@contextmanager
def _serve(command: list[str], env: dict[str, str], origin: str, log: Path) -> Iterator[str]:
    with log.open("ab") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=Path.cwd())
        try:
            wait_healthy(process, origin, log)
            yield origin
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


@contextmanager
def gateway(
    db_path: Path,
    *,
    workers: int,
    synchronous: str,
    log_dir: Path,
    auth: bool = False,
    settings: dict[str, str] | None = None,
) -> Iterator[str]:
    """``calaim-gateway serve`` on ``db_path``; yields its origin ``http://127.0.0.1:PORT``.

    The gateway runs with its defaults except the SQLite synchronous mode under test, ``settings`` (more
    ``CALAIM_*`` variables, by lower-case name) and, unless ``auth``, without token enforcement."""
    port = free_port()
    # The core benchmarks measure the FHIR core; bench/smart_overhead.py measures the cost of tokens.
    env = {**os.environ, "CALAIM_SQLITE_SYNCHRONOUS": synchronous, "CALAIM_AUTH_ENABLED": str(auth).lower()}
    env.update({f"CALAIM_{name.upper()}": value for name, value in (settings or {}).items()})
    command = [
        str(BIN / "calaim-gateway"),
        "serve",
        "--host",
        HOST,
        "--port",
        str(port),
        "--database-url",
        f"sqlite:///{db_path}",
        "--workers",
        str(workers),
    ]
    with _serve(command, env, f"http://{HOST}:{port}", log_dir / f"gateway-{port}.log") as origin:
        yield origin


@contextmanager
def bare(db_path: Path, *, workers: int, log_dir: Path) -> Iterator[str]:
    """The bare ASGI app (``bench.bare_app``) on ``db_path`` under uvicorn; yields its origin."""
    port = free_port()
    env = {**os.environ, "BENCH_BARE_DB": str(db_path)}
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "bench.bare_app:app",
        "--host",
        HOST,
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    with _serve(command, env, f"http://{HOST}:{port}", log_dir / f"bare-{port}.log") as origin:
        yield origin
