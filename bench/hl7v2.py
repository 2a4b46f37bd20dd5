"""County HL7 v2 benchmark: sustained REF^I12/s with durable ACKs over 1 and 8 MLLP connections, and the
ACK latency at a paced rate, each next to its limit measured in the same run (docs/performance.md).

- gateway: ``calaim-gateway mllp`` as a real process on a fresh SQLite file (``synchronous=FULL``, the
  default: an AA means the referral, its Task, its events and the log row survive power loss);
- limit 1, parse: hl7apy parsing the same kind of messages in this process, one core, with the call the
  gateway makes (``mappings.hl7v2.message.parse_with_hl7apy`` with the REF^I12 profile's segments, its
  verdict memo starting empty as in a fresh parse worker; the memo's hit rate is printed with it, and the
  share of messages it judged whole: from the second one on, a bench message has nothing left that hl7apy
  has not judged at its place, so this limit is mostly the memo's own cost, docs/hl7v2.md). The
  gateway parses in worker processes (adapters/hl7v2/parsepool.py), so on N free cores its parse
  capacity is up to N times this;
- limit 2, transport: an MLLP echo server (same framing code, a canned ACK, no parsing, no storage) as
  a process, driven by the same clients.

Messages (``ref_i12``) vary as county traffic does: a distinct member (ids, name, birth date, address),
referral id, control id, send time and note per message; clinician, diagnosis, authorization period and
referral date from pools. Members are new to the store, so the gateway writes them as a group
(adapters/hl7v2/batch.py).

A paced run starts after a warm-up of ``--warm-up`` messages (``WARM_UP``: the parse worker's memos and
the store's pages as in steady county traffic, not cold) and is followed by a row of the CPU it cost: the
gateway's per stage and the load generator's own (~0.1 ms per message: it is not what limits the run);
``--paced-only`` runs only the paced run(s).

Each throughput run is followed by a row of the gateway's CPU per message (from /proc: its event loop, its
other threads, mostly the commit thread, and its parse workers), its run-queue wait (runnable, no free
core: the machine's load) and the group sizes it logged when it stopped; when ``--rate`` is not sustained,
a last paced row at 80 % of the 8-connection rate gives the latency at a rate the gateway does sustain.

Run: ``.venv/bin/python -m bench.hl7v2`` (full: 2,000 messages per throughput run, 15 s paced run) or
``--quick``; ``--trace`` runs one paced run with a per-stage trace of every message (``bench.hl7v2_trace``:
where the ACK latency's tail comes from); ``--parse-ab ROUNDS`` compares hl7apy's parse without and with
the memoized look-ups and with the verdict memo, ``--commit-ab ROUNDS`` the commit thread per message and
grouped, in-process (with ``--re-referrals``: of members already stored); ``--commit-parts GROUP`` the
commit thread's CPU part by part and its WAL frames per group, in-process (``bench.hl7v2_parts``).
Targets from issue 7: >= 500 REF^I12/s durable; p99 ACK latency < 50 ms at 200 messages/s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import IO

from adapters.hl7v2.client import MllpClient
from adapters.hl7v2.mllp import FrameDecoder, frame

CLI = str(Path(sys.executable).parent / "calaim-gateway")
WARM_UP = 300
"""Messages sent before a paced run (4 connections, closed loop): a paced run measures steady traffic."""
SUSTAINABLE = 0.8
"""The paced row's rate when the gateway does not sustain ``--rate``: this share of its 8-connection rate."""
ECHO_ACK = b"MSH|^~\\&|GW|PLAN|HCA-BHS|OCHCA|20250301||ACK^I12^ACK|E1|P|2.5.1\rMSA|AA|X\r"


