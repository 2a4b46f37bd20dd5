"""Where the time of transaction ingest goes: cProfile of the core's transaction path, grouped into
JSON parsing, validation (R4 element walk, R4B model), index extraction, stamping, SQL and the rest,
and ablations that re-measure the rate with one step switched off (in this process only).

``python -m bench.profile_ingest [--resources 5000] [--entries 1000] [--synchronous NORMAL]``
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import orjson

from bench.data import Generator
from bench.inprocess import open_context, post_bundle
from gateway.fhir import model_pool

# (label, file suffix, function name): cumulative time of each; nested ones are reported apart.
STEPS: tuple[tuple[str, str, str], ...] = (
    ("whole transaction (dispatch)", "fhir/core.py", "dispatch"),
    ("JSON parse of the Bundle (orjson + depth check)", "gateway/jsonutil.py", "loads_any"),
    ("  of which depth check", "gateway/jsonutil.py", "check_depth"),
    ("reference rewriting (urn:uuid -> Type/id)", "fhir/bundles.py", "_rewrite_references"),
    ("validation, total", "fhir/validation.py", "validate_resource"),
    ("  R4B model (fhir.resources model_validate)", "fhir/validation.py", "model_issues"),
    ("  R4 element walk (our checks)", "fhir/validation.py", "_walk"),
    ("index extraction (FHIRPath -> rows)", "search/extract.py", "extract"),
    ("  of which date parsing", "search/dates.py", "parse_range"),
    ("stamping + serializing (orjson.dumps)", "store/repository.py", "_stamp"),
    ("SQL inserts (executemany at flush)", "store/repository.py", "flush"),
    ("commit (incl. WAL write/fsync)", "sqlalchemy/engine/base.py", "_commit_impl"),
    ("transaction-response Bundle", "fhir/bundles.py", "_response_entry"),
)


@dataclass(frozen=True, slots=True)
class StepTime:
    """Cumulative seconds of one step and its share of the whole transaction."""

    label: str
    seconds: float
    share: float


def profile_steps(stats: pstats.Stats) -> list[StepTime]:
    """Cumulative time of each of ``STEPS`` in ``stats`` (recursive calls counted once)."""
    raw: dict[tuple[str, int, str], Any] = stats.stats  # type: ignore[attr-defined]
    found: dict[str, float] = {}
    for (filename, _line, name), (_cc, _nc, _tt, ct, _callers) in raw.items():
        for label, suffix, func in STEPS:
            if name == func and filename.endswith(suffix):
                found[label] = found.get(label, 0.0) + ct
    total = found.get(STEPS[0][0], 0.0) or 1.0
    return [StepTime(label, found.get(label, 0.0), found.get(label, 0.0) / total) for label, _, _ in STEPS]


def _bodies(resources: int, entries: int, seed: int) -> list[bytes]:
    return [orjson.dumps(b) for b in Generator(seed=seed).bundles(resources, entries)]


def ingest_rate(
    bodies: list[bytes],
    entries: int,
    *,
    synchronous: str,
    profile: cProfile.Profile | None = None,
    validation_workers: int = 0,
) -> float:
    """Resources/s of posting ``bodies`` to a fresh store in-process (after one warm-up Bundle), with the
    R4B model pass in the transaction's thread (``validation_workers=0``) or in that many workers."""
    if validation_workers:
        model_pool.pool().warm(validation_workers, timeout_s=120)
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp:
        ctx = open_context(Path(tmp) / "profile.db", synchronous=synchronous, validation_workers=validation_workers)
        try:
            post_bundle(ctx, orjson.dumps(Generator(seed=1).bundles(entries, entries)[0]))  # warm-up: plans, models
            started = time.perf_counter()
            if profile is not None:
                profile.enable()
            for body in bodies:
                post_bundle(ctx, body)
            if profile is not None:
                profile.disable()
            elapsed = time.perf_counter() - started
        finally:
            ctx.repo.engine.dispose()
    return len(bodies) * entries / elapsed


@contextmanager
def _ablation(name: str) -> Iterator[None]:
    """Switch one step off in this process (measurement only: never a way to run the gateway)."""
    from gateway.fhir import validation

    patches: dict[str, Callable[[], Any]] = {
        "none": lambda: mock.patch.object(validation, "validate_resource", validation.validate_resource),
        "no R4B model": lambda: mock.patch.object(validation, "model_issues", lambda _r, _t: []),
        "no validation": lambda: mock.patch.object(validation, "validate_resource", lambda *_a, **_k: []),
    }
    with patches[name]():
        yield


ABLATIONS = ("none", "no R4B model", "no validation")
POOLED = "R4B model in workers"
"""The gateway's default for large transactions: the model pass in ``model_pool`` workers (not an ablation)."""


def ablation_rates(bodies: list[bytes], entries: int, *, synchronous: str) -> dict[str, float]:
    """In-process ingest rate with each of ``ABLATIONS`` (what a step costs, without profiler overhead)."""
    rates: dict[str, float] = {}
    for name in ABLATIONS:
        with _ablation(name):
            rates[name] = ingest_rate(bodies, entries, synchronous=synchronous)
    rates[POOLED] = ingest_rate(
        bodies, entries, synchronous=synchronous, validation_workers=model_pool.default_workers()
    )
    return rates


def main(argv: list[str] | None = None) -> None:
    """Print the profile split and the ablation rates."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--resources", type=int, default=5000)
    parser.add_argument("--entries", type=int, default=1000)
    parser.add_argument("--synchronous", default="NORMAL", choices=("FULL", "NORMAL"))
    parser.add_argument("--top", type=int, default=0, help="also print the top N functions by own time")
    args = parser.parse_args(argv)
    bodies = _bodies(args.resources, args.entries, seed=7)
    profile = cProfile.Profile()
    rate = ingest_rate(bodies, args.entries, synchronous=args.synchronous, profile=profile)
    stats = pstats.Stats(profile)
    print(
        f"in-process transaction ingest under cProfile: {rate:,.0f} resources/s "
        f"({args.resources} resources, Bundles of {args.entries}, synchronous={args.synchronous})"
    )
    for step in profile_steps(stats):
        print(f"  {step.label:<52} {step.seconds:8.3f} s  {step.share:6.1%}")
    if args.top:
        stats.sort_stats("tottime").print_stats(args.top)
    print("ablations (no profiler; the model pass in the transaction's thread unless named):")
    for name, value in ablation_rates(bodies, args.entries, synchronous=args.synchronous).items():
        print(f"  {name:<22} {value:10,.0f} resources/s")


if __name__ == "__main__":
    main()
