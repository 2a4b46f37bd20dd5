"""The FHIR core benchmarks on PostgreSQL next to SQLite: ``python -m bench.postgres [--resources N] [--quick]``.

One run on one machine, both databases: a PostgreSQL 15 cluster started by the bench (durable settings,
see ``bench.pgsupport``) and a SQLite file (the gateway's defaults: WAL, synchronous=FULL).

- transaction ingest over HTTP: Bundles of 1000 entries posted one after another to one gateway process,
  and by 4 clients at once to as many gateway processes as the reads use at most (a bulk loader's way),
  into the empty store and again into the full one (after the in-process load), so a growing store's
  cost shows;
- bulk ingest in-process: the same 1000-entry transactions through ``gateway.fhir.core.dispatch`` (the
  store batches version and index rows with multi-row inserts), next to the raw limit of the same rows
  into the same tables: ``COPY ... FROM STDIN`` on PostgreSQL, ``executemany`` on SQLite (``bench.limits``);
- read and search requests/s and p95 (identifier, subject, date, family, chain, include) with 1, 2 and 4
  gateway worker processes on PostgreSQL, 1 and 2 on SQLite, on a store of ``--resources``;
- single creates/s with 1, 2 and 4 gateway processes writing to one database: SQLite has one writer,
  PostgreSQL many.

Targets (issue 3): transaction ingest on PostgreSQL >= 3,000 resources/s; search p95 < 50 ms at 1M
stored resources (run ``--resources 1000000`` for that; the default is 100k). The table goes to stdout,
every number to ``bench/results/postgres-<UTC time>.json``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import psycopg

from bench import limits
from bench.data import FAMILY_SIZE, Family, Generator, transaction
from bench.inprocess import post_bundle
from bench.loadgen import Call, LoadResult, LoadSpec, Tool, choose_tool, run_load
from bench.machine import machine_info, summary_line, wrk_version
from bench.pgsupport import DurableCluster, copy_transaction, gateway, libpq_url, pools, stored_ids
from bench.report import INGEST, SEARCH, Figure, legend, table, write_json
from bench.writes import WRITE_HEADERS, post_bundles
from gateway.fhir.core import build_context
from gateway.settings import Settings
from gateway.store.database import make_engine
from tests.support.postgres import find_pg_bin

RESULTS = Path(__file__).resolve().parent / "results"
BUNDLE = 1000
INGEST_CLIENTS = 4
"""Clients posting Bundles at once for the concurrent ingest figure (as a bulk loader would)."""
READ_HEADERS = {"Accept": "application/fhir+json"}
KINDS = ("identifier", "subject", "date", "family", "chain", "include")
LIMIT_COPY = "raw COPY FROM STDIN (psycopg cursor.copy) of the same rows into the same tables, 1 tx per 1000"
LIMIT_SQLITE = "raw sqlite3 executemany of the same rows into the same tables, 1 tx per 1000 (bench.limits)"
LIMIT_ONE = "the same database with 1 gateway process (ratio = gain from more processes)"


def _progress(message: str) -> None:
    print(f"[bench.postgres {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class PgPlan:
    """Sizes and configurations of one run."""

    workdir: Path
    tool: Tool = "wrk"
    resources: int = 100_000
    """Stored resources for reads and searches (the HTTP ingest is part of them)."""
    http_ingest: int = 10_000
    """Resources posted over HTTP as Bundles of 1000 (one gateway process)."""
    bulk_compare: int = 20_000
    """Resources of the in-process load timed next to the raw limit (interleaved, Bundle by Bundle)."""
    pg_workers: tuple[int, ...] = (1, 2, 4)
    sqlite_workers: tuple[int, ...] = (1, 2)
    write_workers: tuple[int, ...] = (1, 2, 4)
    seconds: float = 5.0
    connections: int = 8
    write_connections: int = 16
    reads: int = 10_000
    per_kind: int = 500
    create_pool: int = 2000
    seed: int = 20240601
    backends: tuple[str, ...] = ("sqlite", "postgresql")

    @classmethod
    def quick(cls, workdir: Path, *, tool: Tool, resources: int | None = None) -> PgPlan:
        """A smoke run: tiny store, 1-second loads, fewer configurations."""
        return cls(
            workdir=workdir,
            tool=tool,
            resources=resources or 2000,
            http_ingest=1000,
            bulk_compare=1000,
            pg_workers=(1, 2),
            sqlite_workers=(1,),
            write_workers=(1, 2),
            seconds=1.0,
            reads=200,
            per_kind=10,
            create_pool=200,
        )


@dataclass
class Backend:
    """One database under test: how to get a fresh store, and its raw write limit."""

    name: str
    fresh_url: Callable[[str], str]
    limit_writer: Callable[[str], tuple[Callable[[Sequence[limits.Prepared]], None], Callable[[], None]]]
    limit_name: str
    workers: tuple[int, ...]
    facts: dict[str, Any] = field(default_factory=dict)


def _sqlite_backend(plan: PgPlan) -> Backend:
    def fresh(label: str) -> str:
        return f"sqlite:///{plan.workdir / f'{label}.db'}"

    def writer(label: str) -> tuple[Callable[[Sequence[limits.Prepared]], None], Callable[[], None]]:
        path = plan.workdir / f"{label}.db"
        limits.create_store(path)
        conn = limits.connect(path, synchronous="FULL")
        return (lambda batch: limits.insert_transaction(conn, batch)), conn.close

    return Backend("SQLite", fresh, writer, LIMIT_SQLITE, plan.sqlite_workers, {"synchronous": "FULL", "WAL": True})


def _pg_backend(plan: PgPlan, cluster: DurableCluster) -> Backend:
    def fresh(_label: str) -> str:
        return cluster.url(cluster.create_database())

    def writer(_label: str) -> tuple[Callable[[Sequence[limits.Prepared]], None], Callable[[], None]]:
        url = fresh(_label)
        make_engine(url).dispose()  # the gateway's own migrations make the schema
        conn: psycopg.Connection[tuple[object, ...]] = psycopg.connect(libpq_url(url), autocommit=True)
        return (lambda batch: copy_transaction(conn, batch)), conn.close

    facts = {s: cluster.setting(s) for s in ("server_version", "fsync", "synchronous_commit", "shared_buffers")}
    return Backend("PostgreSQL", fresh, writer, LIMIT_COPY, plan.pg_workers, facts)


def _bundles(generator: Generator, resources: int) -> list[list[Family]]:
    per = BUNDLE // FAMILY_SIZE
    families = max(1, resources // FAMILY_SIZE)
    return [generator.families(min(per, families - k)) for k in range(0, families, per)]


def http_bundles_at(generator: Generator, plan: PgPlan) -> list[list[Family]]:
    """The Bundles of one HTTP ingest run (``plan.http_ingest`` resources, at most a quarter of the store)."""
    return _bundles(generator, min(plan.http_ingest, plan.resources // 4))


def _http_ingest(origin: str, bundles: list[list[Family]], clients: int = 1) -> tuple[int, float]:
    bodies = [orjson.dumps(transaction(b)) for b in bundles]
    spent = post_bundles(origin, bodies, clients)
    return sum(len(b) for b in bundles) * FAMILY_SIZE, spent


def _load(plan: PgPlan, backend: Backend, url: str, bundles: list[list[Family]]) -> dict[str, float]:
    """Load ``bundles`` in-process through ``dispatch``; the first ``plan.bulk_compare`` resources
    alternate Bundle by Bundle with the raw limit into a twin database, so both grow alike."""
    ctx = build_context(Settings(database_url=url))
    write_limit, close = backend.limit_writer("bulk-limit")
    compared = mine = theirs = total = 0.0
    try:
        for families in bundles:
            body = orjson.dumps(transaction(families))
            started = time.perf_counter()
            post_bundle(ctx, body)
            spent = time.perf_counter() - started
            total += spent
            count = len(families) * FAMILY_SIZE
            if compared < plan.bulk_compare:
                prepared = limits.prepare_families(families)
                started = time.perf_counter()
                write_limit(prepared)
                theirs += time.perf_counter() - started
                mine += spent
                compared += count
    finally:
        close()
        ctx.repo.engine.dispose()
    loaded = sum(len(b) for b in bundles) * FAMILY_SIZE
    return {
        "resources": loaded,
        "seconds": total,
        "per_second": loaded / total if total else 0.0,
        "compared_resources": compared,
        "gateway_per_second": compared / mine if mine else 0.0,
        "limit_per_second": compared / theirs if theirs else 0.0,
    }


def _run(plan: PgPlan, origin: str, calls: list[Call], headers: dict[str, str], connections: int) -> LoadResult:
    return run_load(LoadSpec(origin, calls, headers, connections, 1, plan.seconds), plan.tool)


def _figure(name: str, result: LoadResult, target: Any, limit: float | None = None, limit_name: str = "") -> Figure:
    return Figure(
        name=name,
        unit="/s",
        value=result.per_second,
        limit=limit,
        limit_name=limit_name,
        target=target,
        p95_ms=result.p95_ms,
        details={"load": result.as_json()},
    )


def measure(plan: PgPlan, backend: Backend) -> list[Figure]:
    """Every figure of one backend."""
    name = backend.name
    figures: list[Figure] = []
    generator = Generator(seed=plan.seed)
    url = backend.fresh_url("store")
    http_bundles = http_bundles_at(generator, plan)
    _progress(f"{name}: HTTP transaction ingest, {len(http_bundles)} Bundles of {BUNDLE}, 1 process")
    with gateway(url, workers=1, log_dir=plan.workdir) as origin:
        posted, seconds = _http_ingest(origin, http_bundles)
    together = http_bundles_at(generator, plan)
    workers, clients = max(backend.workers), INGEST_CLIENTS
    _progress(f"{name}: HTTP transaction ingest, {len(together)} Bundles, {workers} processes, {clients} clients")
    with gateway(url, workers=workers, log_dir=plan.workdir) as origin:
        posted_together, seconds_together = _http_ingest(origin, together, clients)
    rest = plan.resources - (posted + posted_together)
    _progress(f"{name}: in-process load of {max(rest, 0):,} more resources (transactions of {BUNDLE})")
    load = _load(plan, backend, url, _bundles(generator, rest)) if rest > 0 else {}
    limit_rate = load.get("limit_per_second")
    runs = [("", 1, 1, posted, seconds), ("", workers, clients, posted_together, seconds_together)]
    if load:  # the same two ingests again, into the full store: does ingest hold as the indexes grow?
        full = generator.next_number * FAMILY_SIZE
        for processes, senders in ((1, 1), (workers, clients)):
            _progress(
                f"{name}: HTTP transaction ingest at {full:,} stored, {processes} process(es), {senders} client(s)"
            )
            with gateway(url, workers=processes, log_dir=plan.workdir) as origin:
                runs.append(
                    (
                        f" at {full:,} stored",
                        processes,
                        senders,
                        *_http_ingest(origin, http_bundles_at(generator, plan), senders),
                    )
                )
    for where, processes, senders, count, spent in runs:
        how = "1 process" if processes == 1 and senders == 1 else f"{processes} processes, {senders} clients"
        figures.append(
            Figure(
                f"transaction ingest over HTTP{where}, {BUNDLE}/Bundle, {how} [{name}]",
                "res/s",
                count / spent,
                limit_rate,
                backend.limit_name,
                INGEST,
                details={"resources": count, "seconds": spent},
            )
        )
    if load:
        figures.append(
            Figure(
                f"bulk ingest in-process (dispatch), {BUNDLE}-entry tx [{name}]",
                "res/s",
                load["gateway_per_second"],
                limit_rate,
                backend.limit_name,
                INGEST,
                details=load,
            )
        )
    stored = generator.next_number * FAMILY_SIZE
    backend.facts["stored_resources"] = stored
    reads, queries = pools(
        stored_ids(url), families=generator.next_number, reads=plan.reads, per_kind=plan.per_kind, seed=plan.seed
    )
    for workers in backend.workers:
        with gateway(url, workers=workers, log_dir=plan.workdir) as origin:
            _progress(f"{name}: reads and searches, {workers} worker process(es), {stored:,} stored")
            calls = [Call("GET", p) for p in reads]
            figures.append(
                _figure(f"read, {workers}w [{name}]", _run(plan, origin, calls, READ_HEADERS, plan.connections), None)
            )
            for kind in KINDS:
                calls = [Call("GET", p) for p in queries[kind]]
                result = _run(plan, origin, calls, READ_HEADERS, plan.connections)
                figures.append(_figure(f"search {kind}, {workers}w [{name}]", result, SEARCH))
    figures += _write_scaling(plan, backend)
    return figures


def _write_scaling(plan: PgPlan, backend: Backend) -> list[Figure]:
    """Single creates/s with N gateway processes writing to one fresh database each time."""
    pool = Generator(seed=plan.seed + 1).single_creates(plan.create_pool)
    calls = [Call("POST", f"/fhir/{t}", orjson.dumps(r)) for t, r in pool]
    figures: list[Figure] = []
    baseline: float | None = None
    for workers in plan.write_workers:
        url = backend.fresh_url(f"creates-{workers}")
        with gateway(url, workers=workers, log_dir=plan.workdir) as origin:
            _progress(f"{backend.name}: single creates, {workers} process(es), {plan.write_connections} connections")
            result = _run(plan, origin, calls, WRITE_HEADERS, plan.write_connections)
        baseline = baseline or result.per_second
        figures.append(
            _figure(f"single create, {workers} process(es) [{backend.name}]", result, None, baseline, LIMIT_ONE)
        )
    return figures


def side_by_side(figures: list[Figure], backends: list[Backend]) -> str:
    """Reads, searches and creates per worker count, SQLite and PostgreSQL in adjacent columns."""
    columns = [(b.name, w) for b in backends for w in sorted({*b.workers, *plan_write_workers(figures, b.name)})]
    cells: dict[tuple[str, str, int], str] = {}
    rows: list[str] = []
    for fig in figures:
        if "w [" not in fig.name and "process(es) [" not in fig.name:
            continue
        label, _, rest = fig.name.partition(", ")
        count = int(rest.split("w", 1)[0].split(" ", 1)[0])
        backend = rest.rsplit("[", 1)[1].rstrip("]")
        if label not in rows:
            rows.append(label)
        text = f"{fig.value:,.0f}"
        if fig.p95_ms is not None:
            text += f" / {fig.p95_ms:.0f}"
        errors = int(fig.details.get("load", {}).get("errors", 0))
        cells[(label, backend, count)] = text + (f" ({errors} err)" if errors else "")
    header = ["req/s / p95 ms", *[f"{'PG' if n == 'PostgreSQL' else n} {w}p" for n, w in columns]]
    table_rows = [header] + [[r, *[cells.get((r, n, w), "") for n, w in columns]] for r in rows]
    widths = [max(len(row[i]) for row in table_rows) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        for r in table_rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def plan_write_workers(figures: list[Figure], backend: str) -> set[int]:
    """Process counts of the single-create figures of ``backend``."""
    found = set()
    for fig in figures:
        if fig.name.startswith("single create, ") and fig.name.endswith(f"[{backend}]"):
            found.add(int(fig.name.split(", ", 1)[1].split(" ", 1)[0]))
    return found


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog="python -m bench.postgres", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run (tiny store, 1-second loads)")
    parser.add_argument("--resources", type=int, default=None, help="stored resources for reads/searches (100000)")
    parser.add_argument("--seconds", type=float, default=None, help="duration of each load run (5)")
    parser.add_argument("--pg-workers", default=None, help="gateway processes for PostgreSQL reads/searches (1,2,4)")
    parser.add_argument("--sqlite-workers", default=None, help="gateway processes for SQLite reads/searches (1,2)")
    parser.add_argument("--write-workers", default=None, help="gateway processes for the create scaling (1,2,4)")
    parser.add_argument("--only", choices=("both", "postgresql", "sqlite"), default="both")
    parser.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument(
        "--output", type=Path, default=None, help="results JSON (default bench/results/postgres-DATE.json)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run, print the tables, write the JSON; exit 0 (targets are reported, not enforced), 2 without PostgreSQL."""
    args = parse_args(argv)
    bin_dir = find_pg_bin()
    if bin_dir is None and args.only != "sqlite":
        print("PostgreSQL (initdb) not found: install postgresql-15 or set CALAIM_PG_BIN", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="calaim-bench-pg-"))
    tool = choose_tool(args.loadgen)
    plan = PgPlan.quick(workdir, tool=tool, resources=args.resources) if args.quick else PgPlan(workdir, tool=tool)
    if args.resources and not args.quick:
        plan.resources = args.resources
    if args.seconds:
        plan.seconds = args.seconds
    for option in ("pg_workers", "sqlite_workers", "write_workers"):
        if getattr(args, option):
            setattr(plan, option, tuple(int(w) for w in getattr(args, option).split(",")))
    cluster = DurableCluster(bin_dir).start() if bin_dir is not None and args.only != "sqlite" else None
    started = time.perf_counter()
    backends: list[Backend] = []
    figures: list[Figure] = []
    try:
        if args.only in ("both", "sqlite"):
            backends.append(_sqlite_backend(plan))
        if cluster is not None:
            backends.append(_pg_backend(plan, cluster))
        for backend in backends:
            figures += measure(plan, backend)
    finally:
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    elapsed = time.perf_counter() - started
    info = machine_info()
    load_tool = f"wrk ({wrk_version()})" if plan.tool == "wrk" else "Python asyncio client (wrk not available)"
    print(f"PostgreSQL vs SQLite benchmark  {summary_line(info)}")
    print(f"command: python -m bench.postgres {' '.join(argv if argv is not None else sys.argv[1:])}".rstrip())
    for backend in backends:
        print(f"  {backend.name}: {', '.join(f'{k}={v}' for k, v in backend.facts.items())}")
    print(
        f"load generator: {load_tool}, {plan.connections} connections for reads/searches, "
        f"{plan.write_connections} for creates, {plan.seconds:g} s per run; Np = N gateway worker processes"
    )
    print()
    print(side_by_side(figures, backends))
    print()
    print(table(figures))
    print()
    print(legend(figures))
    failed = [f.name for f in figures if f.passed is False]
    print(f"\n{len(figures) - len(failed)} of {len(figures)} figures meet their target; finished in {elapsed:.0f} s")
    if plan.resources < 1_000_000:
        print(
            f"search target is stated at 1M stored resources; this run stored {plan.resources:,}: "
            "python -m bench.postgres --resources 1000000 --only postgresql"
        )
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    output = args.output or RESULTS / f"postgres-{stamp}{'-quick' if args.quick else ''}.json"
    plan_json = {k: v for k, v in vars(plan).items() if k != "workdir"}
    payload = {"machine": info, "plan": plan_json, "backends": {b.name: b.facts for b in backends}, "seconds": elapsed}
    write_json(output, payload, figures)
    print(f"results: {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
