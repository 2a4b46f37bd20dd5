"""The benchmark code keeps working: tiny sizes, no timing asserted (machines are noisy)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import orjson
import pytest

from bench import limits, search
from bench.bare_search import SHAPES, BareQuery
from bench.core import main
from bench.data import FAMILY_SIZE, Generator
from bench.inprocess import BASE_URL, load, open_context
from bench.loadgen import Call, LoadSpec, run_load
from gateway.fhir.context import Context
from gateway.fhir.core import dispatch
from gateway.fhir.request import FhirRequest
from gateway.fhir.validation import validate_resource

FAMILIES = 20


@pytest.fixture
def store(tmp_path: Path) -> Iterator[tuple[Context, Path]]:
    """A store holding ``FAMILIES`` synthetic families, loaded through the core."""
    db_path = tmp_path / "store.db"
    ctx = open_context(db_path, synchronous="NORMAL")
    loaded = load(ctx, Generator(seed=5), FAMILIES * FAMILY_SIZE, entries=50)
    assert loaded.resources == FAMILIES * FAMILY_SIZE
    yield ctx, db_path
    ctx.repo.engine.dispose()


def test_generated_resources_are_valid_r4() -> None:
    generator = Generator(seed=1)
    for _, resource in generator.single_creates(3 * FAMILY_SIZE):
        assert validate_resource(resource) == [], resource
    bundles = Generator(seed=1).bundles(100, 50)
    assert len(bundles) == 2 and len(bundles[0]["entry"]) == 50


def test_generator_is_deterministic() -> None:
    assert Generator(seed=9).families(3) == Generator(seed=9).families(3)


def test_limit_inserts_the_same_rows_as_the_gateway(tmp_path: Path, store: tuple[Context, Path]) -> None:
    _, gateway_db = store
    limits.create_store(tmp_path / "limit.db")
    conn = limits.connect(tmp_path / "limit.db", synchronous="NORMAL")
    families = Generator(seed=5).families(FAMILIES)  # the same families the store fixture loaded
    prepared = limits.prepare_families(families)
    limits.timed_inserts(conn, [prepared[:50], prepared[50:]])
    limits.timed_inserts(conn, [[p] for p in limits.prepare_families(Generator(seed=6).families(1))])
    import sqlite3

    with sqlite3.connect(gateway_db) as theirs:
        for table in ("resource", "resource_version", "idx_token", "idx_reference", "idx_date", "idx_string"):
            ours = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            expected = theirs.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            extra = sum(
                len(p.rows.get(table.removeprefix("idx_"), []))
                for p in limits.prepare_families(Generator(seed=6).families(1))
            )
            assert ours == expected + (FAMILY_SIZE if table.startswith("resource") else extra), table
    conn.close()


def test_bare_search_answers_like_the_gateway(store: tuple[Context, Path]) -> None:
    ctx, db_path = store
    import sqlite3

    conn = sqlite3.connect(db_path)
    pool = search.query_pool(db_path, families=FAMILIES, per_kind=4, seed=2)
    assert set(pool) == set(search.KINDS)
    for kind, paths in pool.items():
        for path in paths:
            parts = urlsplit(path)
            query = parse_qsl(parts.query)
            res_type = parts.path.rsplit("/", 1)[1]
            answer = dispatch(ctx, FhirRequest("GET", res_type, query=query, base_url=BASE_URL))
            mine = orjson.loads(SHAPES[BareQuery(res_type, query).shape](conn, BareQuery(res_type, query), BASE_URL))
            theirs = orjson.loads(answer.body or b"{}")
            assert sorted(e["fullUrl"] for e in mine.get("entry", [])) == sorted(
                e["fullUrl"] for e in theirs.get("entry", [])
            ), (kind, path)
    conn.close()


@pytest.mark.slow
def test_load_generators_drive_the_bare_app(store: tuple[Context, Path], tmp_path: Path) -> None:
    from bench import servers
    from bench.loadgen import find_wrk

    _, db_path = store
    reads = [Call("GET", p) for p in search.read_pool(db_path, count=20, seed=1)]
    tools = ["python", "wrk"] if find_wrk(install=False) else ["python"]
    with servers.bare(db_path, workers=1, log_dir=tmp_path) as origin:
        for tool in tools:
            result = run_load(LoadSpec(origin, reads, {"Accept": "application/fhir+json"}, 2, 1, 1.0), tool)  # type: ignore[arg-type]
            assert result.requests > 0 and result.errors == 0, result


@pytest.mark.slow
def test_quick_run_prints_the_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "results.json"
    assert main(["--quick", "--resources", "100", "--workers", "1", "--output", str(output)]) == 0
    printed = capsys.readouterr().out
    assert "single create, sync=FULL" in printed and "search chain" in printed and "ratio" in printed
    results = orjson.loads(output.read_bytes())
    assert results["machine"]["cpu_count"] >= 1
    names = [figure["name"] for figure in results["figures"]]
    assert any(name.startswith("read,") for name in names)
    assert all(figure["limit"] for figure in results["figures"])
    writes = [f for f in results["figures"] if f["name"].startswith(("single create", "transaction ingest"))]
    assert writes and all(f["details"]["stored_before"] == 500 for f in writes)


def test_write_runs_start_from_copies_of_one_stored_set(tmp_path: Path) -> None:
    """``bench.writes``: the gateway's and the limit's files hold the same families; each run gets fresh
    copies of both (what a run wrote is gone for the next), deleted afterwards."""
    import sqlite3

    from bench import writes
    from bench.plan import Plan

    def count(path: Path, table: str) -> int:
        conn = sqlite3.connect(path)
        try:
            return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
        finally:
            conn.close()

    plan = Plan(workdir=tmp_path, ingest_stored=10 * FAMILY_SIZE)
    stored = writes.stored_files(plan, tmp_path / "stored")
    assert stored.resources == 10 * FAMILY_SIZE
    assert count(stored.gateway, "resource") == count(stored.limit, "resource") == stored.resources
    assert count(stored.gateway, "idx_token") == count(stored.limit, "idx_token") > 0
    for _ in range(2):
        with writes._copies(stored, tmp_path / "run", "NORMAL") as conn:
            assert count(tmp_path / "run" / "gateway.db", "resource") == stored.resources
            limits.insert_transaction(conn, limits.prepare_families(Generator(seed=9).families(2)))
            assert count(tmp_path / "run" / "limit.db", "resource") == stored.resources + 2 * FAMILY_SIZE
        assert not list((tmp_path / "run").glob("*.db*"))
    assert count(stored.limit, "resource") == stored.resources
