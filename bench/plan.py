"""What one run measures and how hard: the full run, or ``--quick`` for a smoke test under a minute."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bench.loadgen import Tool


@dataclass
class Plan:
    """Sizes, durations and the configurations a run covers."""

    workdir: Path
    tool: Tool = "wrk"
    resources: int = 100_000
    """Stored resources for the read and search benchmarks."""
    ingest_resources: int = 30_000
    """Resources posted per Bundle size and synchronous mode, split over the repeats."""
    ingest_stored: int = 100_000
    """Resources stored before each write run starts (every run writes on a copy of that store)."""
    bundle_sizes: tuple[int, ...] = (100, 500, 1000)
    synchronous: tuple[str, ...] = ("FULL", "NORMAL")
    workers: tuple[int, ...] = (1, 2)
    ingest_clients: tuple[int, ...] = (1, 4)
    """Clients posting the ingest Bundles at once: one after another (1), and several at a time as a bulk
    loader would (the next Bundles are parsed and judged while one holds SQLite's write lock)."""
    write_workers: int = 1
    """uvicorn workers of the gateway for the write figures (the limit is one connection either way)."""
    seconds: float = 5.0
    """Duration of each load-generator run."""
    repeats: int = 3
    """Alternating gateway/limit runs of every figure; the medians are reported."""
    connections: int = 8
    latency_runs: bool = True
    """Also run each search with one connection (latency without queueing)."""
    create_pool: int = 2000
    read_ids: int = 10_000
    queries_per_kind: int = 500
    seed: int = 20240601
    notes: list[str] = field(default_factory=list)

    @classmethod
    def quick(cls, workdir: Path, *, tool: Tool = "wrk", resources: int | None = None) -> Plan:
        """A reduced run for smoke tests: one configuration, small sizes, 1-second loads."""
        return cls(
            workdir=workdir,
            tool=tool,
            resources=resources or 2000,
            ingest_resources=1000,
            ingest_stored=500,
            ingest_clients=(1, 2),
            synchronous=("FULL",),
            workers=(1,),
            seconds=1.0,
            repeats=1,
            latency_runs=False,
            create_pool=200,
            read_ids=500,
            queries_per_kind=40,
        )
