"""Facts about the machine and software a run measured, stored next to its figures."""

from __future__ import annotations

import os
import platform
import shutil
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def _command(*args: str) -> str:
    try:
        done = subprocess.run(args, capture_output=True, text=True, check=False, timeout=10, cwd=ROOT)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (done.stdout or done.stderr).strip().splitlines()[0] if (done.stdout or done.stderr).strip() else ""


def wrk_version() -> str:
    """``wrk 4.1.0 ...`` or "" when wrk is not installed."""
    wrk = shutil.which("wrk")
    return _command(wrk, "-v") if wrk else ""


def machine_info() -> dict[str, Any]:
    """CPU count and model, memory, OS, Python, SQLite, key packages, load average, git revision."""
    dirty = _command("git", "status", "--porcelain", "--", "gateway")
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gib": _memory_gib(),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "sqlite": sqlite3.sqlite_version,
        "packages": {name: version(name) for name in ("uvicorn", "fastapi", "sqlalchemy", "fhir.resources", "orjson")},
        "load_average_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "git_revision": _command("git", "rev-parse", "--short", "HEAD") + (" (gateway/ modified)" if dirty else ""),
        "wrk": wrk_version(),
    }


def summary_line(info: dict[str, Any]) -> str:
    """One line for the top of the table."""
    load = info.get("load_average_at_start")
    load_text = f", load avg {load[0]:.2f}" if load else ""
    return (
        f"{info['date']}  {info['cpu_count']} CPUs ({info['cpu_model']}), {info['memory_gib']} GiB, "
        f"Python {info['python']}, SQLite {info['sqlite']}, gateway {info['git_revision']}{load_text}"
    )
