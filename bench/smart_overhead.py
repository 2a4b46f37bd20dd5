"""The cost of SMART enforcement (issue 5): reads and searches through the gateway's ASGI app with a
bearer token (validation + scope checks + narrowing + audit), as a ratio to the same requests on the
same store without enforcement, measured in the same run. Target: overhead ≤ 15 % (ratio ≥ 0.85).

Callers: the plan (``system/*.rs``: token validation, no narrowing), a provider (``system/*.rs``, its
organization's members only: narrowing in the query) and a patient launch (``patient/*.rs``: one
compartment). The data: ``--members`` synthetic members, each with a Coverage in one of two health
networks, an ECM referral to one of four providers (its Task made by the CalAIM workflow) and three
compartment resources. In-process, one thread, best of 3 rounds; the audit trail writes its log in its
own thread as in production (``gateway.fhir.audit``), and the AuditEvents it materializes from that log
(every ``CALAIM_AUDIT_MATERIALIZE_INTERVAL_S``, 60 s) are materialized at the end and their CPU cost per
access printed, so the audit's whole cost is shown, not only its share on the request path.

With ``--http``, the same requests go over HTTP instead: two ``calaim-gateway serve`` processes (one worker
each) on the seeded file, one enforcing tokens and one not, loaded by turns with ``wrk`` (8 connections),
best of 3 rounds each: requests/s as a client sees them, uvicorn and the HTTP parsing included; beside
them each server's CPU µs per request (its event-loop thread + its other threads, read from ``/proc``).
The enforcing server materializes AuditEvents when its audit writer starts and stops only (a pass every
60 s landed in every round of the next workload; the in-process run prints its CPU per access).

With ``--wire``, reads go through uvicorn's own HTTP protocol (``httptools``) in this process, fed the raw
request bytes through an in-memory transport: the parsing of the request line and headers (the
``Authorization`` header included: 50 bytes with the access token a 43-character handle, ~780 when it was
a JWT), uvicorn's proxy-headers middleware, the front door, the token, the
guard, the read and the audit record, timed by the event-loop thread's CPU (``time.thread_time``) so that
a machine shared with other work does not swamp a difference of a few microseconds. The rounds alternate
between the cases (``--rounds``, 25th percentile): no token, no token but the same ``Authorization``
header (the header's own cost), and each caller; the audit writer thread runs as in production (its CPU
is not in the figure: the bench prints the process's CPU per request beside it).

``python -m bench.smart_overhead [--members 1000] [--requests 2000] [--no-audit] [--only TEXT]``
``[--cpu | --wire [--rounds 9] | --http [--seconds 5]]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from adapters.smart.keys import load_signing_key
from adapters.smart.registry import add_client, get_client
from adapters.smart.tokens import LaunchContext, TokenService
from bench.profile_requests import asgi_scope
from gateway.calaim.config import POF_SYSTEM
from gateway.fhir.audit_log import pending_count
from gateway.fhir.context import Context
from gateway.fhir.core import build_context, dispatch
from gateway.fhir.request import FhirRequest
from gateway.settings import Settings
from gateway.web.app import create_app

BASE = "http://bench.invalid/fhir"
PROVIDERS = ("hn-ccn", "hn-choc", "hn-prospect", "hn-noble")
NETWORKS = ("hn-altamed", "hn-amvi")
SD = "https://fhir.calaim-gateway.org/StructureDefinition"
TARGET_RATIO = 0.85
App = Callable[..., Any]


def member_bundles(n: int) -> tuple[bytes, bytes]:
    """Two transactions: member ``n`` (Patient, Coverage), then an ECM referral and three compartment
    resources (a transaction runs its POSTs before its PUTs, and the referral needs the member)."""
    pid = f"m-{n}"
    subject = {"reference": f"Patient/{pid}"}
    provider = PROVIDERS[n % len(PROVIDERS)]
    entries: list[dict[str, Any]] = [
        {
            "resource": {
                "resourceType": "Patient",
                "id": pid,
                "identifier": [{"system": "https://fhir.calaim-gateway.org/sid/medi-cal-cin", "value": f"9{n:07d}A"}],
                "name": [{"family": f"Bench{n}", "given": ["Synthetic"]}],
                "extension": [{"url": f"{SD}/ext-pof", "valueCoding": {"system": POF_SYSTEM, "code": "1a"}}],
            },
            "request": {"method": "PUT", "url": f"Patient/{pid}"},
        },
        {
            "resource": {
                "resourceType": "Coverage",
                "id": f"cov-{n}",
                "meta": {"profile": [f"{SD}/calaim-coverage"]},
                "status": "active",
                "beneficiary": subject,
                "payor": [{"reference": "Organization/calop"}],
                "extension": [
                    {
                        "url": f"{SD}/ext-health-network",
                        "valueReference": {"reference": f"Organization/{NETWORKS[n % len(NETWORKS)]}"},
                    }
                ],
            },
            "request": {"method": "PUT", "url": f"Coverage/cov-{n}"},
        },
    ]
    referral: list[dict[str, Any]] = [
        {
            "resource": {
                "resourceType": "ServiceRequest",
                "meta": {"profile": [f"{SD}/calaim-referral"]},
                "status": "active",
                "intent": "order",
                "code": {
                    "coding": [{"system": "https://fhir.calaim-gateway.org/CodeSystem/calaim-service", "code": "ecm"}]
                },
                "subject": subject,
                "authoredOn": "2024-05-01",
                "requester": {"reference": f"Organization/{provider}"},
                "performer": [{"reference": f"Organization/{provider}"}],
            },
            "request": {"method": "POST", "url": "ServiceRequest"},
        },
    ]
    for code in ("housing", "food", "transport"):
        referral.append(
            {
                "resource": {"resourceType": "Condition", "subject": subject, "code": {"text": code}},
                "request": {"method": "POST", "url": "Condition"},
            }
        )
    member, rest = ({"resourceType": "Bundle", "type": "transaction", "entry": e} for e in (entries, referral))
    return orjson.dumps(member), orjson.dumps(rest)


def seed(ctx: Context, members: int) -> None:
    """Load the members through the core (CalAIM workflow included)."""
    headers = {"content-type": "application/fhir+json", "prefer": "return=minimal"}
    for n in range(members):
        for body in member_bundles(n):
            answer = dispatch(ctx, FhirRequest("POST", "", headers=headers, body=body, base_url=BASE))
            if answer.status != 200:
                raise RuntimeError(f"seeding member {n}: {answer.status} {(answer.body or b'')[:300]!r}")


def issue(ctx: Context, settings: Settings, *, organization: str, scope: str, patient: str | None = None) -> str:
    """An access token of a backend client of ``organization`` (issued by the gateway's token service)."""
    engine = ctx.repo.engine
    client_id = f"bench-{organization}"
    client = get_client(engine, client_id) or add_client(
        engine, client_id=client_id, scope="system/*.rs patient/*.rs", secret="bench-secret", organization=organization
    )
    tokens = TokenService(engine, settings, load_signing_key(engine, settings))
    body = tokens.issue(
        issuer=BASE, client=client, user=None, scope=scope, context=LaunchContext(patient=patient), grant_id=None
    )
    return str(body["access_token"])


async def _get(app: App, path: str, token: str | None) -> int:
    status = 0

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = int(message["status"])

    await app(asgi_scope("GET", path, b"", token=token), receive, send)
    return status


def rate(
    loop: asyncio.AbstractEventLoop,
    app: App,
    paths: list[str],
    token: str | None,
    rounds: int = 3,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    """Best requests/s of ``rounds`` passes over ``paths`` timed by ``clock``; every answer must be 200."""

    async def run() -> None:
        for path in paths:
            status = await _get(app, path, token)
            if status != 200:
                raise RuntimeError(f"GET {path} answered {status}")

    best = 0.0
    for _ in range(rounds):
        started = clock()
        loop.run_until_complete(run())
        best = max(best, len(paths) / max(clock() - started, 1e-9))
    return best


def warm_up(loop: asyncio.AbstractEventLoop, app: App, ctx: Context, path: str, tokens: list[str]) -> None:
    """One request per token before timing: the audit writer thread starts with the first record and
    materializes whatever the log holds (once per process, what a crashed process left), and the first
    request of a grant compiles its SQL; neither is a per-request cost, so neither lands in a timed round."""
    for token in tokens:
        rate(loop, app, [path], token, rounds=1)
    if ctx.audit is not None:
        ctx.audit.catch_up()
        time.sleep(ctx.audit.flush_interval * 1.5)  # the writer's first wake-up, with nothing left to do


def condition_ids(ctx: Context, patient: str) -> list[str]:
    """The ids of ``patient``'s Conditions."""
    answer = dispatch(ctx, FhirRequest("GET", "Condition", query=[("subject", f"Patient/{patient}")], base_url=BASE))
    return [e["resource"]["id"] for e in orjson.loads(answer.body or b"{}").get("entry", [])]


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--no-audit", action="store_true", help="Leave the audit trail out (to see its share).")
    parser.add_argument(
        "--cpu",
        action="store_true",
        help="Reads only, timed by the request thread's CPU (time.thread_time; SQLite reads run on the event loop) "
        "instead of the wall clock: steady on a machine shared with other work; the audit writer thread's CPU "
        "is left out (the bench prints it per access at the end).",
    )
    parser.add_argument(
        "--http", action="store_true", help="Over HTTP: two served gateways and wrk (module docstring)."
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="Seconds of load per round with --http.")
    parser.add_argument(
        "--wire", action="store_true", help="Reads through uvicorn's HTTP protocol in-process (module docstring)."
    )
    parser.add_argument("--rounds", type=int, default=9, help="Alternating rounds with --wire (25th percentile).")
    parser.add_argument(
        "--only", default="", help="Only the workloads whose name contains this text (e.g. 'first page', 'read')."
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as work:
        url = f"sqlite:///{Path(work) / 'gateway.db'}"
        secured = Settings(database_url=url, sqlite_synchronous="NORMAL", log_level="warning")
        ctx = build_context(secured)
        started = time.perf_counter()
        seed(ctx, args.members)
        print(f"seeded {args.members} members in {time.perf_counter() - started:.1f} s")
        provider = PROVIDERS[0]
        visible = [n for n in range(args.members) if n % len(PROVIDERS) == 0]
        patient = f"m-{visible[0]}"
        tokens = {
            "plan": issue(ctx, secured, organization="calop", scope="system/*.rs"),
            "provider": issue(ctx, secured, organization=provider, scope="system/*.rs"),
            "patient": issue(ctx, secured, organization=provider, scope="patient/*.rs", patient=patient),
        }
        rng = random.Random(5)
        own = [f"/fhir/Condition/{c}" for c in condition_ids(ctx, patient)]
        member_reads = [
            f"/fhir/Condition/{c}"
            for n in rng.sample(visible, min(50, len(visible)))
            for c in condition_ids(ctx, f"m-{n}")
        ]
        searches_member = [
            f"/fhir/Condition?subject=Patient/m-{rng.choice(visible)}" for _ in range(args.requests // 4)
        ]
        workloads = {
            "read (provider's members)": (member_reads * (args.requests // max(len(member_reads), 1) + 1))[
                : args.requests
            ],
            "read (patient's own)": (own * (args.requests // max(len(own), 1) + 1))[: args.requests],
            "search Condition?subject=": searches_member,
            "search Condition (first page)": ["/fhir/Condition?_count=20"] * (args.requests // 4),
        }
        workloads = {name: paths for name, paths in workloads.items() if args.only in name}
        if args.http:
            over_http = http_ratios(Path(work) / "gateway.db", workloads, tokens, seconds=args.seconds)
            ctx.repo.engine.dispose()
            return over_http
        open_app = create_app(secured.model_copy(update={"auth_enabled": False}), context=ctx, background=False)
        closed_app = create_app(secured, context=ctx, background=False)
        closed_app.state.verifier = _verifier(ctx, secured)
        from gateway.web.security import smart_security

        ctx.security = smart_security
        if args.no_audit:
            ctx.audit = None
        loop = asyncio.new_event_loop()
        if args.wire:
            over_wire = wire_ratios(loop, open_app, closed_app, workloads, tokens, ctx=ctx, rounds=args.rounds)
            if ctx.audit is not None:
                ctx.audit.close()
            ctx.repo.engine.dispose()
            return over_wire
        clock = time.thread_time if args.cpu else time.perf_counter
        warm_up(loop, closed_app, ctx, workloads["read (patient's own)"][0], list(tokens.values()))
        writer_before, accesses = _writer_cpu(), 0
        results: dict[str, float] = {}
        print(f"{'workload':34} {'caller':9} {'no auth/s':>10} {'token/s':>10} {'ratio':>6}  target ≥ {TARGET_RATIO}")
        for name, paths in workloads.items():
            if args.cpu and not name.startswith("read"):
                continue  # searches run in the threadpool: the request thread's CPU does not show them
            callers: tuple[str, ...] = ("plan", "provider", "patient")
            if "patient's own" in name:
                callers = ("patient",)
            elif "subject" in name or "provider's" in name:
                callers = ("plan", "provider")
            # Rounds alternate between the two apps so that a noisy neighbour hits both alike.
            best: dict[str, float] = {}
            for _ in range(3):
                best["none"] = max(best.get("none", 0.0), rate(loop, open_app, paths, None, 1, clock))
                for caller in callers:
                    best[caller] = max(best.get(caller, 0.0), rate(loop, closed_app, paths, tokens[caller], 1, clock))
                    accesses += len(paths)
            baseline = best["none"]
            for caller in callers:
                ratio = best[caller] / baseline
                results[f"{name} / {caller}"] = ratio
                verdict = "ok" if ratio >= TARGET_RATIO else "MISSED"
                print(f"{name:34} {caller:9} {baseline:10.0f} {best[caller]:10.0f} {ratio:6.2f}  {verdict}")
        if ctx.audit is not None:
            time.sleep(ctx.audit.flush_interval * 3)  # the writer thread writes what the last rounds queued
            writer = (_writer_cpu() - writer_before) / max(accesses, 1) * 1e6
            print(f"audit writer thread: {writer:.2f} µs CPU per access ({accesses} accesses)")
            audit_summary(ctx)
            ctx.audit.close()
        ctx.repo.engine.dispose()
    return results


def _callers(workload: str) -> tuple[str, ...]:
    """The callers a workload is measured for."""
    if "patient's own" in workload:
        return ("patient",)
    if "subject" in workload or "provider's" in workload:
        return ("plan", "provider")
    return ("plan", "provider", "patient")


def http_ratios(
    db_path: Path, workloads: dict[str, list[str]], tokens: dict[str, str], *, seconds: float
) -> dict[str, float]:
    """Token/no-token requests/s over HTTP (``--http``), rounds alternating between the two servers; beside
    them, each server's CPU per request (its event-loop thread + its other threads, from ``/proc``, best
    round), which a machine shared with other work disturbs far less than requests/s."""
    from bench import servers
    from bench.loadgen import Call, LoadSpec

    headers = {"Accept": "application/fhir+json"}
    results: dict[str, float] = {}
    # The tokens' audience is BASE. AuditEvents are materialized when the enforcing server's audit writer
    # starts and when it stops, not every 60 s: in a run of ~200 s a pass over the accesses of the last
    # minute (10-16 µs of CPU each, in a thread of the served process; the in-process run prints it per
    # access) landed in the rounds of whichever workload came next, and took the later searches' ratios
    # from ~0.9 down to ~0.6 (docs/performance.md, SMART "Session 11").
    options = {"public_base_url": BASE, "log_level": "warning", "audit_materialize_interval_s": "86400"}
    with (
        tempfile.TemporaryDirectory() as logs,
        servers.gateway(db_path, workers=1, synchronous="NORMAL", log_dir=Path(logs), settings=options) as open_origin,
        servers.gateway(
            db_path, workers=1, synchronous="NORMAL", log_dir=Path(logs), auth=True, settings=options
        ) as closed_origin,
    ):
        pids = {open_origin: _server_pid(open_origin), closed_origin: _server_pid(closed_origin)}
        columns = f"{'no auth/s':>10} {'token/s':>10} {'ratio':>6}  CPU µs/req loop+other: no auth, token, ratio"
        print("AuditEvents materialized outside the timed rounds (their CPU per access: the in-process run)")
        print(f"{'workload (HTTP, wrk, 8 conn.)':34} {'caller':9} {columns}")
        for name, paths in workloads.items():
            calls = [Call("GET", p) for p in paths]
            best: dict[str, float] = {}
            cpu: dict[str, tuple[float, float]] = {}
            for _ in range(3):
                spec = LoadSpec(open_origin, calls, headers, 8, 1, seconds)
                _load_round(spec, pids[open_origin], "none", best, cpu)
                for caller in _callers(name):
                    auth = {**headers, "Authorization": f"Bearer {tokens[caller]}"}
                    spec = LoadSpec(closed_origin, calls, auth, 8, 1, seconds)
                    _load_round(spec, pids[closed_origin], caller, best, cpu)
            for caller in _callers(name):
                ratio = best[caller] / best["none"]
                results[f"{name} / {caller}"] = ratio
                verdict = "ok" if ratio >= TARGET_RATIO else "MISSED"
                line = f"{name:34} {caller:9} {best['none']:10.0f} {best[caller]:10.0f} {ratio:6.2f}  {verdict:6}"
                if "none" in cpu and caller in cpu:
                    (loop_none, other_none), (loop_token, other_token) = cpu["none"], cpu[caller]
                    line += (
                        f" {loop_none:.0f}+{other_none:.0f}, {loop_token:.0f}+{other_token:.0f}, "
                        f"{(loop_none + other_none) / (loop_token + other_token):.2f}"
                    )
                print(line)
    return results


def _load_round(
    spec: Any, pid: int | None, case: str, best: dict[str, float], cpu: dict[str, tuple[float, float]]
) -> None:
    """One wrk round of ``spec`` (a ``bench.loadgen.LoadSpec``): the best requests/s of ``case`` and its
    server's lowest CPU µs per request (event loop, other threads) so far."""
    from bench.loadgen import run_load

    before = _cpu_seconds(pid)
    result = run_load(spec, "wrk")
    after = _cpu_seconds(pid)
    best[case] = max(best.get(case, 0.0), _checked(result))
    if before is not None and after is not None and result.requests:
        spent = ((after[0] - before[0]) * 1e6 / result.requests, (after[1] - before[1]) * 1e6 / result.requests)
        if case not in cpu or sum(spent) < sum(cpu[case]):
            cpu[case] = spent


def _server_pid(origin: str) -> int | None:
    """The process of a served gateway started by this bench (``bench.servers.gateway``, one worker: uvicorn
    serves in the process it was started as), found by its ``--port``; ``None`` without ``/proc``."""
    port = origin.rsplit(":", 1)[1].encode()
    me = os.getpid()
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if parent == me and b"--port" in argv and port in argv:
            return int(entry.name)
    return None


def _cpu_seconds(pid: int | None) -> tuple[float, float] | None:
    """CPU seconds (user + system) of a process's main thread (the event loop, which runs SQLite reads) and
    of its other threads together (the threadpool of searches, the audit writer; ended ones included: the
    process's own figures count them), from ``/proc``."""
    if pid is None:
        return None
    tick = os.sysconf("SC_CLK_TCK")

    def spent(stat: Path) -> float:
        fields = stat.read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / tick

    try:
        main, whole = spent(Path(f"/proc/{pid}/task/{pid}/stat")), spent(Path(f"/proc/{pid}/stat"))
    except OSError:
        return None
    return main, whole - main


class _MemoryTransport(asyncio.Transport):
    """What uvicorn's protocol writes to: counts the bytes (``--wire``)."""

    def __init__(self) -> None:
        super().__init__()
        self.written = 0
        self.failed = 0
        """Responses whose status was not 200 (a 401 or 404 would measure nothing)."""
        self.closing = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += len(data)
        if data[:9] == b"HTTP/1.1 " and data[9:12] != b"200":
            self.failed += 1

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class _Wire:
    """One keep-alive connection of uvicorn's httptools protocol to ``app``, fed raw requests (``--wire``)."""

    def __init__(self, app: App, loop: asyncio.AbstractEventLoop) -> None:
        import uvicorn
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
        from uvicorn.server import ServerState

        # As ``calaim-gateway serve`` configures uvicorn (gateway/cli.py), without the lifespan: the app is ready.
        config = uvicorn.Config(app, access_log=False, log_level="warning", proxy_headers=True, lifespan="off")
        config.load()
        self.state = ServerState()
        self.protocol = HttpToolsProtocol(config, self.state, {}, _loop=loop)
        self.transport = _MemoryTransport()
        self.protocol.connection_made(self.transport)
        self.loop = loop

    def per_request(self, requests: list[bytes], clock: Callable[[], float]) -> float:
        """Seconds of ``clock`` per request for one pass over ``requests``."""
        state, protocol = self.state, self.protocol

        async def run() -> None:
            for raw in requests:
                before = set(state.tasks)
                protocol.data_received(raw)
                started = state.tasks - before
                if started:
                    await asyncio.gather(*started)

        begun = clock()
        self.loop.run_until_complete(run())
        spent = clock() - begun
        if self.transport.failed:
            raise RuntimeError(f"{self.transport.failed} requests were not answered 200")
        return spent / len(requests)


def _raw_get(path: str, token: str | None) -> bytes:
    """The bytes of ``GET path`` as a client sends them (the headers wrk sends in ``--http``)."""
    head = f"GET {path} HTTP/1.1\r\nHost: bench.invalid\r\nAccept: application/fhir+json\r\n"  # the base of BASE
    if token:
        head += f"Authorization: Bearer {token}\r\n"
    return (head + "\r\n").encode()


def wire_ratios(
    loop: asyncio.AbstractEventLoop,
    open_app: App,
    closed_app: App,
    workloads: dict[str, list[str]],
    tokens: dict[str, str],
    *,
    ctx: Context,
    rounds: int,
) -> dict[str, float]:
    """Reads through uvicorn's HTTP protocol (``--wire``): event-loop-thread CPU µs per request, rounds
    alternating between the cases, 25th percentile; ratio = no-token µs ÷ token µs (as requests/s)."""
    import gc

    open_wire, closed_wire = _Wire(open_app, loop), _Wire(closed_app, loop)
    results: dict[str, float] = {}
    columns = f"{'caller':9} {'no auth µs':>10} {'token µs':>10} {'ratio':>6}  (process µs)"
    print(f"{'read (uvicorn protocol, CPU)':34} {columns}")
    for name, paths in workloads.items():
        if not name.startswith("read"):
            continue  # searches run in the threadpool: the event loop's CPU does not show them
        cases: dict[str, tuple[_Wire, list[bytes]]] = {
            "none": (open_wire, [_raw_get(p, None) for p in paths]),
            "header": (open_wire, [_raw_get(p, tokens["plan"]) for p in paths]),
        }
        for caller in _callers(name):
            cases[caller] = (closed_wire, [_raw_get(p, tokens[caller]) for p in paths])
        for wire, requests in cases.values():
            wire.per_request(requests[:50], time.thread_time)  # grants compile their SQL, the audit writer starts
        if ctx.audit is not None:
            ctx.audit.catch_up()
        gc.collect()
        gc.freeze()  # as a served process does after start-up (gateway/runtime.py)
        thread: dict[str, list[float]] = {case: [] for case in cases}
        process: dict[str, list[float]] = {case: [] for case in cases}
        writer_before, accesses = _writer_cpu(), 0
        for n in range(rounds):
            for case, (wire, requests) in cases.items():
                thread[case].append(wire.per_request(requests, time.thread_time) * 1e6)
                if n % 3 == 0:
                    process[case].append(wire.per_request(requests, time.process_time) * 1e6)
                if wire is closed_wire:
                    accesses += len(requests) * (2 if n % 3 == 0 else 1)
        gc.unfreeze()
        writer = -1.0
        if ctx.audit is not None:
            time.sleep(ctx.audit.flush_interval * 3)  # the writer thread writes what the last rounds queued
            writer = (_writer_cpu() - writer_before) / max(accesses, 1) * 1e6
        quartile = {case: sorted(values)[len(values) // 4] for case, values in thread.items()}
        for case in cases:
            if case == "none":
                continue
            ratio = quartile["none"] / quartile[case]
            label = "no token, Authorization header sent" if case == "header" else case
            if case != "header":
                results[f"{name} / {case}"] = ratio
            verdict = "" if case == "header" else ("ok" if ratio >= TARGET_RATIO else "MISSED")
            print(
                f"{name:34} {label[:9]:9} {quartile['none']:10.1f} {quartile[case]:10.1f} {ratio:6.2f}  "
                f"({min(process['none']):.1f} / {min(process[case]):.1f}) {verdict}"
            )
        if writer >= 0:
            print(f"{'':34} audit writer thread: {writer:.2f} µs CPU per access ({accesses} accesses)")
    return results


def _writer_cpu() -> float:
    """CPU seconds of this process's audit writer thread so far (``gateway.fhir.audit``; 0 before it starts)."""
    for thread in threading.enumerate():
        if thread.name == "audit-writer" and thread.ident is not None:
            return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
    return 0.0


def _checked(result: Any) -> float:
    """Requests/s of a load run whose every answer was a success (a 401/403 would measure nothing)."""
    if result.errors:
        raise RuntimeError(f"{result.errors} of {result.requests} requests failed")
    return float(result.per_second)


def audit_summary(ctx: Context) -> None:
    """Print the CPU cost of materializing what the run left in the audit log (its whole log when the
    run took less than the materialization interval)."""
    assert ctx.audit is not None
    ctx.audit.write_log()
    pending = pending_count(ctx.repo)
    started = time.thread_time()
    events = ctx.audit.materialize()
    spent = time.thread_time() - started
    per_access = spent / pending * 1e6 if pending else 0.0
    print(f"audit: {pending} logged accesses made {events} AuditEvents: {per_access:.1f} µs CPU per access")


def _verifier(ctx: Context, settings: Settings) -> Any:
    """The authorization server's verifier (``AccessTokenVerifier``: ``verify`` a token, ``bearer`` a header)."""
    from adapters.smart.verify import AccessTokenVerifier

    return AccessTokenVerifier(ctx.repo.engine, settings)


if __name__ == "__main__":
    main()
