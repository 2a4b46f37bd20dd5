"""Write benchmarks: single creates (``POST [type]`` under the load generator) and transaction ingest
(Bundles of 100, 500 and 1000 entries with ``Prefer: return=minimal``, posted one after another by one
client and by several clients at once), each next to the raw SQLite insert of the same bytes and index
rows (``bench.limits``, one transaction after another: SQLite has one writer).

Every figure is measured on a store that already holds ``plan.ingest_stored`` resources (the issue's
"at 100k stored resources"): the gateway's file and the limit's are loaded once with the same families
(the gateway's through the core in-process, the limit's by its raw inserts), and each run starts from a
copy of them, so a figure does not depend on what the runs before it stored (the cost of an insert grows
with the value indexes: docs/performance.md, session 11)."""

from __future__ import annotations

import shutil
import sqlite3
import statistics
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import cycle, islice
from pathlib import Path

import httpx
import orjson

from bench import limits, servers
from bench.data import FAMILY_SIZE, Family, Generator, Json, transaction
from bench.inprocess import load, open_context
from bench.loadgen import Call, LoadResult, LoadSpec, run_load
from bench.plan import Plan
from bench.report import INGEST, SINGLE_CREATE, Figure

WRITE_HEADERS = {"Accept": "application/fhir+json", "Content-Type": "application/fhir+json", "Prefer": "return=minimal"}
LIMIT_SINGLE = "raw sqlite3 insert of the same bytes + index rows, 1 transaction per resource"
LIMIT_BUNDLE = "raw sqlite3 insert of the same bytes + index rows, 1 transaction per Bundle"
MAX_LIMIT_CREATES = 20_000
WARM_UP_BUNDLES = 2
"""Bundles posted to a freshly started gateway (and written to the limit's copy) before a timed run."""


def post_bundles(origin: str, bodies: list[bytes], clients: int = 1) -> float:
    """Seconds to POST ``bodies``: one after another with one client, else ``clients`` clients at once,
    each taking the next Bundle when its last one is answered."""
    pending = iter(bodies)
    lock = threading.Lock()

    def client() -> None:
        with httpx.Client(base_url=origin, headers=WRITE_HEADERS, timeout=300) as http:
            while True:
                with lock:
                    body = next(pending, None)
                if body is None:
                    return
                answer = http.post("/fhir", content=body)
                if answer.status_code != 200:
                    raise RuntimeError(f"transaction answered {answer.status_code}: {answer.text[:300]}")

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as threads:
        for done in [threads.submit(client) for _ in range(clients)]:
            done.result()
    return time.perf_counter() - started


