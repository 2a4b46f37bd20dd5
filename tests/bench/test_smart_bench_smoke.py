"""The SMART token benchmark keeps working at a tiny size (no timing asserted)."""

from __future__ import annotations

from pathlib import Path

from bench.smart_tokens import main, run


def test_smart_token_bench_runs(tmp_path: Path) -> None:
    figures = run(4, tmp_path)
    assert [f.name for f in figures] == [
        "client_credentials tokens",
        "refresh (rotation) tokens",
        "verify, first sight",
        "verify, cache hit",
    ]
    assert all(f.value > 0 and f.limit for f in figures)


def test_smart_token_bench_cli_writes_results(tmp_path: Path) -> None:
    output = tmp_path / "out.json"
    main(["--requests", "3", "--output", str(output)])
    assert output.exists() and '"client_credentials tokens"' in output.read_text()
