"""Date-range search before and after the span-class scan (docs/performance.md finding 4), in-process.

On one SQLite store (the search data set of ``bench.profile_requests``: ``bench.inprocess.load``, seed 1)
the benchmark's date queries (``Encounter?date=geD&date=ltD+7``, ``bench.search.query_pool``, seed 3)
run alternately:

- *before*: the statement as it was, one scan of the ``(res_type, param, low, high)`` index bounded only
  by ``low < B`` (the pre-0008 index ``ix_date_value`` is created in the file for it, and
  ``date_ranges.class_ranges`` is switched off in this process so the SQL falls back to that form);
- *after*: one range scan per span class (``gateway/search/date_ranges.py``);

each through ``dispatch`` (the whole core), as the core's page statement alone (its driver SQL, recorded
once, run on a connection of the store) and, on SQLite, as the hand-written limit (``bench.bare_search``:
the old and the new SQL, the same page form). Both arms must return the same Bundles. Prints µs per
query, best and median of the rounds, and the ratios.

``python -m bench.date_search_ab --db /tmp/dates-100k.db --resources 100000`` (the store is built on
the first run and reused afterwards); ``--database-url postgresql+psycopg://...`` for a PostgreSQL
database (loaded when empty; the old index is created in it).
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import orjson
from sqlalchemy import Connection

from bench import bare_search, search
from bench.bare_search import BareQuery
from bench.data import FAMILY_SIZE, Generator
from bench.inprocess import BASE_URL, load, open_context
from gateway.fhir.context import Context
from gateway.fhir.core import build_context, dispatch
from gateway.fhir.request import FhirRequest
from gateway.search import date_ranges, prepared
from gateway.settings import Settings

OLD_INDEX = "CREATE INDEX IF NOT EXISTS ix_date_value ON idx_date (res_type, param, low, high, rid)"


def old_bare_date_range(conn: sqlite3.Connection, q: BareQuery, base: str) -> bytes:
    """The limit's SQL before the span classes: ``low < B`` is the only bound of the scan."""
    values = q.all("date")
    low = bare_search.day_micros(next(v[2:] for v in values if v.startswith("ge")))
    high = bare_search.day_micros(next(v[2:] for v in values if v.startswith("lt")))
    sql = "SELECT rid FROM idx_date WHERE res_type = ? AND param = 'date' AND (high > ? OR low >= ?) AND low < ?"
    rids, total = bare_search.first_page_in(conn, sql, (q.res_type, low + bare_search.DAY - 1, low, high))
    return bare_search.bundle(conn, base, rids, [], total)


@contextmanager
def before() -> Iterator[None]:
    """The search engine without span-class ranges (the statement of the old index) in this process."""
    original = date_ranges.class_ranges
    date_ranges.class_ranges = lambda found: []
    try:
        yield
    finally:
        date_ranges.class_ranges = original


def core_bodies(ctx: Context, paths: list[str]) -> list[bytes]:
    """Every search through ``dispatch``; the Bundles without their id and timestamp."""
    out = []
    for path in paths:
        parts = urlsplit(path)
        request = FhirRequest("GET", parts.path.removeprefix("/fhir/"), query=parse_qsl(parts.query), base_url=BASE_URL)
        answer = dispatch(ctx, request)
        bundle = orjson.loads(answer.body or b"{}")
        bundle.pop("id", None)
        bundle.pop("meta", None)
        out.append(orjson.dumps(bundle))
    return out


def bare(conn: sqlite3.Connection, paths: list[str], handler: Callable[..., bytes]) -> None:
    """Every search through a hand-written handler."""
    for path in paths:
        parts = urlsplit(path)
        handler(conn, BareQuery(parts.path.rsplit("/", 1)[1], parse_qsl(parts.query)), BASE_URL)


def per_query_us(run: Callable[[], object], count: int) -> float:
    """µs per query of one call of ``run`` (``count`` queries)."""
    started = time.perf_counter()
    run()
    return (time.perf_counter() - started) / count * 1e6