GIVEN = ("Casey", "Jordan", "Riley", "Morgan", "Avery")
CLINICIANS = [f"Clinician{k:02d}^{given}" for k, given in enumerate(GIVEN * 5)]
"""The county's referring clinicians (PRD): a pool, as a county's BH staff is."""
DIAGNOSES = [
    "F20.9^Schizophrenia, unspecified",
    "F25.9^Schizoaffective disorder, unspecified",
    "F31.9^Bipolar disorder, unspecified",
    "F32.9^Major depressive disorder, single episode, unspecified",
    "F33.1^Major depressive disorder, recurrent, moderate",
    "F41.1^Generalized anxiety disorder",
    "F43.10^Post-traumatic stress disorder, unspecified",
    "F10.20^Alcohol dependence, uncomplicated",
    "F11.20^Opioid dependence, uncomplicated",
    "F15.20^Other stimulant dependence, uncomplicated",
    "F60.3^Borderline personality disorder",
    "F90.9^Attention-deficit hyperactivity disorder, unspecified type",
]
"""Common behavioral health diagnoses (DG1-3), ICD-10-CM."""


STREETS = [
    f"{name} {kind}"
    for name in ("Main", "Bristol", "Harbor", "Euclid", "Beach", "Brookhurst", "Magnolia")
    for kind in ("St", "Ave", "Blvd")
]
CITIES = [
    ("Santa Ana", "92701"),
    ("Anaheim", "92801"),
    ("Irvine", "92614"),
    ("Garden Grove", "92840"),
    ("Orange", "92866"),
    ("Fullerton", "92831"),
    ("Costa Mesa", "92626"),
    ("Westminster", "92683"),
]


def ref_i12(n: int, run: str) -> bytes:
    """A synthetic county referral, with the variety of county traffic: per message its member (CIN, MRN,
    name, birth date, address), referral id, control id, send time and note; drawn from pools (as a
    county's traffic repeats them) the referring clinician (PRD), the diagnosis and its onset (DG1), the
    authorization period and units (AUT), the referral date, the member's given name and city."""
    pick = random.Random(f"{run}-{n}")
    start = date(2025, 3, 1) + timedelta(days=pick.randrange(30))
    end = start + timedelta(days=364)
    onset = date(2024, 12, 1) + timedelta(days=7 * pick.randrange(6))
    sent = datetime(2025, 3, 1, 8, 0) + timedelta(seconds=37 * n + pick.randrange(37))
    born = date(1950, 1, 1) + timedelta(days=pick.randrange(365 * 55))
    city, zip_code = pick.choice(CITIES)
    address = f"{pick.randrange(1, 9999)} {pick.choice(STREETS)}^^{city}^CA^{zip_code}"
    name = (
        f"Testmember{pick.randrange(2000)}^{pick.choice(GIVEN * 8)}{pick.randrange(8)}^{chr(65 + pick.randrange(26))}"
    )
    segments = [
        f"MSH|^~\\&|HCA-BHS|OCHCA|CALAIM-GATEWAY|CALOPTIMA|{sent:%Y%m%d%H%M%S}||REF^I12^REF_I12|{run}-{n}|P|2.5.1"
        "||||||UNICODE UTF-8",
        f"RF1|P^Pending^HL70283|R^Routine^HL70280|ecm^ECM^CALAIMSVC||O^Outpatient^HL70284|CR-{run}-{n}^^OCHCA"
        f"|{start - timedelta(days=pick.randrange(3)):%Y%m%d}|||3^Serious mental health and SUD needs^CALAIMPOF",
        f"AUT||||{start:%Y%m%d}|{end:%Y%m%d}|||{pick.choice((12, 24, 36))}",
        f"PRD|RP|{pick.choice(CLINICIANS)}|||||1999999133^NPI",
        f"PID|1||9{n:07d}A^^^MEDI-CAL^MA~M{n}^^^OCHCA^MR||{name}||{born:%Y%m%d}|{pick.choice('FM')}|||{address}",
        "IN1|1|MC^Medi-Cal|calop|CalOptima Health",
        f"DG1|1||{pick.choice(DIAGNOSES)}^I10||{onset:%Y%m%d}|W",
        f"NTE|1||Referred after crisis stabilization on day {pick.randrange(1, 29)}, case {run}-{n}",
    ]
    return ("\r".join(segments) + "\r").encode()


