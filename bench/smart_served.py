"""Instructions per read of a served gateway (issue 5: SMART enforcement overhead ≤ 15 %), by callgrind.

Wall-clock and CPU-time A/Bs of the token path move by more than the path itself on a machine shared
with other work (docs/performance.md, SMART sessions 5-9), and the in-process ``--wire`` path of
``bench.smart_overhead`` counted a third of what a served process executes for a token (session 10). This
bench counts what the served process executes: ``calaim-gateway serve`` (one worker, as ``--http`` runs
it) under ``valgrind --tool=callgrind`` with instrumentation off, loaded with exactly ``--requests`` GETs
per window over 8 keep-alive connections (a Python client in this process; its CPU is not counted), the
instrumentation switched on around each window only (``callgrind_control -i on|off``) and each window
dumped (``-d``): instructions (Ir) per request of every thread of the served process (the event loop and
the audit writer), kernel time excluded. The windows alternate between the cases, ``--reps`` times each.

Cases: on a gateway without enforcement, the members' Condition reads (``none``) and the patient's own
(``none-own``); on one enforcing tokens, the same reads by the plan, the provider (narrowed) and the
patient (narrowed, its own). The store is ``bench.smart_overhead``'s (``--members``), seeded once in this
process. The audit writer runs as in production except its interval (``CALAIM_AUDIT_FLUSH_INTERVAL_S``
60 s, so that it writes its 5,000-record batches as at full speed instead of a few dozen records per
0.5 s under valgrind) and the materialization of AuditEvents (once, when the writer first runs; its cost
per access is what ``bench.smart_overhead`` prints). A window that holds a batch write or a garbage
collection of the queued records counts it: the median over ``--reps`` is the figure, the spread is
printed.

``python -m bench.smart_served [--members 300] [--requests 1500] [--reps 3] [--tree DIR] [--keep DIR]``
(``--tree``: the source tree the servers run, e.g. a ``git archive HEAD`` copy for the "before" of an A/B;
``--keep``: where the windows' dumps stay, named by case, for ``callgrind_annotate``).
"""

from __future__ import annotations

import argparse
import http.client
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import update

from bench.servers import free_port
from bench.smart_overhead import BASE, PROVIDERS, condition_ids, issue, seed
from gateway.fhir.core import build_context
from gateway.settings import Settings
from gateway.store.schema import smart_access_token

CONNECTIONS = 8
Case = tuple[list[str], str | None]
"""The paths a case reads in turn, and the caller whose token it sends (``None``: no token)."""


