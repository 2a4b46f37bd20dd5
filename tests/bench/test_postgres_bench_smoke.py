"""``bench.postgres`` keeps working: a tiny run on a PostgreSQL cluster it starts itself (no timing asserted).

Skipped without PostgreSQL (no ``initdb``) unless ``CALAIM_TEST_REQUIRE_POSTGRES=1``, as in ``tests/conftest.py``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bench.postgres import main
from tests.support.postgres import find_pg_bin


@pytest.fixture
def pg_available() -> None:
    if find_pg_bin() is None:
        if os.environ.get("CALAIM_TEST_REQUIRE_POSTGRES") == "1":
            pytest.fail("CALAIM_TEST_REQUIRE_POSTGRES=1 but PostgreSQL (initdb) was not found")
        pytest.skip("PostgreSQL is not installed (no initdb): bench.postgres smoke test skipped")


@pytest.mark.usefixtures("pg_available")
def test_postgres_bench_tiny_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "postgres.json"
    argv = ["--quick", "--resources", "2000", "--only", "postgresql", "--pg-workers", "1", "--write-workers", "1"]
    assert main([*argv, "--seconds", "1", "--loadgen", "python", "--output", str(output)]) == 0
    printed = capsys.readouterr().out
    assert "transaction ingest over HTTP" in printed
    figures = {f["name"]: f for f in json.loads(output.read_text(encoding="utf-8"))["figures"]}
    assert figures["transaction ingest over HTTP, 1000/Bundle, 1 process [PostgreSQL]"]["value"] > 0
    at_full = [name for name in figures if name.startswith("transaction ingest over HTTP at ")]
    assert len(at_full) == 2 and all(figures[name]["value"] > 0 for name in at_full)  # 1 process; N with 4 clients
    assert figures["bulk ingest in-process (dispatch), 1000-entry tx [PostgreSQL]"]["limit"] > 0
    for kind in ("identifier", "subject", "date", "family", "chain", "include"):
        assert figures[f"search {kind}, 1w [PostgreSQL]"]["details"]["load"]["requests"] > 0
    assert figures["single create, 1 process(es) [PostgreSQL]"]["details"]["load"]["errors"] == 0