@dataclass
class Run:
    """One measured load: messages, seconds, ACK latencies (s)."""

    messages: int
    seconds: float
    latencies: list[float]
    errors: int = 0
    client_cpu: float = 0.0
    """CPU seconds of the load generator's connection threads (paced runs)."""
    client_waited: float = 0.0
    """Seconds those threads were runnable but waited for a core (paced runs)."""

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
    send time, so queueing behind a slow server counts (no coordinated omission).

    The load generator is measured too (``Run.client_cpu``, ``Run.client_waited``: its threads' CPU and
    run-queue wait), to tell its share of the 2 cores from the gateway's: each thread sends framed bytes on a
    blocking socket and reads the ACK (``MllpClient``), ~0.1 ms of CPU per message."""
    shares = [messages[i::connections] for i in range(connections)]
    latencies: list[float] = []
    used = [0.0, 0.0]
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
        cpu, waited = _schedstat(os.getpid(), threading.get_native_id())
        with lock:
            latencies.extend(mine)
            used[0] += cpu
            used[1] += waited

    threads = [threading.Thread(target=worker, args=(i, share)) for i, share in enumerate(shares)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return Run(len(messages), time.perf_counter() - begin, latencies, client_cpu=used[0], client_waited=used[1])


def parse_limit(messages: list[bytes]) -> tuple[Run, float, float]:
    """hl7apy parse of each message, in this process (one core): the call the gateway's step 1 makes
    (``mappings.hl7v2.message.parse_with_hl7apy``, with the segments the REF^I12 profile reads, and the
    verdict memo starting empty, as in a fresh parse worker, which has parsed ``parsepool.WARM_UP`` to load
    hl7apy's tables), nothing else; the memo's hit rate and the share of messages it judged whole (nothing
    left to hand to hl7apy: ``verdicts.judged``)."""
    from adapters.hl7v2.parsepool import WARM_UP as WORKER_WARM_UP
    from mappings.hl7v2 import profiles, verdicts
    from mappings.hl7v2.er7 import read_header, split_segments
    from mappings.hl7v2.message import parse_with_hl7apy

    inputs = [(split_segments(message.decode()), read_header(message)) for message in messages]
    read = profiles.READ_SEGMENTS.get("REF")
    parse_with_hl7apy(split_segments(WORKER_WARM_UP.decode()), read_header(WORKER_WARM_UP), read=read)
    verdicts.clear()
    start = time.perf_counter()
    for lines, header in inputs:
        parse_with_hl7apy(lines, header, read=read)
    run = Run(len(messages), time.perf_counter() - start, [])
    return run, verdicts.stats.hit_rate, verdicts.stats.judged / len(messages)


def parse_ab(count: int, rounds: int) -> tuple[float, float, float, float]:
    """CPU µs per message of ``parse_with_hl7apy`` with hl7apy's own look-ups (``none``), with the memoized
    ones (``cache``, ``mappings.hl7v2.hl7apy_cache``), and with them and the verdict memo
    (``memo``, ``mappings.hl7v2.verdicts``, emptied before each round of ``count`` fresh messages), in
    alternating rounds in this process: the best round of each, and the memo's hit rate (fields answered
    whole; it prints how many components of the other fields its component memo answered too)
    (docs/performance.md "County HL7 v2")."""
    from mappings.hl7v2 import hl7apy_cache, profiles, verdicts
    from mappings.hl7v2.er7 import read_header, split_segments
    from mappings.hl7v2.message import parse_with_hl7apy

    read = profiles.READ_SEGMENTS.get("REF")
    inputs = [(split_segments(m.decode()), read_header(m)) for m in (ref_i12(n, "A") for n in range(count))]

    def one_round() -> float:
        verdicts.clear()
        start = time.process_time()
        for lines, header in inputs:
            parse_with_hl7apy(lines, header, read=read)
        return (time.process_time() - start) / len(inputs) * 1e6

    results: dict[str, list[float]] = {"none": [], "cache": [], "memo": []}
    hit_rate = components = 0.0
    try:
        for _ in range(rounds):
            for variant in results:
                if variant == "none":
                    hl7apy_cache.uninstall()
                else:
                    hl7apy_cache.install()
                verdicts.enabled = variant == "memo"
                one_round()  # warm-up of this variant
                results[variant].append(one_round())
                if variant == "memo":
                    hit_rate, components = verdicts.stats.hit_rate, verdicts.stats.components / len(inputs)
    finally:
        hl7apy_cache.install()
        verdicts.enabled = True
    print(f"component memo: {components:.1f} components per message answered in fields the field memo did not")
    return min(results["none"]), min(results["cache"]), min(results["memo"]), hit_rate


def stored_member(message: bytes) -> bytes:
    """What the store holds of a member before its re-referral: the same member (CIN only, as the plan's
    HN files give it) referred for another service (medically tailored meals) by an earlier message."""
    pid = message.index(b"\rPID|")
    message = message.replace(message[message.index(b"~M", pid) : message.index(b"^MR", pid) + 3], b"", 1)
    message = message.replace(b"|REF^I12^REF_I12|", b"|REF^I12^REF_I12|S", 1).replace(b"|CR-", b"|CR-S", 1)
    return message.replace(b"ecm^ECM^CALAIMSVC", b"medically-tailored-meals^MTM^CALAIMSVC", 1)


def commit_ab(group: int, rounds: int, count: int = 96, *, stored: bool = False) -> tuple[float, float]:
    """CPU ms per message of the commit thread (``InboundProcessor.commit``) per message (``grouped`` off,
    before) and as groups (on, after: adapters/hl7v2/batch.py), ``group`` messages per commit, in
    alternating rounds of ``count`` new members on a fresh SQLite file with ``synchronous=FULL``: the best
    round of each (docs/performance.md "County HL7 v2"). ``stored``: re-referrals instead, members stored
    before the round by an untimed message (``stored_member``), so each timed message links the county
    MRN, matches the Coverage and matches or creates its Condition."""
    from adapters.hl7v2.config import mapping_config
    from adapters.hl7v2.processor import InboundProcessor
    from gateway.calaim.policy import Policy
    from gateway.fhir.core import build_context
    from gateway.settings import Settings

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(database_url=f"sqlite:///{tmp}/ab.db", sqlite_synchronous="FULL", auth_enabled=False)
        ctx = build_context(settings)
        policy = Policy.load(settings.calaim_plan_dir)
        processor = InboundProcessor(ctx, settings, policy, mapping_config(settings, policy))
        sent = [0]

        def one_round(grouped: bool) -> float:
            messages = [ref_i12(sent[0] + n, "AB") for n in range(count)]
            sent[0] += count
            if stored:
                processor.grouped = True
                for first in range(0, count, 32):
                    before = [processor.prepare(stored_member(m)) for m in messages[first : first + 32]]
                    if any(outcome.code != "AA" for outcome in processor.commit(before)):
                        raise RuntimeError("a bench member was not stored")
            prepared = [processor.prepare(message) for message in messages]
            processor.grouped = grouped
            start = time.process_time()
            for first in range(0, count, group):
                outcomes = processor.commit(prepared[first : first + group])
                if any(outcome.code != "AA" for outcome in outcomes):
                    raise RuntimeError("a bench message was not applied")
            return (time.process_time() - start) / count * 1000

        results: dict[bool, list[float]] = {False: [], True: []}
        for grouped in (False, True):
            one_round(grouped)  # warm-up of each path
        for _ in range(rounds):
            for grouped in (False, True):
                results[grouped].append(one_round(grouped))
        ctx.repo.engine.dispose()
    return min(results[False]), min(results[True])


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
    """A server process for the duration of a ``with``; what it printed and logged is ``output()``."""

    def __init__(self, command: list[str], env: dict[str, str], port: int) -> None:
        self.command, self.env, self.port = command, env, port
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._text = ""

    def __enter__(self) -> Process:
        self._log = tempfile.TemporaryFile()  # closed by __exit__, after the process ended
        self.process = subprocess.Popen(self.command, env=self.env, stdout=self._log, stderr=subprocess.STDOUT)
        try:
            wait_port(self.port, self.process)
        except RuntimeError as exc:
            self.__exit__()
            raise RuntimeError(f"{exc}: {self._text[-2000:]}") from None
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.process is not None
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self._text = self.output()
        if self._log is not None:
            self._log.close()
            self._log = None

    def output(self) -> str:
        """What the process printed and logged (so far, or until it ended)."""
        if self._log is None:
            return self._text
        self._log.seek(0)
        return self._log.read().decode(errors="replace")


@dataclass
class Cpu:
    """CPU seconds and run-queue waits (runnable, no core: the machine's load) of a served gateway, read
    from /proc: its main thread (the event loop: framing, IPC, ACKs), its other threads (the commit thread,
    the lease), and its child processes (the parse workers)."""

    loop: float = 0.0
    others: float = 0.0
    workers: float = 0.0
    waited: float = 0.0

    @staticmethod
    def of(pid: int) -> Cpu:
        cpu = Cpu()
        for tid in _tids(pid):
            used, waited = _schedstat(pid, tid)
            cpu.waited += waited
            if tid == pid:
                cpu.loop += used
            else:
                cpu.others += used
        for child in _children(pid):
            for tid in _tids(child):
                used, waited = _schedstat(child, tid)
                cpu.workers += used
                cpu.waited += waited
        return cpu

    def since(self, before: Cpu) -> Cpu:
        return Cpu(
            self.loop - before.loop,
            self.others - before.others,
            self.workers - before.workers,
            self.waited - before.waited,
        )


def _tids(pid: int) -> list[int]:
    try:
        return [int(tid) for tid in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return []


def _schedstat(pid: int, tid: int) -> tuple[float, float]:
    """(CPU seconds, seconds runnable but waiting for a core) of one thread (Linux schedstat)."""
    try:
        used, waited, _ = Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()
    except (OSError, ValueError):
        return 0.0, 0.0
    return int(used) / 1e9, int(waited) / 1e9


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for tid in _tids(pid):
        with contextlib.suppress(OSError):
            found += [int(child) for child in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
    return found


def _groups(output: str) -> str:
    """The group sizes the gateway logged when it stopped (adapters/hl7v2/server.py ``GroupCommitter.close``)."""
    for line in reversed(output.splitlines()):
        if "committed in" in line and "groups by size" in line:
            return line.split("hl7v2: ", 1)[-1]
    return "group sizes not logged"


def paced_run(
    database: Path, env: dict[str, str], rate: float, count: int, run: str, warm_up: int
) -> tuple[Run, tuple[str, str, str, str]]:
    """A fresh gateway on ``database``, ``warm_up`` messages over 4 connections (closed loop: the parse
    workers' memos and the store's pages as in steady county traffic: with cold memos the first parses are
    slower, and the queue they build in the first second outlasts the run's margin over its rate), then
    ``count`` messages paced at ``rate``: the run and a row of where the CPU went during it (the gateway per
    stage, its run-queue wait, and the load generator's own)."""
    port = free_port()
    with Process([CLI, "mllp", "--port", str(port), "--database-url", f"sqlite:///{database}"], env, port) as served:
        assert served.process is not None
        closed_loop(port, [ref_i12(n, "W") for n in range(warm_up)], 4)
        before = Cpu.of(served.process.pid)
        gateway = paced(port, [ref_i12(n, run) for n in range(count)], rate)
        cpu = Cpu.of(served.process.pid).since(before)
    per = 1000 / gateway.messages
    total = (cpu.loop + cpu.others + cpu.workers) * per
    row = (
        f"Paced at {rate:.0f}/s, CPU ms per REF^I12: event loop / commit thread / parse workers "
        f"(gateway run-queue wait {cpu.waited * per:.2f} ms; after a warm-up of {warm_up}; "
        f"{_groups(served.output())}, warm-up included)",
        f"{cpu.loop * per:.2f} / {cpu.others * per:.2f} / {cpu.workers * per:.2f}",
        f"total {total:.2f} ms; load generator {gateway.client_cpu * per:.2f} ms "
        f"(run-queue wait {gateway.client_waited * per:.2f} ms)",
        f"{(cpu.loop + cpu.others + cpu.workers) / gateway.seconds:.2f} cores busy",
    )
    return gateway, row


def run(
    count: int,
    paced_seconds: float,
    rate: float,
    synchronous: str,
    *,
    warm_up: int = WARM_UP,
    paced_only: bool = False,
) -> list[tuple[str, str, str, str]]:
    """Every figure: (name, gateway, limit, ratio). ``paced_only``: the paced run(s) only."""
    rows: list[tuple[str, str, str, str]] = []
    env = {**os.environ, "CALAIM_LOG_LEVEL": "info", "CALAIM_SQLITE_SYNCHRONOUS": synchronous}
    sustained = 0.0
    parse, hit_rate, judged = (
        parse_limit([ref_i12(n, "P") for n in range(min(count, 500))]) if not paced_only else (None, 0.0, 0.0)
    )
    echo_port = free_port()
    with (
        tempfile.TemporaryDirectory() as tmp,
        Process([sys.executable, "-m", "bench.hl7v2", "--echo-server", str(echo_port)], env, echo_port),
    ):
        for connections in (1, 8) if not paced_only else ():
            database = f"sqlite:///{Path(tmp) / f'gw-{connections}.db'}"
            port = free_port()
            command = [CLI, "mllp", "--port", str(port), "--database-url", database]
            with Process(command, env, port) as served:
                assert served.process is not None
                closed_loop(port, [ref_i12(n, "W") for n in range(20)], connections)  # warm-up
                before = Cpu.of(served.process.pid)
                gateway = closed_loop(port, [ref_i12(n, f"C{connections}") for n in range(count)], connections)
                cpu = Cpu.of(served.process.pid).since(before)
            echo = closed_loop(echo_port, [ref_i12(n, "E") for n in range(count)], connections)
            sustained = gateway.rate
            assert parse is not None
            rows.append(
                (
                    f"REF^I12/s durable, {connections} connection(s), sync={synchronous} "
                    f"(p99 ms {gateway.percentile(99):.1f}, errors {gateway.errors})",
                    f"{gateway.rate:,.0f}/s",
                    f"echo {echo.rate:,.0f}/s; hl7apy parse {parse.rate:,.0f}/s (memo hits {hit_rate:.0%}, "
                    f"{judged:.0%} of messages judged whole)",
                    f"{gateway.rate / echo.rate:.3f} of echo; {gateway.rate / parse.rate:.2f} of parse",
                )
            )
            per = 1000 / gateway.messages
            rows.append(
                (
                    f"CPU ms per REF^I12, {connections} connection(s): event loop / commit thread / parse workers "
                    f"(run-queue wait {cpu.waited * per:.2f} ms; {_groups(served.output())})",
                    f"{cpu.loop * per:.2f} / {cpu.others * per:.2f} / {cpu.workers * per:.2f}",
                    f"total {(cpu.loop + cpu.others + cpu.workers) * per:.2f} ms",
                    f"{(cpu.loop + cpu.others + cpu.workers) / gateway.seconds:.2f} cores busy",
                )
            )
        gateway, row = paced_run(Path(tmp) / "gw-paced.db", env, rate, int(rate * paced_seconds), "R", warm_up)
        echo = paced(echo_port, [ref_i12(n, "Q") for n in range(int(rate * paced_seconds))], rate)
        rows.append(
            (
                f"ACK latency at {rate:.0f}/s offered, 4 connections (p50 ms {gateway.percentile(50):.1f})",
                f"p99 {gateway.percentile(99):.1f} ms, achieved {gateway.rate:,.0f}/s",
                f"echo p99 {echo.percentile(99):.2f} ms",
                f"{gateway.percentile(99) / max(echo.percentile(99), 0.001):.0f}x echo p99",
            )
        )
        rows.append(row)
        if 0 < SUSTAINABLE * sustained < rate:  # the target's rate is not sustained: the latency at one that is
            below = SUSTAINABLE * sustained
            count = max(20, int(below * paced_seconds))
            gateway, row = paced_run(Path(tmp) / "gw-sustained.db", env, below, count, "S", warm_up)
            rows.append(
                (
                    f"ACK latency at {below:.0f}/s offered ({SUSTAINABLE:.0%} of the 8-connection rate), 4 connections "
                    f"(p50 ms {gateway.percentile(50):.1f})",
                    f"p99 {gateway.percentile(99):.1f} ms, achieved {gateway.rate:,.0f}/s",
                    "target p99 < 50 ms at 200/s",
                    "",
                )
            )
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> list[tuple[str, str, str, str]]:
    """Run and print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--paced-seconds", type=float, default=15.0)
    parser.add_argument("--synchronous", default="FULL", choices=["FULL", "NORMAL"])
    parser.add_argument(
        "--warm-up",
        type=int,
        default=WARM_UP,
        metavar="MESSAGES",
        help="messages before each paced run (4 connections, closed loop)",
    )
    parser.add_argument("--paced-only", action="store_true", help="only the paced run(s), after their warm-up")
    parser.add_argument(
        "--trace", action="store_true", help="only a paced run, traced per stage (bench/hl7v2_trace.py)"
    )
    parser.add_argument("--echo-server", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument(
        "--parse-ab", type=int, default=0, metavar="ROUNDS", help="only the in-process hl7apy before/after rounds"
    )
    parser.add_argument(
        "--commit-ab", type=int, default=0, metavar="ROUNDS", help="only the in-process commit before/after rounds"
    )
    parser.add_argument(
        "--re-referrals", action="store_true", help="with --commit-ab: members already stored (re-referrals)"
    )
    parser.add_argument(
        "--commit-parts",
        type=int,
        default=0,
        metavar="GROUP",
        help="only the in-process commit thread's CPU by part, groups of GROUP (bench/hl7v2_parts.py)",
    )
    args = parser.parse_args(argv)
    if args.parse_ab:
        none, cache, memo, hits = parse_ab(args.messages if args.messages != 2000 else 300, args.parse_ab)
        print(
            f"hl7apy parse per REF^I12: no cache {none:,.0f} us, cache {cache:,.0f} us ({none / cache:.2f}x), "
            f"cache + verdict memo {memo:,.0f} us ({cache / memo:.2f}x of cache; memo hits {hits:.0%})"
        )
        return [("hl7apy parse µs/message", f"{memo:,.0f}", f"{cache:,.0f}", f"{cache / memo:.2f}x")]
    if args.commit_ab:
        rows = []
        kind = "re-referral" if args.re_referrals else "REF^I12"
        for group in (1, 8, 32):
            before, after = commit_ab(group, args.commit_ab, stored=args.re_referrals)
            print(
                f"commit per {kind}, groups of {group}: per message {before:.2f} ms, grouped {after:.2f} ms "
                f"({before / after:.2f}x)"
            )
            rows.append(
                (f"commit ms/{kind}, groups of {group}", f"{after:.2f}", f"{before:.2f}", f"{before / after:.2f}x")
            )
        return rows
    if args.commit_parts:
        from bench.hl7v2_parts import commit_parts

        count = 40 if args.quick else args.messages if args.messages != 2000 else 600
        lines = commit_parts(args.commit_parts, count)
        print("\n".join(lines))
        return [("commit parts", line, "", "") for line in lines]
    if args.trace:
        from bench.hl7v2_trace import traced_run

        lines = traced_run(
            args.rate, 0.5 if args.quick else args.paced_seconds, min(args.warm_up, 20) if args.quick else args.warm_up
        )
        print("\n".join(lines))
        return [("trace", line, "", "") for line in lines]
    if args.echo_server is not None:
        echo_server(args.echo_server)
        return []
    count, seconds = (40, 0.5) if args.quick else (args.messages, args.paced_seconds)
    warm_up = min(args.warm_up, 20) if args.quick else args.warm_up
    rows = run(count, seconds, args.rate, args.synchronous, warm_up=warm_up, paced_only=args.paced_only)
    print("| figure | gateway | limit (same run) | ratio |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return rows


if __name__ == "__main__":
    main()
