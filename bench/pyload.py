"""The fallback load generator: an asyncio HTTP/1.1 keep-alive client on raw sockets (no HTTP library,
so the client takes as little of the shared CPU as Python allows). Each connection cycles through the
calls from its own offset until the duration is over."""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit

from bench.loadgen import Call, LoadResult, LoadSpec


def _request_bytes(call: Call, host: str, headers: dict[str, str]) -> bytes:
    lines = [f"{call.method} {call.path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if call.body or call.method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(call.body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + call.body


async def _read_response(reader: asyncio.StreamReader) -> int:
    """Read one response (Content-Length or chunked body); return its status."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    fields = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
    if "content-length" in fields:
        await reader.readexactly(int(fields["content-length"]))
    elif fields.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    return status


async def _connection(
    spec: LoadSpec, payloads: list[bytes], offset: int, deadline: float, latencies: list[float]
) -> int:
    parts = urlsplit(spec.origin)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    errors = 0
    index = offset
    try:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            writer.write(payloads[index % len(payloads)])
            await writer.drain()
            status = await _read_response(reader)
            latencies.append(time.perf_counter() - started)
            errors += status >= 400
            index += 1
    finally:
        writer.close()
    return errors


async def _run(spec: LoadSpec) -> LoadResult:
    host = urlsplit(spec.origin).netloc
    payloads = [_request_bytes(call, host, spec.headers) for call in spec.calls]
    latencies: list[float] = []
    started = time.perf_counter()
    deadline = started + spec.seconds
    step = max(1, len(payloads) // max(1, spec.connections))
    errors = await asyncio.gather(
        *(_connection(spec, payloads, k * step, deadline, latencies) for k in range(spec.connections))
    )
    elapsed = time.perf_counter() - started
    ordered = sorted(latencies) or [0.0]

    def pct(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    return LoadResult(
        tool="python",
        requests=len(latencies),
        seconds=elapsed,
        errors=sum(errors),
        p50_ms=pct(0.50),
        p95_ms=pct(0.95),
        p99_ms=pct(0.99),
        mean_ms=sum(ordered) / len(ordered) * 1000,
    )


def run_python(spec: LoadSpec) -> LoadResult:
    """Drive ``spec`` with the asyncio client (in this process)."""
    return asyncio.run(_run(spec))
