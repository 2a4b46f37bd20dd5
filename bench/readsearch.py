"""Read and search benchmarks at scale: load the store in-process, then for each worker count serve it
with the gateway and with the bare ASGI app (same uvicorn, same workers, same file) and drive both with
the same load generator and the same paths, alternating runs; the median of the repeats is reported."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from bench import search, servers
from bench.data import FAMILY_SIZE, Generator
from bench.inprocess import LoadResult as StoreLoad
from bench.inprocess import load, open_context
from bench.loadgen import Call, LoadResult, LoadSpec, run_load
from bench.plan import Plan
from bench.report import READ, SEARCH, Figure

READ_HEADERS = {"Accept": "application/fhir+json"}
LIMIT_READ = "bare ASGI route: SELECT body by (type, id) on the same file, same uvicorn workers"
LIMIT_SEARCH = "bare ASGI route: hand-written SQL on the same index tables, same Bundle splicing"


def load_store(plan: Plan) -> tuple[Path, StoreLoad]:
    """The store of ``plan.resources`` resources (transactions of 1000 in-process, synchronous=NORMAL)."""
    db_path = plan.workdir / "search" / "store.db"
    db_path.parent.mkdir(parents=True, exist_ok=True)
    ctx = open_context(db_path, synchronous="NORMAL")
    try:
        loaded = load(ctx, Generator(seed=plan.seed), plan.resources, entries=1000)
    finally:
        ctx.repo.engine.dispose()
    return db_path, loaded


def _median_run(plan: Plan, runs: list[tuple[str, list[str]]], connections: int) -> list[LoadResult]:
    """Run each (origin, paths) in turn, ``plan.repeats`` rounds; the median-rate result of each."""
    results: list[list[LoadResult]] = [[] for _ in runs]
    for _ in range(plan.repeats):
        for k, (origin, paths) in enumerate(runs):
            spec = LoadSpec(origin, [Call("GET", p) for p in paths], READ_HEADERS, connections, 1, plan.seconds)
            results[k].append(run_load(spec, plan.tool))
    return [_median(r) for r in results]


def _median(results: list[LoadResult]) -> LoadResult:
    ordered = sorted(results, key=lambda r: r.per_second)
    return ordered[len(ordered) // 2]


def run_reads_and_searches(plan: Plan, db_path: Path, families: int, progress: Callable[[str], None]) -> list[Figure]:
    """Read and search figures for every worker count of ``plan``."""
    reads = search.read_pool(db_path, count=plan.read_ids, seed=plan.seed)
    queries = search.query_pool(db_path, families=families, per_kind=plan.queries_per_kind, seed=plan.seed)
    stored = families * FAMILY_SIZE
    figures: list[Figure] = []
    for workers in plan.workers:
        log_dir = db_path.parent
        with (
            servers.gateway(db_path, workers=workers, synchronous="FULL", log_dir=log_dir) as gateway,
            servers.bare(db_path, workers=workers, log_dir=log_dir) as bare,
        ):
            progress(f"reads, {workers} worker(s)")
            mine, limit = _median_run(plan, [(gateway, reads), (bare, reads)], plan.connections)
            figures.append(
                Figure(
                    name=f"read, {workers} worker(s), {stored:,} stored",
                    unit="/s",
                    value=mine.per_second,
                    limit=limit.per_second,
                    limit_name=LIMIT_READ,
                    target=READ,
                    p95_ms=mine.p95_ms,
                    limit_p95_ms=limit.p95_ms,
                    details={"gateway": mine.as_json(), "limit": limit.as_json(), "ids": len(reads)},
                )
            )
            checks = search.compare(gateway, bare, queries)
            for kind in search.KINDS:
                progress(f"search {kind}, {workers} worker(s)")
                figures += _search_figures(plan, kind, workers, stored, gateway, bare, queries[kind], checks[kind])
    return figures


def _search_figures(
    plan: Plan,
    kind: str,
    workers: int,
    stored: int,
    gateway: str,
    bare: str,
    paths: list[str],
    check: dict[str, float],
) -> list[Figure]:
    mine, limit = _median_run(plan, [(gateway, paths), (bare, paths)], plan.connections)
    details: dict[str, object] = {
        "query": search.DESCRIPTIONS[kind],
        "gateway": mine.as_json(),
        "limit": limit.as_json(),
        "page": check,
        "connections": plan.connections,
    }
    figures = [
        Figure(
            name=f"search {kind}, {workers} worker(s), {stored:,} stored",
            unit="/s",
            value=mine.per_second,
            limit=limit.per_second,
            limit_name=LIMIT_SEARCH,
            target=SEARCH,
            p95_ms=mine.p95_ms,
            limit_p95_ms=limit.p95_ms,
            details=details,
        )
    ]
    if plan.latency_runs:
        alone, alone_limit = _median_run(plan, [(gateway, paths), (bare, paths)], 1)
        figures.append(
            Figure(
                name=f"search {kind}, {workers} worker(s), 1 connection",
                unit="/s",
                value=alone.per_second,
                limit=alone_limit.per_second,
                limit_name=LIMIT_SEARCH,
                target=SEARCH,
                p95_ms=alone.p95_ms,
                limit_p95_ms=alone_limit.p95_ms,
                details={**details, "gateway": alone.as_json(), "limit": alone_limit.as_json(), "connections": 1},
            )
        )
    return figures
