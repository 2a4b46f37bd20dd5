"""The FHIR-core benchmark: ``python -m bench.core [--quick] [--resources 100000]``.

Measures on this machine, in one run, and prints every figure next to its limit measured in the same
run: single creates/s and transaction ingest resources/s next to the same SQLite inserts without the
gateway (``bench.limits``); read and search requests/s next to the same stored bytes served by a bare
ASGI route (``bench.bare_app``). Targets (issue "FHIR-core benchmarks", 2-core machine): ingest
>= 3,000 resources/s, read >= 70 % of its limit, search p95 < 50 ms at 100k resources, single
create >= 600/s. The table goes to stdout; every number and the machine facts to bench/results/.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import readsearch, writes
from bench.data import FAMILY_SIZE
from bench.loadgen import choose_tool
from bench.machine import machine_info, summary_line, wrk_version
from bench.plan import Plan
from bench.report import Figure, legend, table, write_json

RESULTS = Path(__file__).resolve().parent / "results"


def _progress(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.core", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--quick", action="store_true", help="reduced run (< ~1 min) for smoke testing")
    parser.add_argument("--resources", type=int, default=None, help="stored resources for read/search (default 100000)")
    parser.add_argument("--seconds", type=float, default=None, help="duration of each load run")
    parser.add_argument("--workers", default=None, help="uvicorn worker counts for read/search, e.g. 1,2")
    parser.add_argument("--write-workers", type=int, default=None, help="uvicorn workers for the writes (default 1)")
    parser.add_argument(
        "--ingest-stored", type=int, default=None, help="resources stored before each write run (default 100000)"
    )
    parser.add_argument("--ingest-clients", default=None, help="clients posting ingest Bundles at once, e.g. 1,4")
    parser.add_argument("--synchronous", default=None, help="SQLite synchronous modes for writes, e.g. FULL,NORMAL")
    parser.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--only", choices=("all", "writes", "reads"), default="all", help="run a part only")
    parser.add_argument("--output", type=Path, default=None, help="results JSON (default bench/results/core-DATE.json)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary databases")
    return parser.parse_args(argv)


def make_plan(args: argparse.Namespace, workdir: Path) -> Plan:
    """The plan for ``args`` (``--quick`` or the full run, with overrides)."""
    tool = choose_tool(args.loadgen)
    plan = Plan.quick(workdir, tool=tool, resources=args.resources) if args.quick else Plan(workdir, tool=tool)
    if args.resources and not args.quick:
        plan.resources = args.resources
    if args.seconds:
        plan.seconds = args.seconds
    if args.workers:
        plan.workers = tuple(int(w) for w in args.workers.split(","))
    if args.write_workers:
        plan.write_workers = args.write_workers
    if args.ingest_stored is not None:
        plan.ingest_stored = args.ingest_stored
    if args.ingest_clients:
        plan.ingest_clients = tuple(int(c) for c in args.ingest_clients.split(","))
    if args.synchronous:
        plan.synchronous = tuple(s.strip().upper() for s in args.synchronous.split(","))
    return plan


def run(plan: Plan, only: str = "all") -> tuple[list[Figure], dict[str, Any]]:
    """Every figure of ``plan`` and the facts of the run (sizes, in-process load rate)."""
    figures: list[Figure] = []
    facts: dict[str, Any] = {}
    if only in ("all", "writes"):
        _progress(f"writes: loading {plan.ingest_stored:,} resources for the gateway and the limit")
        stored = writes.stored_files(plan, plan.workdir / "writes-stored")
        for mode in plan.synchronous:
            _progress(
                f"writes, synchronous={mode}: single creates, then Bundles of {plan.bundle_sizes},"
                " each run on a copy of the stored files"
            )
            figures += writes.run_writes(plan, mode, stored)
    if only in ("all", "reads"):
        _progress(f"loading {plan.resources:,} resources in-process (transactions of 1000)")
        db_path, loaded = readsearch.load_store(plan)
        facts["store_load"] = {
            "resources": loaded.resources,
            "seconds": loaded.seconds,
            "per_second_in_process": loaded.per_second,
            "database_bytes": db_path.stat().st_size,
        }
        _progress(f"loaded {loaded.resources:,} in {loaded.seconds:.1f} s ({loaded.per_second:,.0f}/s in-process)")
        figures += readsearch.run_reads_and_searches(plan, db_path, loaded.resources // FAMILY_SIZE, _progress)
    return figures, facts


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the table, write the JSON results; exit 0 (targets are reported, not enforced)."""
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="calaim-bench-"))
    try:
        plan = make_plan(args, workdir)
        info = machine_info()
        started = time.perf_counter()
        figures, facts = run(plan, args.only)
        elapsed = time.perf_counter() - started
        facts["load_average_at_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    tool = f"wrk ({wrk_version()})" if plan.tool == "wrk" else "Python asyncio client (wrk not available)"
    print(f"FHIR core benchmark  {summary_line(info)}")
    print(f"command: python -m bench.core {' '.join(argv if argv is not None else sys.argv[1:])}".rstrip())
    print(
        f"load generator: {tool}, {plan.connections} connections, {plan.seconds:g} s per run, "
        f"median of {plan.repeats} alternating runs for read/search"
    )
    if "store_load" in facts:
        load = facts["store_load"]
        print(
            f"search store: {load['resources']:,} resources loaded in-process at {load['per_second_in_process']:,.0f}/s"
        )
    print()
    print(table(figures))
    print()
    print(legend(figures))
    failed = [f.name for f in figures if f.passed is False]
    print(f"\n{len(figures) - len(failed)} of {len(figures)} figures meet their target; finished in {elapsed:.0f} s")
    if facts.get("load_average_at_end"):
        print(
            f"load average at the end: {facts['load_average_at_end'][0]:.2f} (other work on the machine skews figures)"
        )
    output = (
        args.output
        or RESULTS / f"core-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}{'-quick' if args.quick else ''}.json"
    )
    payload = {"machine": info, "plan": _plan_json(plan), "facts": facts, "seconds": elapsed, "load_generator": tool}
    write_json(output, payload, figures)
    print(f"results: {output}")
    return 0


def _plan_json(plan: Plan) -> dict[str, Any]:
    return {k: v for k, v in vars(plan).items() if k != "workdir"}


if __name__ == "__main__":
    raise SystemExit(main())
