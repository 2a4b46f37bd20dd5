"""County HL7 v2 benchmark: sustained REF^I12/s with durable ACKs over 1 and 8 MLLP connections, and the
ACK latency at a paced rate, each next to its limit measured in the same run (docs/performance.md).

- gateway: ``calaim-gateway mllp`` as a real process on a fresh SQLite file (``synchronous=FULL``, the
  default: an AA means the referral, its Task, its events and the log row survive power loss);
- limit 1, parse: hl7apy parsing the same messages in this process, one core, with the call the gateway
  makes (``mappings.hl7v2.message.parse_with_hl7apy``). The gateway parses in worker processes
  (adapters/hl7v2/parsepool.py), so on N free cores its parse capacity is up to N times this;
- limit 2, transport: an MLLP echo server (same framing code, a canned ACK, no parsing, no storage) as
  a process, driven by the same clients.

Run: ``.venv/bin/python -m bench.hl7v2`` (full: 2,000 messages per throughput run, 15 s paced run) or
``--quick``. Targets from issue 7: >= 500 REF^I12/s durable; p99 ACK latency < 50 ms at 200 messages/s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from adapters.hl7v2.client import MllpClient
from adapters.hl7v2.mllp import FrameDecoder, frame

CLI = str(Path(sys.executable).parent / "calaim-gateway")
ECHO_ACK = b"MSH|^~\\&|GW|PLAN|HCA-BHS|OCHCA|20250301||ACK^I12^ACK|E1|P|2.5.1\rMSA|AA|X\r"


def ref_i12(n: int, run: str) -> bytes:
    """A synthetic county referral (distinct member, referral id and control id per ``n``)."""
    segments = [
        f"MSH|^~\\&|HCA-BHS|OCHCA|CALAIM-GATEWAY|CALOPTIMA|20250301101500||REF^I12^REF_I12|{run}-{n}|P|2.5.1"
        "||||||UNICODE UTF-8",
        f"RF1|P^Pending^HL70283|R^Routine^HL70280|ecm^ECM^CALAIMSVC||O^Outpatient^HL70284|CR-{run}-{n}^^OCHCA|20250301"
        "|||3^Serious mental health and SUD needs^CALAIMPOF",
        "AUT||||20250301|20260228|||24",
        "PRD|RP|Clinician^Casey|||||1999999133^NPI",
        f"PID|1||9{n:07d}A^^^MEDI-CAL^MA~M{n}^^^OCHCA^MR||Testmember^Alex^Q||19900401|F|||"
        "1 Main St^^Santa Ana^CA^92701",
        "IN1|1|MC^Medi-Cal|calop|CalOptima Health",
        "DG1|1||F20.9^Schizophrenia, unspecified^I10||20241201|W",
        "NTE|1||Referred after crisis stabilization",
    ]
    return ("\r".join(segments) + "\r").encode()


@dataclass
class Run:
    """One measured load: messages, seconds, ACK latencies (s)."""

    messages: int
    seconds: float
    latencies: list[float]
    errors: int = 0

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000 if ordered else float("nan")


def closed_loop(port: int, messages: list[bytes], connections: int) -> Run:
    """Each connection sends its share one after another (the next after the ACK)."""
    shares = [messages[i::connections] for i in range(connections)]
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()

    def worker(share: list[bytes]) -> None:
        mine: list[float] = []
        with MllpClient("127.0.0.1", port, timeout=120) as client:
            for message in share:
                start = time.perf_counter()
                ack = client.send(message)
                mine.append(time.perf_counter() - start)
                if b"MSA|AA" not in ack:
                    errors[0] += 1
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker, args=(share,)) for share in shares]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return Run(len(messages), time.perf_counter() - start, latencies, errors[0])


def paced(port: int, messages: list[bytes], rate: float, connections: int = 4) -> Run:
    """Messages released on a fixed schedule (``rate``/s across ``connections``); latency from the scheduled
    send time, so queueing behind a slow server counts (no coordinated omission)."""
    shares = [messages[i::connections] for i in range(connections)]
    latencies: list[float] = []
    lock = threading.Lock()
    begin = time.perf_counter() + 0.2

    def worker(index: int, share: list[bytes]) -> None:
        mine: list[float] = []
        with MllpClient("127.0.0.1", port, timeout=120) as client:
            for k, message in enumerate(share):
                due = begin + (k * connections + index) / rate
                delay = due - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                client.send(message)
                mine.append(time.perf_counter() - due)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker, args=(i, share)) for i, share in enumerate(shares)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return Run(len(messages), time.perf_counter() - begin, latencies)


def parse_limit(messages: list[bytes]) -> Run:
    """hl7apy parse of each message, in this process (one core): the call the gateway's step 1 makes
    (``mappings.hl7v2.message.parse_with_hl7apy``), nothing else."""
    from mappings.hl7v2.er7 import read_header, split_segments
    from mappings.hl7v2.message import parse_with_hl7apy

    inputs = [(split_segments(message.decode()), read_header(message)) for message in messages]
    start = time.perf_counter()
    for lines, header in inputs:
        parse_with_hl7apy(lines, header)
    return Run(len(messages), time.perf_counter() - start, [])


def parse_ab(count: int, rounds: int) -> tuple[float, float]:
    """CPU µs per message of ``parse_with_hl7apy`` with hl7apy's own look-ups (before) and with the memoized
    ones (after, ``mappings.hl7v2.hl7apy_cache``), in alternating rounds in this process: the best round
    of each (docs/performance.md "County HL7 v2")."""
    from mappings.hl7v2 import hl7apy_cache
    from mappings.hl7v2.er7 import read_header, split_segments
    from mappings.hl7v2.message import parse_with_hl7apy

    inputs = [(split_segments(m.decode()), read_header(m)) for m in (ref_i12(n, "A") for n in range(count))]

    def one_round() -> float:
        start = time.process_time()
        for lines, header in inputs:
            parse_with_hl7apy(lines, header)
        return (time.process_time() - start) / len(inputs) * 1e6

    before: list[float] = []
    after: list[float] = []
    try:
        for _ in range(rounds):
            hl7apy_cache.uninstall()
            one_round()  # warm-up of this variant
            before.append(one_round())
            hl7apy_cache.install()
            one_round()
            after.append(one_round())
    finally:
        hl7apy_cache.install()
    return min(before), min(after)


def echo_server(port: int) -> None:
    """The transport limit: MLLP framing and a canned ACK per message, nothing else."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        decoder = FrameDecoder(1024 * 1024)
        while data := await reader.read(65536):
            for _ in decoder.feed(data):
                writer.write(frame(ECHO_ACK))
            await writer.drain()
        writer.close()

    async def main() -> None:
        server = await asyncio.start_server(serve, "127.0.0.1", port)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def wait_port(port: int, process: subprocess.Popen[bytes]) -> None:
    import socket

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("server exited: " + (process.stdout.read().decode()[-2000:] if process.stdout else ""))
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("server did not start")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Process:
    """A server process for the duration of a ``with``."""

    def __init__(self, command: list[str], env: dict[str, str], port: int) -> None:
        self.command, self.env, self.port = command, env, port
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Process:
        self.process = subprocess.Popen(self.command, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        wait_port(self.port, self.process)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.process is not None
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()


def run(count: int, paced_seconds: float, rate: float, synchronous: str) -> list[tuple[str, str, str, str]]:
    """Every figure: (name, gateway, limit, ratio)."""
    rows: list[tuple[str, str, str, str]] = []
    env = {**os.environ, "CALAIM_LOG_LEVEL": "warning", "CALAIM_SQLITE_SYNCHRONOUS": synchronous}
    parse = parse_limit([ref_i12(n, "P") for n in range(min(count, 500))])
    echo_port = free_port()
    with (
        tempfile.TemporaryDirectory() as tmp,
        Process([sys.executable, "-m", "bench.hl7v2", "--echo-server", str(echo_port)], env, echo_port),
    ):
        for connections in (1, 8):
            database = f"sqlite:///{Path(tmp) / f'gw-{connections}.db'}"
            port = free_port()
            command = [CLI, "mllp", "--port", str(port), "--database-url", database]
            with Process(command, env, port):
                closed_loop(port, [ref_i12(n, "W") for n in range(20)], connections)  # warm-up
                gateway = closed_loop(port, [ref_i12(n, f"C{connections}") for n in range(count)], connections)
            echo = closed_loop(echo_port, [ref_i12(n, "E") for n in range(count)], connections)
            rows.append(
                (
                    f"REF^I12/s durable, {connections} connection(s), sync={synchronous} "
                    f"(p99 ms {gateway.percentile(99):.1f}, errors {gateway.errors})",
                    f"{gateway.rate:,.0f}/s",
                    f"echo {echo.rate:,.0f}/s; hl7apy parse {parse.rate:,.0f}/s",
                    f"{gateway.rate / echo.rate:.3f} of echo; {gateway.rate / parse.rate:.2f} of parse",
                )
            )
        database = f"sqlite:///{Path(tmp) / 'gw-paced.db'}"
        port = free_port()
        messages = [ref_i12(n, "R") for n in range(int(rate * paced_seconds))]
        with Process([CLI, "mllp", "--port", str(port), "--database-url", database], env, port):
            closed_loop(port, [ref_i12(n, "W") for n in range(20)], 4)
            gateway = paced(port, messages, rate)
        echo = paced(echo_port, [ref_i12(n, "Q") for n in range(int(rate * paced_seconds))], rate)
        rows.append(
            (
                f"ACK latency at {rate:.0f}/s offered, 4 connections (p50 ms {gateway.percentile(50):.1f})",
                f"p99 {gateway.percentile(99):.1f} ms, achieved {gateway.rate:,.0f}/s",
                f"echo p99 {echo.percentile(99):.2f} ms",
                f"{gateway.percentile(99) / max(echo.percentile(99), 0.001):.0f}x echo p99",
            )
        )
    return rows


def main(argv: list[str] | None = None) -> list[tuple[str, str, str, str]]:
    """Run and print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--paced-seconds", type=float, default=15.0)
    parser.add_argument("--synchronous", default="FULL", choices=["FULL", "NORMAL"])
    parser.add_argument("--echo-server", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument(
        "--parse-ab", type=int, default=0, metavar="ROUNDS", help="only the in-process hl7apy before/after rounds"
    )
    args = parser.parse_args(argv)
    if args.parse_ab:
        before, after = parse_ab(100, args.parse_ab)
        print(f"hl7apy parse per REF^I12: before {before:,.0f} us, after {after:,.0f} us ({before / after:.2f}x)")
        return [("hl7apy parse µs/message", f"{after:,.0f}", f"{before:,.0f}", f"{before / after:.2f}x")]
    if args.echo_server is not None:
        echo_server(args.echo_server)
        return []
    count, seconds = (40, 0.5) if args.quick else (args.messages, args.paced_seconds)
    rows = run(count, seconds, args.rate, args.synchronous)
    print("| figure | gateway | limit (same run) | ratio |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return rows


if __name__ == "__main__":
    main()
