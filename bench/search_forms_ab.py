"""Search pages walked or driven (``gateway/search/driven.py``), in-process, on one store: ms per search.

``python -m bench.search_forms_ab --database-url URL [--load 1000000] [--per-kind 60]``

The bench's query pools (``bench.search.draw_queries``: identifier, subject, date, family, chain,
include) plus three shapes with many matches (``Patient?gender=female``, ``Encounter?status=finished``,
``Patient?family:exact=Garcia``) run through ``SearchEngine.search`` on one connection, the plain walk
(``statements.driven = False``) and the driven form alternating query by query, so a noisy neighbour hits
both alike. Prints median and p95 per kind and form. ``--load N`` first fills an empty store with N
resources of the bench's generator and seed: COPY on PostgreSQL, ``executemany`` on SQLite, with the
gateway's own index rows (``bench.limits.prepare_families``; minutes for 1M), then ``ANALYZE``.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import psycopg
from sqlalchemy import text

from bench import limits
from bench.data import FAMILY_SIZE, Generator
from bench.pgsupport import copy_transaction, libpq_url
from bench.search import draw_queries
from gateway.fhir.context import Context
from gateway.fhir.core import build_context
from gateway.settings import Settings

EXTRA = {
    "gender": "/fhir/Patient?gender=female",
    "status": "/fhir/Encounter?status=finished",
    "exact": "/fhir/Patient?family:exact=Garcia",
}


def load(url: str, resources: int, seed: int) -> None:
    """``resources`` resources of ``Generator(seed)`` into the (migrated, empty) store at ``url``."""
    generator = Generator(seed=seed)
    if url.startswith("sqlite:///"):
        conn = limits.connect(Path(url.removeprefix("sqlite:///")), synchronous="OFF")
        for _ in range(0, resources, 1000):
            limits.insert_transaction(conn, limits.prepare_families(generator.families(1000 // FAMILY_SIZE)))
        conn.execute("ANALYZE")
        conn.close()
        return
    with psycopg.connect(libpq_url(url), autocommit=True) as pg:
        for _ in range(0, resources, 1000):
            copy_transaction(pg, limits.prepare_families(generator.families(1000 // FAMILY_SIZE)))
        pg.execute("VACUUM ANALYZE")


def patients(ctx: Context) -> list[str]:
    """The stored Patient ids."""
    with ctx.repo.connect() as conn:
        return [str(r[0]) for r in conn.execute(text("SELECT res_id FROM resource WHERE res_type = 'Patient'"))]


def run(ctx: Context, path: str) -> bytes:
    """One search through the engine, on its own connection."""
    parts = urlsplit(path)
    with ctx.repo.connect() as conn:
        return ctx.search.search(
            conn, resource_type=parts.path.rsplit("/", 1)[-1], params=parse_qsl(parts.query), base_url="http://b/fhir"
        )


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    """Run the A/B and print one line per kind."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--load", type=int, default=0, help="fill an empty store with N resources first")
    parser.add_argument("--per-kind", type=int, default=60)
    parser.add_argument("--seed", type=int, default=20240601)
    args = parser.parse_args(argv)
    ctx = build_context(Settings(database_url=args.database_url, log_level="warning"))
    if args.load:
        load(args.database_url, args.load, args.seed)
    ids = patients(ctx)
    pool = draw_queries(random.Random(args.seed), ids, families=len(ids), per_kind=args.per_kind)
    pool.update({kind: [path] * 10 for kind, path in EXTRA.items()})
    results: dict[str, dict[str, float]] = {}
    for kind, paths in pool.items():
        for path in paths[:3]:
            run(ctx, path)  # warm the caches for both forms
        spent: dict[bool, list[float]] = {False: [], True: []}
        for path in paths:
            for driven in (False, True):
                ctx.search.statements.driven = driven
                started = time.perf_counter()
                run(ctx, path)
                spent[driven].append((time.perf_counter() - started) * 1000)
        line = f"{kind:11}"
        for driven, times in spent.items():
            ordered = sorted(times)
            p95 = ordered[max(0, int(len(ordered) * 0.95) - 1)]
            name = "driven" if driven else "walk"
            results[f"{kind} {name}"] = {"median_ms": statistics.median(ordered), "p95_ms": p95}
            line += f" | {name:6} median {statistics.median(ordered):8.2f} ms  p95 {p95:8.2f} ms"
        print(line, flush=True)
    ctx.search.statements.driven = True
    ctx.repo.engine.dispose()
    return results


if __name__ == "__main__":
    main()
