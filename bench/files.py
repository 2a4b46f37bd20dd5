"""Benchmark of the HN daily authorization file import (issue 6 "Benchmarks").

Each figure is printed next to its limit measured in the same run: reading and parsing the same file
(``records`` + ``parse_detail`` + control totals: everything but applying it). Every measurement runs in
a fresh process, and its peak RSS is its own (``peak_rss_mb``: the high-water mark of the process's memory
map, not ``ru_maxrss``, which a child inherits from its parent across the exec).

Per dialect (SQLite file, and a durable PostgreSQL cluster started for the run):

- first import: a file of ``--rows`` ADD rows of legacy ECM authorizations for as many members (each row
  creates the referral through the workflow, its Task, the CoverageEligibilityRequest/Response pair, the
  Task move and the outbox event);
- re-import of an unchanged file (the same rows under a new header sequence: every row is compared, none
  written);
- a file of ``--rows`` CHG rows (each writes a new version of the authorization and of its request);
- ``--big-rows`` (default 1,000,000) rows naming unknown members: the whole pipeline (parse, chunked
  lookups, errors committed with the ledger, the error report) at full size, for peak RSS.

The first import has a second reference figure, the **store floor** (``bench.files_floor``): the very
rows it wrote (resources, versions, index rows, membership, keys, outbox, ledger), taken from the store
after the run and inserted raw into a fresh store of the same schema (SQLite: ``sqlite3`` ``executemany``;
PostgreSQL: ``COPY``), one transaction per chunk as the importer commits. It is what one writer of those
rows reaches on this machine with no Python of the gateway; the import's rate over it is printed too
("of floor"). The limit the ratio is computed against stays read + parse.

Each figure also gives the CPU time per row of its process (``time.process_time``): on a shared machine
the wall rate varies with the load, the CPU time much less.

Setup, not measured: one member per row, written through the store's bulk path (``load_members``: the
rows a PUT through the core writes, without its per-resource work), so 1M-row files are within reach. An
import longer than ``--stretch`` rows also reports each stretch of that many rows (``_Stretches``); the
store floor runs up to ``--floor-max-rows`` rows (at 1M rows it would copy a ~35 GB store).

Targets (issue 6): >= 10,000 rows/s first import, >= 50,000 rows/s re-import of an unchanged file, peak
RSS under 300 MB at 1M rows.

    .venv/bin/python -m bench.files                       # 5,000-row files, 1M-row big file, both dialects
    .venv/bin/python -m bench.files --rows 100000 --dialects sqlite
    .venv/bin/python -m bench.files --rows 1000000 --big-rows 1000000 --dialects sqlite --figures book,resend,big
    .venv/bin/python -m bench.files --rows 2000 --big-rows 10 --dialects sqlite --figures resend
    .venv/bin/python -m bench.files --rows 200 --big-rows 10 --dialects sqlite --figures book --account
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.files_floor import high_water, pg_high_water
from bench.machine import ROOT

TARGET_FIRST = 10_000.0
TARGET_REIMPORT = 50_000.0
TARGET_RSS_MB = 300.0


def peak_rss_mb() -> float:
    """This process's peak resident memory in MiB: ``VmHWM`` of /proc/self/status, the high-water mark of
    its own memory map. ``getrusage``'s ``ru_maxrss`` is not this process's own on Linux: it survives the
    exec (getrusage(2): "Resource usage metrics are preserved across an execve(2)"), and a child spawned by
    ``subprocess`` (vfork) ran in its parent's memory map until then, so every worker reported at least the
    bench process's own peak (which held the members it had just loaded: docs/performance.md, "HN file
    import", session 10). ``ru_maxrss`` only where /proc is missing."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _worker(args: argparse.Namespace) -> None:
    """One measurement in this process: ``parse`` or ``import`` of ``--file``; prints a JSON line."""
    from adapters.files.handlers import INBOUND
    from adapters.files.importer import Importer
    from adapters.files.reader import records
    from gateway.calaim.policy import Policy
    from gateway.fhir.core import build_context
    from gateway.settings import Settings
    from mappings.files.layout import DETAIL, Totals, layout, parse_detail

    path = Path(args.file)
    if args.mode == "floor":
        _floor_worker(args)
        return
    started, cpu_started = time.perf_counter(), time.process_time()
    rows = 0
    if args.mode == "parse":
        spec = layout("hn-authorization")
        totals = Totals(spec)
        for line, fields in records(path):
            if fields[0] == DETAIL:
                values, _ = parse_detail(spec, fields[1:], line)
                totals.add(values)
                rows += 1
    else:
        settings = Settings(database_url=args.database_url, files_chunk_rows=args.chunk)
        ctx = build_context(settings)
        importer = Importer(ctx, Policy.load(), INBOUND, chunk_rows=args.chunk)
        stretches = _Stretches(args.stretch)
        started, cpu_started = time.perf_counter(), time.process_time()
        stretches.start(started, cpu_started)
        progress = stretches.line if args.stretch else None
        result = importer.run(path, sender="hn-altamed", report_dir=path.parent, progress=progress)
        rows = result.counts.read
        ctx.repo.engine.dispose()
        summary = {"applied": result.counts.applied, "unchanged": result.counts.unchanged}
        summary["rejected"] = result.counts.rejected
        print(json.dumps({"summary": summary, "stretches": stretches.done}))
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    rss_mb = peak_rss_mb()
    print(json.dumps({"rows": rows, "seconds": seconds, "cpu_seconds": cpu_seconds, "rss_mb": rss_mb}))


