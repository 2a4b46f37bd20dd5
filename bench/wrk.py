"""``wrk`` driver: the calls go to a file, a small Lua script pre-formats them per thread and cycles
through them (each thread from its own offset), and ``done`` prints the figures as one JSON line."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

from bench.loadgen import LoadResult, LoadSpec

LUA = r"""
local calls_file = "@CALLS@"
local headers = @HEADERS@
local requests = {}
local index = 0
local thread_count = 0
local thread_id = 0

function setup(thread)
  thread:set("thread_id", thread_count)
  thread_count = thread_count + 1
end

function init(args)
  local count = 0
  for line in io.lines(calls_file) do
    local method, path, body = line:match("^(%u+)\t([^\t]*)\t(.*)$")
    local h = {}
    for k, v in pairs(headers) do h[k] = v end
    if body == "" then body = nil end
    requests[#requests + 1] = wrk.format(method, path, h, body)
  end
  index = (thread_id * 7919) % #requests
end

function request()
  index = index % #requests + 1
  return requests[index]
end

function done(summary, latency, _requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests": %d, "duration_us": %d, "errors": %d, ' ..
    '"p50_us": %d, "p95_us": %d, "p99_us": %d, "mean_us": %f}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.mean))
end
"""


def _lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_script(spec: LoadSpec, folder: Path) -> Path:
    """Write the calls file and the Lua script for ``spec`` into ``folder``; return the script."""
    calls = folder / "calls.tsv"
    with calls.open("wb") as out:
        for call in spec.calls:
            if b"\n" in call.body or b"\t" in call.path.encode():
                raise ValueError("wrk calls must be single-line (compact JSON bodies)")
            out.write(call.method.encode() + b"\t" + call.path.encode() + b"\t" + call.body + b"\n")
    table = "{" + ", ".join(f"[{_lua_string(k)}] = {_lua_string(v)}" for k, v in spec.headers.items()) + "}"
    script = folder / "calls.lua"
    script.write_text(LUA.replace("@CALLS@", str(calls)).replace("@HEADERS@", table), encoding="utf-8")
    return script


def run_wrk(spec: LoadSpec) -> LoadResult:
    """Run ``wrk`` for ``spec.seconds`` and read the JSON line its ``done`` hook prints."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise RuntimeError("wrk is not installed")
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as tmp:
        script = write_script(spec, Path(tmp))
        command = [
            wrk,
            f"-t{spec.threads}",
            f"-c{spec.connections}",
            f"-d{max(1, round(spec.seconds))}s",
            "--timeout",
            "30s",
            "-s",
            str(script),
            spec.origin,
        ]
        done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=spec.seconds + 120)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("BENCH_RESULT ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout[-800:]} {done.stderr[-800:]}")
    data = json.loads(line.removeprefix("BENCH_RESULT "))
    return LoadResult(
        tool="wrk",
        requests=int(data["requests"]),
        seconds=data["duration_us"] / 1e6,
        errors=int(data["errors"]),
        p50_ms=data["p50_us"] / 1000,
        p95_ms=data["p95_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        mean_ms=data["mean_us"] / 1000,
    )
