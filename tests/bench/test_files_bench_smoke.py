"""The file-import benchmark keeps working: tiny files, SQLite only, no timing asserted."""

from __future__ import annotations

from pathlib import Path

from bench.files import main


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
    assert out.exists()


def test_files_bench_runs_one_figure(tmp_path: Path) -> None:
    """``--figures resend``: the first import runs (the re-import needs it) but only the re-import is measured."""
    out = tmp_path / "files.json"
    argv = ["--rows", "6", "--big-rows", "3", "--dialects", "sqlite", "--figures", "resend", "--out", str(out)]
    results = main(argv)
    measured = [r["figure"] for r in results if "limit_rate" in r]
    assert measured == ["re-import, unchanged file, 6 rows, sqlite"]
    assert results[-1]["summary"] == {"applied": 0, "unchanged": 6, "rejected": 0}