def page_statements(ctx: Context, paths: list[str]) -> list[tuple[str, tuple[object, ...]]]:
    """The page statement (driver SQL and parameters: the first the core runs) of each search."""
    calls: list[tuple[str, tuple[object, ...]]] = []
    original = prepared.run

    def recording(conn: Connection, sql: str, params: tuple[object, ...]) -> list[object]:
        calls.append((sql, params))
        return original(conn, sql, params)

    firsts = []
    prepared.run = recording
    try:
        for path in paths:
            calls.clear()
            core_bodies(ctx, [path])
            firsts.append(calls[0])
    finally:
        prepared.run = original
    return firsts


def run_statements(ctx: Context, statements: list[tuple[str, tuple[object, ...]]]) -> None:
    """Every statement on one DBAPI connection of the store."""
    with ctx.repo.engine.connect() as conn:
        for sql, params in statements:
            prepared.run(conn, sql, params)
        conn.rollback()


def open_store(args: argparse.Namespace) -> tuple[Context, int]:
    """The context over the store (loaded when empty), the old index created; and how many resources it holds."""
    if args.database_url:
        ctx = build_context(Settings(database_url=args.database_url))
    else:
        ctx = open_context(args.db, synchronous="NORMAL")
    with ctx.repo.engine.connect() as conn:
        stored = int(conn.exec_driver_sql("SELECT count(*) FROM resource").scalar_one())
    if stored == 0:
        loaded = load(ctx, Generator(seed=1), args.resources)
        print(f"loaded {loaded.resources:,} resources in {loaded.seconds:.0f} s")
        stored = loaded.resources
    with ctx.repo.engine.connect() as conn:
        conn.exec_driver_sql(OLD_INDEX)
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("ANALYZE")
        conn.commit()
    return ctx, stored


def main(argv: list[str] | None = None) -> None:
    """Build or reuse the store, check both arms agree, print the A/B table."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--db", type=Path, help="a SQLite store (built when missing)")
    where.add_argument("--database-url", help="a PostgreSQL database (loaded when empty; no bare arms)")
    parser.add_argument("--resources", type=int, default=100_000)
    parser.add_argument("--count", type=int, default=200, help="queries per round")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    ctx, stored = open_store(args)
    with ctx.repo.engine.connect() as conn:
        patients = [row[0] for row in conn.exec_driver_sql("SELECT res_id FROM resource WHERE res_type = 'Patient'")]
    families = stored // FAMILY_SIZE
    paths = search.draw_queries(random.Random(3), patients, families=families, per_kind=args.count)["date"]
    with before():
        expected = core_bodies(ctx, paths)
        old_statements = page_statements(ctx, paths)
    assert core_bodies(ctx, paths) == expected, "the two statements disagree"
    new_statements = page_statements(ctx, paths)
    arms: dict[str, Callable[[], object]] = {
        "core before": lambda: _in_before(lambda: core_bodies(ctx, paths)),
        "core after": lambda: core_bodies(ctx, paths),
        "page before": lambda: run_statements(ctx, old_statements),
        "page after": lambda: run_statements(ctx, new_statements),
    }
    raw = sqlite3.connect(args.db) if args.db else None
    if raw is not None:
        arms["bare before"] = lambda: bare(raw, paths, old_bare_date_range)
        arms["bare after"] = lambda: bare(raw, paths, bare_search.date_range)
    times: dict[str, list[float]] = {name: [] for name in arms}
    for _ in range(args.rounds):
        for name, run in arms.items():
            times[name].append(per_query_us(run, len(paths)))
    dialect = ctx.repo.engine.dialect.name
    print(f"µs per date query, {dialect}, {stored:,} stored, {len(paths)} queries x {args.rounds} alternating rounds")
    print(f"{'arm':<14}{'best':>10}{'median':>10}")
    for name, values in times.items():
        print(f"{name:<14}{min(values):>10.0f}{statistics.median(values):>10.0f}")
    for layer in ("core", "page", "bare"):
        if f"{layer} before" in times:
            b, a = times[f"{layer} before"], times[f"{layer} after"]
            best, median = min(b) / min(a), statistics.median(b) / statistics.median(a)
            print(f"{layer}: after is {best:.1f}x faster (best round), {median:.1f}x (median)")
    if raw is not None:
        raw.close()
    ctx.repo.engine.dispose()


def _in_before(run: Callable[[], object]) -> object:
    with before():
        return run()


if __name__ == "__main__":
    main()
