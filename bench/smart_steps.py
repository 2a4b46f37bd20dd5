"""Where a guarded request's time goes (issue 5: SMART enforcement overhead ≤ 15 %), in-process.

Two tables, on the store of ``bench.smart_overhead`` (``--members`` synthetic members, a quarter of them
referred to the provider ``hn-ccn``):

1. **Requests through ``dispatch``** with each caller's grant (the guard and the narrowing included; no
   HTTP, no token verification, no audit): the provider's and the patient's reads and searches against the
   plan's (no narrowing), as request-thread CPU µs, median of ``--rounds`` alternating rounds. This is what
   the narrowing costs (docs/performance.md "After (session 7)").
2. **The steps of the token path** of a read, each in a hot loop (thread CPU, best of 7): the verifier's
   cache hit (by token, and by ``Authorization`` header as the front door asks), the ``Access`` look-up,
   the scoped context, the scope check, the read-SQL look-up, the two in one look-up as the guard's read
   path asks (``Access.readable``; the read path copies no context since session 10), the audit tuple, and
   ``guard.run`` of a read with and without a grant (the audit left out).
3. **Many patient apps in turn** (``--apps``): that many ``patient/*.rs`` grants, each launched for
   another member, reading their own Condition and Patient in turn through ``dispatch`` (request-thread
   CPU µs per read, median of ``--rounds``). With more (grant, type) statements than sqlite3's 128 cached
   per connection, SQL compiled per grant was prepared again at every read; one text per scope shape
   (``gateway.search.bound``) keeps the statements cached (docs/performance.md "After (session 8)").

``python -m bench.smart_steps [--members 300] [--rounds 5] [--apps 300]``
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.smart_overhead import BASE, PROVIDERS, _verifier, condition_ids, issue, seed
from gateway.auth.grant import Grant
from gateway.fhir import guard
from gateway.fhir.audit import AuditRecord
from gateway.fhir.context import Context
from gateway.fhir.core import build_context, dispatch
from gateway.fhir.request import FhirRequest
from gateway.settings import Settings
from gateway.web.fhir_asgi import READ_ROUTE

Paths = list[tuple[str, list[tuple[str, str]]]]


def _per_request(ctx: Context, grant: Grant, paths: Paths, n: int) -> float:
    """Request-thread CPU µs per request of ``n`` GETs cycling through ``paths`` as ``grant``."""
    started = time.thread_time()
    for i in range(n):
        path, query = paths[i % len(paths)]
        answer = dispatch(ctx, FhirRequest("GET", path, query=query, base_url=BASE, grant=grant))
        if answer.status != 200:
            raise RuntimeError(f"{path}: {answer.status}")
    return (time.thread_time() - started) / n * 1e6


def requests_table(ctx: Context, grants: dict[str, Grant], members: int, rounds: int) -> None:
    """Table 1: each workload's median µs per caller, and plan ÷ caller."""
    visible = [n for n in range(members) if n % len(PROVIDERS) == 0]
    patient = f"m-{visible[0]}"
    rng = random.Random(5)
    member_reads = [c for n in rng.sample(visible, min(40, len(visible))) for c in condition_ids(ctx, f"m-{n}")]
    cases: dict[str, tuple[Paths, int, tuple[str, ...]]] = {
        "Condition?_count=20": ([("Condition", [("_count", "20")])], 200, ("plan", "provider", "patient")),
        "Condition?_summary=count": ([("Condition", [("_summary", "count")])], 100, ("plan", "provider")),
        "Condition/[id] (members')": ([(f"Condition/{c}", []) for c in member_reads], 2000, ("plan", "provider")),
        "Condition/[id] (own)": (
            [(f"Condition/{c}", []) for c in condition_ids(ctx, patient)],
            2000,
            ("plan", "patient"),
        ),
        "Patient/[id] (own)": ([(f"Patient/{patient}", [])], 2000, ("plan", "provider", "patient")),
    }
    print(f"{'request (dispatch, CPU µs, median)':36} callers (plan ÷ caller)")
    for name, (paths, n, callers) in cases.items():
        for caller in callers:
            _per_request(ctx, grants[caller], paths, 20)  # grants compile their SQL
        samples: dict[str, list[float]] = {caller: [] for caller in callers}
        for _ in range(rounds):
            for caller in callers:
                samples[caller].append(_per_request(ctx, grants[caller], paths, n))
        median = {caller: statistics.median(values) for caller, values in samples.items()}
        cells = [
            f"{c} {median[c]:7.1f}" + (f" ({median['plan'] / median[c]:.2f})" if c != "plan" else "") for c in callers
        ]
        print(f"{name:36} " + "   ".join(cells))


def _best(fn: Callable[[], Any], n: int = 20_000) -> float:
    spent = []
    for _ in range(7):
        started = time.thread_time()
        for _ in range(n):
            fn()
        spent.append((time.thread_time() - started) / n * 1e6)
    return min(spent)


