"""The load generator: ``wrk`` when it is installed (or installable), else a Python asyncio client.

Both take the same input, a list of ``Call`` (method, path, body) cycled by every connection for a
fixed duration, and give the same ``LoadResult``. The result names the tool, because a Python client
shares the 2 cores with the server and measures lower.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import asdict, dataclass
from typing import Any, Literal

Tool = Literal["wrk", "python"]


@dataclass(frozen=True, slots=True)
class Call:
    """One request of the cycled list (path includes the query string)."""

    method: str
    path: str
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class LoadSpec:
    """How to load a server: its origin, the calls, headers, concurrency and duration."""

    origin: str
    """``http://127.0.0.1:PORT``."""
    calls: list[Call]
    headers: dict[str, str]
    connections: int
    threads: int
    seconds: float


@dataclass(frozen=True, slots=True)
class LoadResult:
    """Requests completed, errors (non-2xx/3xx, socket errors) and latency percentiles in ms."""

    tool: str
    requests: int
    seconds: float
    errors: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float

    @property
    def per_second(self) -> float:
        """Completed requests per second."""
        return self.requests / self.seconds if self.seconds else 0.0

    def as_json(self) -> dict[str, Any]:
        """All fields plus the rate, for the results file."""
        return {**asdict(self), "per_second": self.per_second}


def find_wrk(*, install: bool = True) -> str | None:
    """The path of ``wrk``; when missing and running as root, installs the Debian package (refreshing
    the package lists only if the first attempt fails)."""
    path = shutil.which("wrk")
    if path is not None or not install or not shutil.which("apt-get") or os.geteuid() != 0:
        return path
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for refresh in (False, True):
        if refresh:
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, check=False, timeout=300)
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "wrk"], env=env, capture_output=True, check=False, timeout=300
        )
        if (path := shutil.which("wrk")) is not None:
            break
    return path


def choose_tool(preference: str = "auto") -> Tool:
    """``wrk`` unless asked for ``python`` or wrk cannot be had."""
    if preference == "python":
        return "python"
    if find_wrk(install=preference in ("auto", "wrk")) is not None:
        return "wrk"
    if preference == "wrk":
        raise RuntimeError("wrk was asked for but is not installed and could not be installed")
    return "python"


def run_load(spec: LoadSpec, tool: Tool) -> LoadResult:
    """Drive ``spec`` with ``tool``."""
    if tool == "wrk":
        from bench.wrk import run_wrk

        return run_wrk(spec)
    from bench.pyload import run_python

    return run_python(spec)