class _Stretches:
    """``--stretch N``: the wall and CPU seconds of each stretch of ``N`` rows of an import, and the peak RSS
    at its end (does the rate hold, does memory stay flat as the store grows?), printed on stderr as they
    end. Rows are counted as the importer reads them (``Importer.run``'s ``progress``): up to a block of
    ``KNOWN_BLOCK_CHUNKS`` chunks (4,000 rows) ahead of their commit, little at the size of a stretch."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.done: list[dict[str, float]] = []
        self._last = (0.0, 0.0)

    def start(self, wall: float, cpu: float) -> None:
        """The import starts now."""
        self._last = (wall, cpu)

    def line(self, line: int) -> None:
        """``progress``: file line ``line`` (1 is the header) was read."""
        if (line - 1) % self.size or line == 1:
            return
        wall, cpu = time.perf_counter(), time.process_time()
        seconds, cpu_seconds = wall - self._last[0], cpu - self._last[1]
        rss_mb = peak_rss_mb()
        self.done.append({"rows": line - 1, "seconds": seconds, "cpu_seconds": cpu_seconds, "rss_mb": rss_mb})
        self._last = (wall, cpu)
        rate, cpu_us = self.size / seconds, cpu_seconds * 1e6 / self.size
        print(
            f"  rows {line - 1 - self.size:,}-{line - 1:,}: {rate:,.0f} rows/s, {cpu_us:,.0f} µs CPU per row, "
            f"peak RSS {rss_mb:.0f} MB",
            file=sys.stderr,
            flush=True,
        )


def _floor_worker(args: argparse.Namespace) -> None:
    """``--worker floor``: the store floor (``bench.files_floor``) of the import into the store ``--file``
    (a SQLite file, or a PostgreSQL URL), inserted into the fresh store ``--database-url`` names (on
    PostgreSQL created here, in the same cluster); prints a JSON line like the other workers."""
    from bench.files_floor import insert_floor, pg_insert_floor
    from gateway.settings import Settings

    chunks, marks = -(-args.rows // args.chunk), json.loads(args.marks)
    cpu_started = time.process_time()
    too_many = f"{args.rows:,} rows, above --floor-max-rows {args.floor_max_rows:,}"
    short = too_many if args.rows > args.floor_max_rows else _short_of_disk(args.file)
    if short:  # a copy of a 1M-row import's rows (~30 GB) must not fill a disk others share
        print(f"  store floor skipped: {short}", file=sys.stderr, flush=True)
        print(json.dumps({"rows": args.rows, "seconds": 0.0, "cpu_seconds": 0.0, "rss_mb": 0.0, "tables": {}}))
        return
    if args.database_url.startswith("postgresql"):
        from sqlalchemy import create_engine, text
        from sqlalchemy.engine import make_url

        admin = create_engine(args.file, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {make_url(args.database_url).database}"))
        admin.dispose()
        floor = pg_insert_floor(args.file, args.database_url, marks, chunks=chunks)
    else:
        target = Path(args.database_url.removeprefix("sqlite:///"))
        floor = insert_floor(Path(args.file), target, marks, chunks=chunks, synchronous=Settings().sqlite_synchronous)
    rss_mb = peak_rss_mb()
    out = {"rows": args.rows, "seconds": floor["seconds"], "cpu_seconds": time.process_time() - cpu_started}
    print(json.dumps({**out, "rss_mb": rss_mb, "tables": floor["tables"]}))


FLOOR_DISK_MARGIN = 10 * 2**30
"""Free disk the store floor leaves untouched: it runs only when the disk holds a copy of the whole store
(an upper bound of the import's rows it inserts) and this much more."""


def _short_of_disk(source: str) -> str:
    """Why the store floor of the store ``source`` (a SQLite file, or a PostgreSQL URL) must not run (its
    copy would leave less than ``FLOOR_DISK_MARGIN`` free), or "" when it can."""
    if source.startswith("postgresql"):
        from bench.files_floor import _pg_connect

        with _pg_connect(source) as conn:
            size = int(conn.execute("SELECT pg_database_size(current_database())").fetchone()[0])
            folder = Path(str(conn.execute("SHOW data_directory").fetchone()[0]))
    else:
        size = sum(p.stat().st_size for p in Path(source).parent.glob(Path(source).name + "*"))
        folder = Path(source).parent
    free = shutil.disk_usage(folder).free
    if free >= size + FLOOR_DISK_MARGIN:
        return ""
    return f"its copy of the store ({size / 2**30:.1f} GiB) would leave less than 10 GiB of {free / 2**30:.1f} free"


def _measure(mode: str, path: Path | str, database_url: str, chunk: int, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    command = [sys.executable, "-m", "bench.files", "--worker", mode, "--file", str(path)]
    command += ["--database-url", database_url, "--chunk", str(chunk), *extra]
    # stderr passes through: a long import's stretches (``--stretch``) show as they end, and a failure's
    # traceback is printed where the run's output goes.
    done = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"bench.files --worker {mode} failed with exit status {done.returncode} (stderr above)")
    out: dict[str, Any] = {}
    for line in done.stdout.splitlines():
        if line.startswith("{"):
            out.update(json.loads(line))
    out["rate"] = out["rows"] / out["seconds"] if out["seconds"] else 0.0
    out["cpu_us_per_row"] = out["cpu_seconds"] * 1e6 / out["rows"] if out["rows"] else 0.0
    return out


def write_files(folder: Path, rows: int, big_rows: int, figures: tuple[str, ...] = ()) -> dict[str, Path]:
    """The benchmark's files: book (ADD), resend (the same rows, sequence 2), changes (CHG), big (unknown
    CINs). The book and the big file always (the limits read them); resend and changes when ``figures``
    names them (all when empty)."""
    from datetime import date

    from tests.files.support import auth_row, write_file

    wanted = set(figures or FIGURES)
    book = (auth_row(k).values() for k in range(1, rows + 1))
    files = {"book": write_file(folder / "book.txt", "hn-authorization", book)}
    if "resend" in wanted:
        book = (auth_row(k).values() for k in range(1, rows + 1))
        files["resend"] = write_file(folder / "resend.txt", "hn-authorization", book, sequence=2)
    if "changes" in wanted:
        changes = (
            auth_row(
                k, action="CHG", decision="A6", units=24, reason="Units reduced", decided_on=date(2022, 12, 20)
            ).values()
            for k in range(1, rows + 1)
        )
        files["changes"] = write_file(folder / "changes.txt", "hn-authorization", changes, sequence=3)
    big = (auth_row(k, cin=f"8{k:07d}Z").values() for k in range(1, big_rows + 1))
    files["big"] = write_file(folder / "big.txt", "hn-authorization", big, sequence=4)
    return files


MEMBERS_PER_TRANSACTION = 5000
"""Members written per transaction by ``load_members`` (the bulk path)."""


def load_members(database_url: str, rows: int, *, through_gateway: bool = False) -> float:
    """The plan's Organizations and ``rows`` members (setup, not measured); seconds taken.

    The Organizations are PUT through the core. The members (``tests.files.support.member_resources``: a
    Patient and its Coverage each) go straight through the store's write path: ``WriteTransaction.create``
    with their ids and method PUT, ``MEMBERS_PER_TRANSACTION`` members per transaction (one executemany per
    table on SQLite, ``COPY`` on PostgreSQL). That leaves the rows a PUT through the core leaves (the
    stamped bodies, versions, index and ``idx_member`` rows: the store's own indexer computes them; no hook
    of a new Patient or Coverage writes anything else), without the per-resource validation, hooks and
    statements (session 9: 305 s per 100,000 members on SQLite, 737 s on PostgreSQL, under load; this
    path: 1,000,000 in 584 s and 365 s). ``through_gateway``: PUT each member through the core instead
    (``tests/bench/test_files_bench_smoke.py`` checks that both leave the same rows)."""
    from gateway import runtime
    from gateway.calaim.policy import Policy
    from gateway.fhir.core import build_context, dispatch
    from gateway.fhir.request import FhirRequest
    from gateway.settings import Settings
    from tests.files.support import add_members, member_resources

    started = time.perf_counter()
    ctx = build_context(Settings(database_url=database_url))
    with ctx.writing() as tx:
        inner = ctx.in_transaction(tx)
        for org in Policy.load().organizations.values():
            dispatch(inner, FhirRequest("PUT", f"Organization/{org['id']}", resource=dict(org)))
    for start in range(1, rows + 1, MEMBERS_PER_TRANSACTION):
        keys = range(start, min(start + MEMBERS_PER_TRANSACTION, rows + 1))
        if through_gateway:
            add_members(ctx, keys)
            continue
        with runtime.collector_paused(), ctx.repo.write() as tx:
            tx.expect_creates(2 * len(keys))
            for key in keys:
                for body in member_resources(key):
                    tx.create(body, res_id=body["id"], method="PUT")
    ctx.repo.engine.dispose()
    return time.perf_counter() - started


@contextmanager
def store(dialect: str, folder: Path) -> Iterator[str]:
    """A fresh store of ``dialect``: its URL."""
    if dialect == "sqlite":
        yield f"sqlite:///{folder / 'files-bench.db'}"
        return
    from bench.pgsupport import DurableCluster
    from tests.support.postgres import find_pg_bin

    bin_dir = find_pg_bin()
    if bin_dir is None:
        raise RuntimeError("PostgreSQL is not installed")
    cluster = DurableCluster(bin_dir).start()
    try:
        yield cluster.url(cluster.create_database())
    finally:
        cluster.stop()


FIGURES = ("book", "resend", "changes", "big")
"""The figures, in the order they run: first import, re-import, CHG rows, the all-rejected big file."""


def run(
    rows: int,
    big_rows: int,
    dialects: list[str],
    chunk: int,
    folder: Path,
    figures: tuple[str, ...] = FIGURES,
    *,
    account: bool = False,
    stretch: int = 0,
    floor_max: int = 200_000,
) -> list[dict[str, Any]]:
    """Measure ``figures`` (all by default); one result dict per figure. The first import runs whenever the
    re-import or the CHG rows are asked (they need its authorizations), measured only when asked too.
    ``account``: print what the first import wrote per file row (``bench.files_account``) on stderr.
    ``stretch``: an import of a file longer than that many rows also reports each stretch of that many
    rows (rate, CPU per row, peak RSS so far: ``_Stretches``), in its result's ``stretches``. ``floor_max``:
    the store floor is measured for a first import of at most that many rows (and disk enough for a copy)."""
    files = write_files(folder, rows, big_rows, figures)
    results: list[dict[str, Any]] = []
    limit_small = _measure("parse", files["book"], "sqlite://", chunk)
    limit_big = _measure("parse", files["big"], "sqlite://", chunk)
    results.append({"figure": f"read + parse only, {rows:,} rows", **limit_small})
    results.append({"figure": f"read + parse only, {big_rows:,} rows", **limit_big})
    for dialect in dialects:
        with store(dialect, folder) as url:
            setup = load_members(url, rows)
            print(f"[{dialect}] setup: {rows:,} members in {setup:.0f} s", file=sys.stderr, flush=True)
            for name, label, target in (
                ("book", "first import (ADD rows)", TARGET_FIRST),
                ("resend", "re-import, unchanged file", TARGET_REIMPORT),
                ("changes", "import of changes (CHG rows)", TARGET_FIRST),
                ("big", "1 row per unknown member, all rejected", None),
            ):
                if name not in figures:
                    if name == "book" and {"resend", "changes"} & set(figures):
                        _measure("import", files[name], url, chunk)  # the store the later figures need
                    continue
                sqlite_file = folder / "files-bench.db"
                marks = None
                if name == "book":  # the store's high-water marks, for the floor (module docstring)
                    marks = high_water(sqlite_file) if dialect == "sqlite" else pg_high_water(url)
                count = big_rows if name == "big" else rows
                print(f"[{dialect}] {label}, {count:,} rows ...", file=sys.stderr, flush=True)
                by_stretch = ("--stretch", str(stretch if 0 < stretch < count else 0))
                measured = _measure("import", files[name], url, chunk, by_stretch)
                if marks is not None:
                    source: Path | str = sqlite_file if dialect == "sqlite" else url
                    floor_url = f"sqlite:///{folder / 'files-floor.db'}"
                    if dialect != "sqlite":
                        floor_url = url.rsplit("/", 1)[0] + "/files_floor"
                    floor_args = ("--marks", json.dumps(marks), "--rows", str(rows), "--floor-max-rows", str(floor_max))
                    floor = _measure("floor", source, floor_url, chunk, floor_args)
                    for path in folder.glob("files-floor.db*"):  # GBs at 1M rows: only its rate is kept
                        path.unlink()
                    measured["floor_rate"] = floor["rate"]
                    measured["floor_tables"] = floor["tables"]
                    per_row = ", ".join(f"{t} {n / rows:.1f}" for t, n in sorted(floor["tables"].items()))
                    print(f"[{dialect}] rows written per file row: {per_row}", file=sys.stderr, flush=True)
                    if account:
                        _print_account(source, marks, rows, dialect)
                limit = limit_big if name == "big" else limit_small
                results.append(
                    {
                        "figure": f"{label}, {count:,} rows, {dialect}",
                        "limit_rate": limit["rate"],
                        "target": target,
                        **measured,
                    }
                )
                print(_line(results[-1]), file=sys.stderr, flush=True)
    return results


def _print_account(source: Path | str, marks: dict[str, int], rows: int, dialect: str) -> None:
    """``--account``: the rows the first import wrote, per table, type and parameter (``bench.files_account``)."""
    from bench.files_account import account, pg_written, sqlite_written, table_text

    written = sqlite_written(source, marks) if isinstance(source, Path) else pg_written(source, marks)
    print(f"[{dialect}] what a first-import row writes:\n{table_text(account(written, rows))}", file=sys.stderr)


def _line(result: dict[str, Any]) -> str:
    rate, limit = result["rate"], result.get("limit_rate")
    ratio = f"{rate / limit:.3f}" if limit else "-"
    target = result.get("target")
    verdict = "-" if target is None else ("PASS" if rate >= target else "**FAIL**")
    rss = f"{result['rss_mb']:.0f} MB"
    limit_text = f"{limit:,.0f} /s" if limit else "-"
    target_text = f">= {target:,.0f} /s" if target else "-"
    cpu = f"{result['cpu_us_per_row']:,.0f} µs"
    floor = result.get("floor_rate")
    floor_cells = [f"{floor:,.0f} rows/s", f"{rate / floor:.2f}"] if floor else ["-", "-"]
    cells = [result["figure"], f"{rate:,.0f} rows/s", cpu, limit_text, ratio, *floor_cells, rss, target_text, verdict]
    return f"| {' | '.join(cells)} |"


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Run the benchmark and print the table (``--worker``: one measurement, used internally)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=5000, help="rows of the first-import, re-import and CHG files")
    parser.add_argument("--big-rows", type=int, default=1_000_000, help="rows of the full-size file (RSS)")
    parser.add_argument("--dialects", default="sqlite,postgresql")
    parser.add_argument("--chunk", type=int, default=1000, help="rows per transaction")
    parser.add_argument(
        "--figures",
        default=",".join(FIGURES),
        help="which figures to measure, comma-separated: book (first import), resend (re-import of the "
        "unchanged file), changes (CHG rows), big (all rejected)",
    )
    parser.add_argument(
        "--account",
        action="store_true",
        help="after the first import, print every row it wrote per file row, by table, type and search "
        "parameter, with the index rows that repeat another's values (bench.files_account)",
    )
    parser.add_argument("--out", type=Path, default=None, help="results JSON (default bench/results/files-<time>.json)")
    parser.add_argument("--worker", choices=("parse", "import", "floor"), default=None, help=argparse.SUPPRESS)
    parser.add_argument("--file", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--database-url", default="sqlite://", help=argparse.SUPPRESS)
    parser.add_argument("--marks", default="{}", help=argparse.SUPPRESS)
    parser.add_argument(
        "--floor-max-rows",
        type=int,
        default=200_000,
        help="measure the store floor of a first import of at most this many rows (default 200,000: at 1M rows "
        "the floor takes about as long as the import and a copy of its ~35 GB)",
    )
    parser.add_argument(
        "--stretch",
        type=int,
        default=100_000,
        help="an import of a longer file also reports each stretch of this many rows (rate, CPU per row, peak "
        "RSS so far), to see whether the rate holds as the store grows (0: none)",
    )
    args = parser.parse_args(argv)
    if args.worker:
        args.mode = args.worker
        _worker(args)
        return []
    with tempfile.TemporaryDirectory(prefix="files-bench-") as tmp:
        figures = tuple(f for f in args.figures.split(",") if f)
        unknown = set(figures) - set(FIGURES)
        if unknown:
            parser.error(f"unknown figures: {', '.join(sorted(unknown))} (known: {', '.join(FIGURES)})")
        results = run(
            args.rows,
            args.big_rows,
            args.dialects.split(","),
            args.chunk,
            Path(tmp),
            figures,
            account=args.account,
            stretch=args.stretch,
            floor_max=args.floor_max_rows,
        )
    rss_big = max((r["rss_mb"] for r in results if "all rejected" in r["figure"]), default=0.0)
    print(
        "| figure | gateway | CPU per row | limit (read + parse, same run) | ratio | store floor (raw insert of "
        "the rows written) | of floor | peak RSS | target | result |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for result in results:
        if "limit_rate" in result:
            print(_line(result))
        else:
            rate, rss = f"{result['rate']:,.0f} rows/s", f"{result['rss_mb']:.0f} MB"
            cpu = f"{result['cpu_us_per_row']:,.0f} µs"
            print(f"| {result['figure']} (the limit) | {rate} | {cpu} | - | - | - | - | {rss} | - | - |")
    print(f"peak RSS at the full-size file: {rss_big:.0f} MB (target < {TARGET_RSS_MB:.0f} MB)")
    for result in results:
        for part in result.get("stretches", []):
            rate, cpu = args.stretch / part["seconds"], part["cpu_seconds"] * 1e6 / args.stretch
            print(
                f"{result['figure']}: rows {part['rows'] - args.stretch:,.0f}-{part['rows']:,.0f}: {rate:,.0f} rows/s,"
                f" {cpu:,.0f} µs CPU per row, peak RSS {part['rss_mb']:.0f} MB"
            )
    out = args.out or ROOT / "bench" / "results" / f"files-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"argv": sys.argv, "pid": os.getpid(), "results": results}, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