def steps_table(ctx: Context, settings: Settings, tokens: dict[str, str]) -> None:
    """Table 2: the token path's steps of a read of one Condition, per caller."""
    verifier = _verifier(ctx, settings)
    verify = verifier.verify
    dialect = ctx.repo.engine.dialect
    condition = condition_ids(ctx, "m-0")[0]
    params = {"type": "Condition", "id": condition}
    plain = FhirRequest(method="GET", path=f"Condition/{condition}", base_url=BASE)
    print(f"{'token path of a read (hot loop)':36} " + "  ".join(f"{caller:>9}" for caller in tokens))
    rows: dict[str, list[float]] = {}
    for token in tokens.values():
        grant = verify(token, BASE)
        header = f"Bearer {token}"
        access = guard.access_for(ctx, grant)
        guarded = FhirRequest(method="GET", path=f"Condition/{condition}", base_url=BASE, grant=grant)
        record: tuple[Any, ...] = (grant, "read", "Condition", condition, None, [], 200, 1.0, "127.0.0.1")
        steps: dict[str, Callable[[], Any]] = {
            "verifier (cache hit)": lambda: verify(token, BASE),  # noqa: B023 - called within the iteration
            "verifier, header (cache hit)": lambda: verifier.bearer(header, BASE),  # noqa: B023
            "Access look-up": lambda: ctx.access_cache.get(grant),  # noqa: B023
            "scoped context": lambda: ctx.with_access(access),  # noqa: B023
            "scope check": lambda: access.require("Condition", "r"),  # noqa: B023
            "read SQL look-up": lambda: access.read_sql("Condition", dialect=dialect),  # noqa: B023
            "scope check + read SQL (readable)": lambda: access.readable("Condition", dialect),  # noqa: B023
            "audit tuple": lambda: tuple.__new__(AuditRecord, record),  # noqa: B023
            "guard.run without a grant": lambda: guard.run(ctx, READ_ROUTE, plain, params),
            "guard.run with the grant": lambda: guard.run(ctx, READ_ROUTE, guarded, params),  # noqa: B023
        }
        for name, step in steps.items():
            rows.setdefault(name, []).append(_best(step))
    for name, values in rows.items():
        print(f"{name:36} " + "  ".join(f"{v:9.2f}" for v in values))


def apps_table(ctx: Context, members: int, apps: int, rounds: int) -> None:
    """Table 3: ``apps`` patient grants reading their own Condition and Patient in turn."""
    expires = int(time.time()) + 3600
    requests: list[FhirRequest] = []
    for n in range(apps):
        member = n % members
        grant = Grant(
            subject=f"user-{n}",
            client_id="bench-app",
            scope="patient/*.rs",
            token_id=f"bench-app-{n}",
            expires_at=expires,
            patient=f"m-{member}",
            organization=PROVIDERS[member % len(PROVIDERS)],
        )
        condition = condition_ids(ctx, f"m-{member}")[0]
        requests.append(FhirRequest("GET", f"Condition/{condition}", base_url=BASE, grant=grant))
        requests.append(FhirRequest("GET", f"Patient/m-{member}", base_url=BASE, grant=grant))
    for request in requests:  # each grant compiles (or finds) its SQL
        if dispatch(ctx, request).status != 200:
            raise RuntimeError(f"{request.path}: not readable by its own patient app")
    samples = []
    for _ in range(rounds):
        started = time.thread_time()
        for request in requests * 3:
            dispatch(ctx, request)
        samples.append((time.thread_time() - started) / (3 * len(requests)) * 1e6)
    print(f"{apps} patient apps reading in turn (dispatch, CPU µs per read, median): {statistics.median(samples):.1f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--members", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--apps", type=int, default=300, help="Patient apps reading in turn (table 3; 0: skip).")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as work:
        url = f"sqlite:///{Path(work) / 'gateway.db'}"
        settings = Settings(database_url=url, sqlite_synchronous="NORMAL", log_level="warning")
        ctx = build_context(settings)
        seed(ctx, args.members)
        ctx.audit = None  # the audit's cost is bench.smart_overhead's (and the writer thread's)
        provider = PROVIDERS[0]
        tokens = {
            "plan": issue(ctx, settings, organization="calop", scope="system/*.rs"),
            "provider": issue(ctx, settings, organization=provider, scope="system/*.rs"),
            "patient": issue(ctx, settings, organization=provider, scope="patient/*.rs", patient="m-0"),
        }
        verify = _verifier(ctx, settings).verify
        grants = {caller: verify(token, BASE) for caller, token in tokens.items()}
        requests_table(ctx, grants, args.members, args.rounds)
        print()
        steps_table(ctx, settings, tokens)
        if args.apps:
            print()
            apps_table(ctx, args.members, args.apps, args.rounds)
        ctx.repo.engine.dispose()


if __name__ == "__main__":
    main()