@contextmanager
def served(tree: Path, db: Path, out: Path, *, auth: bool) -> Iterator[tuple[int, int]]:
    """``calaim-gateway serve`` of ``tree`` on ``db`` under callgrind (instrumentation off); yields its pid
    and port."""
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(tree),
        "CALAIM_SQLITE_SYNCHRONOUS": "NORMAL",
        "CALAIM_AUTH_ENABLED": str(auth).lower(),
        "CALAIM_PUBLIC_BASE_URL": BASE,  # the tokens' audience
        "CALAIM_LOG_LEVEL": "warning",
        "CALAIM_AUDIT_FLUSH_INTERVAL_S": "60",
        "CALAIM_AUDIT_MATERIALIZE_INTERVAL_S": "1000000",
    }
    command = [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={out / ('auth' if auth else 'open')}.%p",
        sys.executable,
        "-m",
        "gateway.cli",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--database-url",
        f"sqlite:///{db}",
        "--workers",
        "1",
    ]
    with open(out / f"server-{'auth' if auth else 'open'}.log", "wb") as log:
        process = subprocess.Popen(command, env=env, cwd=tree, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 600
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/fhir/metadata", timeout=5):
                    break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("the served gateway did not start") from None
                time.sleep(0.5)
        yield process.pid, port
    finally:
        process.terminate()
        try:
            process.wait(120)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def load(port: int, paths: list[str], token: str | None, requests: int) -> None:
    """Exactly ``requests`` GETs cycling through ``paths`` over ``CONNECTIONS`` keep-alive connections."""
    headers = {"Accept": "application/fhir+json", "Host": "bench.invalid"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    failed: list[int] = []

    def connection(first: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        for n in range(first, requests, CONNECTIONS):
            conn.request("GET", paths[n % len(paths)], headers=headers)
            answer = conn.getresponse()
            answer.read()
            if answer.status != 200:
                failed.append(answer.status)
        conn.close()

    threads = [threading.Thread(target=connection, args=(k,)) for k in range(CONNECTIONS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failed:
        raise RuntimeError(f"{len(failed)} requests were not answered 200 (first: {failed[0]})")


def _control(*args: str) -> None:
    subprocess.run(["callgrind_control", *args], check=True, capture_output=True)


def counted(
    pid: int, port: int, out: Path, cases: dict[str, Case], tokens: dict[str, str], requests: int, reps: int
) -> dict[str, list[float]]:
    """Ir per request of each case, one value per window."""
    for paths, caller in cases.values():
        load(port, paths, tokens[caller] if caller else None, 300)  # grants compile their SQL, the writer starts
    names: list[str] = []
    for _ in range(reps):
        for name, (paths, caller) in cases.items():
            _control("-z", str(pid))
            _control("-i", "on", str(pid))
            load(port, paths, tokens[caller] if caller else None, requests)
            _control("-i", "off", str(pid))
            _control("-d", name, str(pid))
            names.append(name)
    time.sleep(1)
    dumps = sorted(out.glob(f"*.{pid}.*"), key=lambda dump: int(dump.suffix[1:]))  # callgrind's numbered dumps
    result: dict[str, list[float]] = {}
    for name, dump in zip(names, dumps, strict=True):
        totals = next(line for line in dump.read_text().splitlines() if line.startswith("totals:"))
        result.setdefault(name, []).append(int(totals.split()[1]) / requests)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--members", type=int, default=300)
    parser.add_argument("--requests", type=int, default=1500, help="Requests per window.")
    parser.add_argument("--reps", type=int, default=3, help="Windows per case.")
    parser.add_argument("--tree", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument(
        "--keep", type=Path, help="Keep the windows' callgrind dumps in this directory (for callgrind_annotate)."
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as work:
        db, out = Path(work) / "gateway.db", args.keep or Path(work)
        out.mkdir(parents=True, exist_ok=True)
        settings = Settings(database_url=f"sqlite:///{db}", sqlite_synchronous="NORMAL", log_level="warning")
        ctx = build_context(settings)
        seed(ctx, args.members)
        visible = [n for n in range(args.members) if n % len(PROVIDERS) == 0]
        patient = f"m-{visible[0]}"
        tokens = {
            "plan": issue(ctx, settings, organization="calop", scope="system/*.rs"),
            "provider": issue(ctx, settings, organization=PROVIDERS[0], scope="system/*.rs"),
            "patient": issue(ctx, settings, organization=PROVIDERS[0], scope="patient/*.rs", patient=patient),
        }
        with ctx.repo.engine.begin() as conn:  # valgrind is slow: the tokens outlive the run
            conn.execute(update(smart_access_token).values(expires_at=int(time.time()) + 86_400))
        rng = random.Random(5)
        members = [
            f"/fhir/Condition/{c}"
            for n in rng.sample(visible, min(50, len(visible)))
            for c in condition_ids(ctx, f"m-{n}")
        ]
        own = [f"/fhir/Condition/{c}" for c in condition_ids(ctx, patient)]
        ctx.repo.engine.dispose()
        results: dict[str, list[float]] = {}
        with served(args.tree, db, out, auth=False) as (pid, port):
            cases: dict[str, Case] = {"none": (members, None), "none-own": (own, None)}
            results.update(counted(pid, port, out, cases, tokens, args.requests, args.reps))
        with served(args.tree, db, out, auth=True) as (pid, port):
            cases = {"plan": (members, "plan"), "provider": (members, "provider"), "patient": (own, "patient")}
            results.update(counted(pid, port, out, cases, tokens, args.requests, args.reps))
    print(f"served reads, callgrind Ir per request (median of {args.reps} windows of {args.requests}; min-max)")
    for name, values in results.items():
        base = statistics.median(results["none-own" if name == "patient" else "none"])
        median = statistics.median(values)
        extra = "" if name.startswith("none") else f"  +{(median - base) / 1000:.1f}k over no token"
        print(f"{name:9} {median / 1000:8.1f}k  ({min(values) / 1000:.1f}-{max(values) / 1000:.1f}k){extra}")


if __name__ == "__main__":
    main()
