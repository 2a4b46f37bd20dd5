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
best of 3 rounds each: requests/s as a client sees them, uvicorn and the HTTP parsing included.

``python -m bench.smart_overhead [--members 1000] [--requests 2000] [--no-audit] [--cpu | --http [--seconds 5]]``
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
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
        clock = time.thread_time if args.cpu else time.perf_counter
        warm_up(loop, closed_app, ctx, workloads["read (patient's own)"][0], list(tokens.values()))
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
            baseline = best["none"]
            for caller in callers:
                ratio = best[caller] / baseline
                results[f"{name} / {caller}"] = ratio
                verdict = "ok" if ratio >= TARGET_RATIO else "MISSED"
                print(f"{name:34} {caller:9} {baseline:10.0f} {best[caller]:10.0f} {ratio:6.2f}  {verdict}")
        if ctx.audit is not None:
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
    """Token/no-token requests/s over HTTP (``--http``), rounds alternating between the two servers."""
    from bench import servers
    from bench.loadgen import Call, LoadSpec, run_load

    headers = {"Accept": "application/fhir+json"}
    results: dict[str, float] = {}
    options = {"public_base_url": BASE, "log_level": "warning"}  # the tokens' audience is BASE
    with (
        tempfile.TemporaryDirectory() as logs,
        servers.gateway(db_path, workers=1, synchronous="NORMAL", log_dir=Path(logs), settings=options) as open_origin,
        servers.gateway(
            db_path, workers=1, synchronous="NORMAL", log_dir=Path(logs), auth=True, settings=options
        ) as closed_origin,
    ):
        print(f"{'workload (HTTP, wrk, 8 conn.)':34} {'caller':9} {'no auth/s':>10} {'token/s':>10} {'ratio':>6}")
        for name, paths in workloads.items():
            calls = [Call("GET", p) for p in paths]
            best: dict[str, float] = {}
            for _ in range(3):
                spec = LoadSpec(open_origin, calls, headers, 8, 1, seconds)
                best["none"] = max(best.get("none", 0.0), _checked(run_load(spec, "wrk")))
                for caller in _callers(name):
                    auth = {**headers, "Authorization": f"Bearer {tokens[caller]}"}
                    spec = LoadSpec(closed_origin, calls, auth, 8, 1, seconds)
                    best[caller] = max(best.get(caller, 0.0), _checked(run_load(spec, "wrk")))
            for caller in _callers(name):
                ratio = best[caller] / best["none"]
                results[f"{name} / {caller}"] = ratio
                verdict = "ok" if ratio >= TARGET_RATIO else "MISSED"
                print(f"{name:34} {caller:9} {best['none']:10.0f} {best[caller]:10.0f} {ratio:6.2f}  {verdict}")
    return results


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


def _verifier(ctx: Context, settings: Settings) -> Callable[[str, str], Any]:
    from adapters.smart.verify import AccessTokenVerifier

    return AccessTokenVerifier(ctx.repo.engine, settings).verify


if __name__ == "__main__":
    main()
