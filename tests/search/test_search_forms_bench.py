"""Smoke test of ``bench.search_forms_ab``: it loads a tiny store and times both page forms of every kind."""

from __future__ import annotations

from pathlib import Path

from bench import search_forms_ab


def test_the_ab_bench_runs_on_a_tiny_sqlite_store(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'forms.db'}"
    results = search_forms_ab.main(["--database-url", url, "--load", "500", "--per-kind", "2"])
    kinds = {name.rsplit(" ", 1)[0] for name in results}
    assert {"identifier", "subject", "date", "family", "chain", "include", "gender"} <= kinds
    assert all(figure["median_ms"] >= 0 for figure in results.values())