def _chunks(families: list[Family], size: int) -> list[list[Family]]:
    per = max(1, size // FAMILY_SIZE)
    return [families[i : i + per] for i in range(0, len(families), per)]


def _families_per_repeat(plan: Plan, size: int) -> int:
    """Families posted per repeat for Bundles of ``size``: whole Bundles only."""
    per = max(1, size // FAMILY_SIZE)
    wanted = plan.ingest_resources // max(1, plan.repeats) // FAMILY_SIZE
    return max(per, wanted // per * per)


def _median_by(values: list[float]) -> int:
    """Index of the median of ``values``."""
    order = sorted(range(len(values)), key=values.__getitem__)
    return order[len(order) // 2]


def run_writes(plan: Plan, synchronous: str, stored: StoredFiles) -> list[Figure]:
    """Single-create and ingest figures for one ``PRAGMA synchronous`` mode.

    The gateway (``plan.write_workers`` uvicorn workers, default one) and the limit take turns, step by
    step and ``plan.repeats`` times, each on its own copy of ``stored`` (module docstring), so both
    see the same store size and the same moments of a noisy machine; the medians are reported."""
    folder = plan.workdir / f"writes-{synchronous.lower()}"
    folder.mkdir(parents=True, exist_ok=True)
    generator = Generator(seed=plan.seed + 1)
    pool = generator.single_creates(plan.create_pool)
    calls = [Call("POST", f"/fhir/{res_type}", orjson.dumps(res)) for res_type, res in pool]
    rounds = {
        size: [generator.families(_families_per_repeat(plan, size)) for _ in range(plan.repeats)]
        for size in plan.bundle_sizes
    }
    warm_up = {size: generator.families(WARM_UP_BUNDLES * max(1, size // FAMILY_SIZE)) for size in plan.bundle_sizes}
    creates: list[LoadResult] = []
    create_limits: list[float] = []
    ingest: dict[tuple[int, int], list[tuple[int, float, float]]] = {
        (size, clients): [] for size in plan.bundle_sizes for clients in plan.ingest_clients
    }
    singles_dir = folder / "singles"
    with _copies(stored, singles_dir, synchronous) as conn, _gateway(plan, singles_dir, synchronous) as origin:
        spec = LoadSpec(origin, calls, WRITE_HEADERS, plan.connections, 1, plan.seconds)
        for _ in range(plan.repeats):
            creates.append(run_load(spec, plan.tool))
            count = max(1, min(creates[-1].requests, MAX_LIMIT_CREATES))
            singles = [[limits.prepare(res)] for _, res in islice(cycle(pool), count)]  # fresh ids, not timed
            create_limits.append(count / limits.timed_inserts(conn, singles))
    for size in plan.bundle_sizes:
        for repeat, families in enumerate(rounds[size]):
            run_dir = folder / f"ingest-{size}-{repeat}"
            with _copies(stored, run_dir, synchronous) as conn, _gateway(plan, run_dir, synchronous) as origin:
                warm = _chunks(warm_up[size], size)
                post_bundles(origin, [orjson.dumps(transaction(c)) for c in warm], 1)
                limits.timed_inserts(conn, [limits.prepare_families(c) for c in warm])
                for clients in plan.ingest_clients[:: 1 if repeat % 2 == 0 else -1]:  # alternate the order
                    chunks = _chunks(families, size)
                    mine = post_bundles(origin, [orjson.dumps(transaction(c)) for c in chunks], clients)
                    theirs = limits.timed_inserts(conn, [limits.prepare_families(c) for c in chunks])
                    ingest[size, clients].append((len(families) * FAMILY_SIZE, mine, theirs))
    rates = [r.per_second for r in creates]
    median = creates[_median_by(rates)]
    figures = [_single_figure(synchronous, median, statistics.median(create_limits), pool, plan)]
    for (size, clients), runs in ingest.items():
        figures.append(
            Figure(
                name=f"transaction ingest, {size}/Bundle{_clients_note(clients)}, sync={synchronous}"
                f"{_workers_note(plan.write_workers)}",
                unit="res/s",
                value=statistics.median(n / mine for n, mine, _ in runs),
                limit=statistics.median(n / theirs for n, _, theirs in runs),
                limit_name=LIMIT_BUNDLE,
                target=INGEST,
                details={
                    "stored_before": stored.resources,
                    "runs": [{"resources": n, "seconds": mine, "limit_seconds": theirs} for n, mine, theirs in runs],
                },
            )
        )
    return figures


@dataclass(frozen=True)
class StoredFiles:
    """The gateway's and the limit's SQLite files, each holding the same ``resources`` families."""

    gateway: Path
    limit: Path
    resources: int


def stored_files(plan: Plan, folder: Path) -> StoredFiles:
    """Load ``plan.ingest_stored`` resources into a gateway file (through the core in-process, transactions
    of 1000, synchronous=NORMAL as ``bench.readsearch`` loads) and the same families into a limit file (its
    raw inserts, 200 families at a time as ``load`` draws them); both checkpointed, so a copy of the main
    file is the whole store. ``bench.core`` loads them once for every synchronous mode."""
    gateway_file, limit_file = folder / "gateway.db", folder / "limit.db"
    folder.mkdir(parents=True, exist_ok=True)
    ctx = open_context(gateway_file, synchronous="NORMAL")
    try:
        loaded = load(ctx, Generator(seed=plan.seed + 2), plan.ingest_stored, entries=1000).resources
    finally:
        ctx.repo.engine.dispose()
    limits.create_store(limit_file)
    conn = limits.connect(limit_file, synchronous="NORMAL")
    try:
        generator, left = Generator(seed=plan.seed + 2), loaded // FAMILY_SIZE
        while left > 0:
            chunk = generator.families(min(1000 // FAMILY_SIZE, left))
            limits.insert_transaction(conn, limits.prepare_families(chunk))
            left -= len(chunk)
    finally:
        conn.close()
    for path in (gateway_file, limit_file):
        _checkpoint(path)
    return StoredFiles(gateway_file, limit_file, loaded)


def _checkpoint(path: Path) -> None:
    """Copy the whole write-ahead log of ``path`` into the main file and empty it."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    finally:
        conn.close()


@contextmanager
def _copies(stored: StoredFiles, run_dir: Path, synchronous: str) -> Iterator[sqlite3.Connection]:
    """Fresh copies of the stored files in ``run_dir`` (``gateway.db``, ``limit.db``); a connection to
    the limit's; the copies are deleted afterwards (a run's files are up to a few GB)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(stored.gateway, run_dir / "gateway.db")
    shutil.copyfile(stored.limit, run_dir / "limit.db")
    conn = limits.connect(run_dir / "limit.db", synchronous=synchronous)
    try:
        yield conn
    finally:
        conn.close()
        for path in run_dir.glob("*.db*"):
            path.unlink()


@contextmanager
def _gateway(plan: Plan, run_dir: Path, synchronous: str) -> Iterator[str]:
    """The gateway served on ``run_dir / "gateway.db"``; its origin."""
    with servers.gateway(
        run_dir / "gateway.db", workers=plan.write_workers, synchronous=synchronous, log_dir=run_dir
    ) as origin:
        yield origin


def _clients_note(clients: int) -> str:
    return f", {clients} clients" if clients > 1 else ""


def _workers_note(workers: int) -> str:
    return f", {workers} workers" if workers > 1 else ""


def _single_figure(
    synchronous: str, creates: LoadResult, limit_rate: float, pool: list[tuple[str, Json]], plan: Plan
) -> Figure:
    prepared = [limits.prepare(res) for _, res in pool[:200]]
    return Figure(
        name=f"single create, sync={synchronous}{_workers_note(plan.write_workers)}",
        unit="/s",
        value=creates.per_second,
        limit=limit_rate,
        limit_name=LIMIT_SINGLE,
        target=SINGLE_CREATE,
        p95_ms=creates.p95_ms,
        details={
            "stored_before": plan.ingest_stored,
            "load": creates.as_json(),
            "index_rows_per_resource": sum(p.row_count for p in prepared) / len(prepared),
            "bytes_per_resource": sum(len(p.body) for p in prepared) / len(prepared),
        },
    )
