"""The file-import benchmark keeps working: tiny files, SQLite only, no timing asserted; its bulk setup
stores members exactly as the gateway does (both dialects)."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bench.files import _measure, load_members, main, write_files
from bench.files_account import pg_written, sqlite_written
from gateway.calaim.policy import Policy


def test_files_bench_runs_at_a_tiny_size(tmp_path: Path) -> None:
    out = tmp_path / "files.json"
    results = main(["--rows", "12", "--big-rows", "30", "--dialects", "sqlite", "--chunk", "5", "--out", str(out)])
    figures = [r["figure"] for r in results]
    assert figures[:2] == ["read + parse only, 12 rows", "read + parse only, 30 rows"]
    by_name = {r["figure"]: r for r in results}
    assert by_name["first import (ADD rows), 12 rows, sqlite"]["summary"] == {
        "applied": 12,
        "unchanged": 0,
        "rejected": 0,
    }
    assert by_name["re-import, unchanged file, 12 rows, sqlite"]["summary"] == {
        "applied": 0,
        "unchanged": 12,
        "rejected": 0,
    }
    assert by_name["import of changes (CHG rows), 12 rows, sqlite"]["summary"]["applied"] == 12
    assert by_name["1 row per unknown member, all rejected, 30 rows, sqlite"]["summary"]["rejected"] == 30
    assert all(r["rows"] > 0 and r["rss_mb"] > 0 and r["cpu_us_per_row"] >= 0 for r in results)
    assert by_name["first import (ADD rows), 12 rows, sqlite"]["floor_rate"] > 0
    assert out.exists()


def test_files_bench_skips_the_floor_of_a_long_file(tmp_path: Path) -> None:
    """``--floor-max-rows``: no store floor above it (at 1M rows it would take as long as the import and
    a copy of its ~35 GB); the import is still measured, in stretches of ``--stretch`` rows."""
    argv = ["--rows", "6", "--big-rows", "1", "--dialects", "sqlite", "--figures", "book", "--floor-max-rows", "5"]
    results = main([*argv, "--stretch", "2", "--out", str(tmp_path / "files.json")])
    book = results[-1]
    assert book["summary"]["applied"] == 6
    assert (book["floor_rate"], book["floor_tables"]) == (0.0, {})
    assert [part["rows"] for part in book["stretches"]] == [2, 4, 6]


def test_files_bench_runs_one_figure(tmp_path: Path) -> None:
    """``--figures resend``: the first import runs (the re-import needs it) but only the re-import is measured."""
    out = tmp_path / "files.json"
    argv = ["--rows", "6", "--big-rows", "3", "--dialects", "sqlite", "--figures", "resend", "--out", str(out)]
    results = main(argv)
    measured = [r["figure"] for r in results if "limit_rate" in r]
    assert measured == ["re-import, unchanged file, 6 rows, sqlite"]
    assert results[-1]["summary"] == {"applied": 0, "unchanged": 6, "rejected": 0}


def _stored_rows(url: str) -> dict[str, list[str]]:
    """Every row of the store at ``url``, comparable across two loads: a row id replaced by its resource's
    type and id, write times left out (``last_updated``, ``meta.lastUpdated``), rows sorted per table."""
    pg = not url.startswith("sqlite")
    written = pg_written(url, {}) if pg else sqlite_written(Path(make_url(url).database or ""), {})
    names = {row["rid"]: (row["res_type"], row["res_id"]) for row in written["resource"]}
    out: dict[str, list[str]] = {}
    for table, rows in written.items():
        normalized = []
        for row in rows:
            kept = {k: v for k, v in row.items() if k not in ("rid", "hseq", "last_updated")}
            if "rid" in row:
                kept["resource"] = names[row["rid"]]
            if kept.get("body") is not None:
                body = json.loads(bytes(kept["body"]))
                body["meta"].pop("lastUpdated")
                kept["body"] = body
            normalized.append(repr(sorted(kept.items())))
        out[table] = sorted(normalized)
    return out


def test_members_loaded_in_bulk_are_stored_as_the_gateway_stores_them(database_url: str) -> None:
    """``load_members`` writes the members through the store's bulk path (setup of the 100k and 1M-row
    runs): the same resources, versions, index and membership rows as PUTting them through the core."""
    load_members(database_url, 7)
    bulk = _stored_rows(database_url)
    pg = not database_url.startswith("sqlite")
    if pg:
        other = str(make_url(database_url).set(database=f"{make_url(database_url).database}_gw"))
        admin = create_engine(database_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {make_url(other).database}"))
    else:
        other = database_url.replace(".db", "-gw.db") if database_url.endswith(".db") else database_url + "-gw"
    try:
        load_members(other, 7, through_gateway=True)
        assert bulk == _stored_rows(other)
    finally:
        if pg:
            with admin.connect() as conn:
                conn.execute(text(f"DROP DATABASE IF EXISTS {make_url(other).database} WITH (FORCE)"))
            admin.dispose()
    assert len(bulk["resource"]) == 14 + len(Policy.load().organizations)
    assert {"idx_member", "idx_token", "idx_reference", "idx_string", "idx_date", "idx_uri"} <= set(bulk)


def test_a_worker_reports_its_own_peak_rss_not_its_parents(tmp_path: Path) -> None:
    """The bench process holds 400 MiB (as it once held the members it had loaded); a worker it starts
    reports its own peak, well below that (``ru_maxrss`` kept the parent's across the exec)."""
    files = write_files(tmp_path, 3, 1, ("book",))
    held = bytearray(400 * 2**20)
    held[::4096] = b"\x01" * len(held[::4096])  # touched: resident
    measured = _measure("parse", files["book"], "sqlite://", 1000)
    assert measured["rows"] == 3
    assert 0 < measured["rss_mb"] < 300
    assert len(held) == 400 * 2**20
