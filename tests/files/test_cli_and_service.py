"""The command line (``calaim-gateway files import|export|watch``) as real processes, the outbound
schedule, and the file exchange running inside ``calaim-gateway serve`` (SERVICE_FACTORIES)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import datetime
from datetime import time as clock
from pathlib import Path

import httpx

from adapters.files.exports import ACTIVITY, ELIGIBILITY, RECONCILIATION, Exporter, ecm_providers, health_networks
from adapters.files.schedule import run_due, week_ending
from gateway.fhir.context import Context
from tests.files.conftest import POLICY
from tests.files.support import add_members, auth_row, write_file
from tests.support.server import gateway_process

CLI = [str(Path(sys.executable).parent / "calaim-gateway"), "files"]
ENV = {**os.environ, "CALAIM_SQLITE_SYNCHRONOUS": "NORMAL", "CALAIM_LOG_LEVEL": "warning"}


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=ENV, timeout=300, check=False)


def test_import_and_export_commands(plan_ctx: Context, database_url: str, tmp_path: Path) -> None:
    add_members(plan_ctx, range(1, 4))
    good = write_file(tmp_path / "good.txt", "hn-authorization", [auth_row(k).values() for k in (1, 2)])
    done = _cli("import", str(good), "--database-url", database_url)
    assert done.returncode == 0, done.stderr
    assert "good.txt: done; rows read 2, applied 2, unchanged 0, rejected 0; 0 problem(s)" in done.stdout
    again = _cli("import", str(good), "--database-url", database_url)
    assert again.returncode == 0 and "good.txt: duplicate" in again.stdout
    mixed = write_file(tmp_path / "mixed.txt", "hn-authorization", [auth_row(3).values(), auth_row(9).values()])
    partly = _cli("import", str(mixed), "--database-url", database_url, "--report-dir", str(tmp_path / "r"))
    assert partly.returncode == 1 and "applied 1" in partly.stdout and "rejected 1" in partly.stdout
    assert (tmp_path / "r" / "mixed.txt.errors.txt").exists()
    wrong = write_file(tmp_path / "wrong.txt", "hn-authorization", [auth_row(3).values()], receiver="hn-ccn")
    refused = _cli("import", str(wrong), "--database-url", database_url, "--sender", "hn-altamed")
    assert refused.returncode == 2 and "rejected" in refused.stdout
    out = tmp_path / "out"
    exported = _cli("export", "reconciliation", "--hn", "hn-altamed", "--date", "2025-01-06", "--database-url",
                    database_url, "--output-dir", str(out))  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    (name,) = [p.name for p in out.iterdir()]
    assert name == "authorization-reconciliation_hn-altamed_20250106_000001.txt" and "0 rows" in exported.stdout
    unknown = _cli("export", "eligibility", "--hn", "nobody", "--database-url", database_url)
    assert unknown.returncode == 2 and "not an Organization" in unknown.stderr


def test_the_schedule_produces_each_file_once_when_due(plan_ctx: Context, tmp_path: Path) -> None:
    exporter = Exporter(plan_ctx, POLICY, lambda party: tmp_path / party)
    now = datetime.now().replace(hour=7, minute=0)
    assert run_due(exporter, POLICY, now.replace(hour=5), daily_at=clock(6, 0), weekly_day=0) == []
    written = run_due(exporter, POLICY, now, daily_at=clock(6, 0), weekly_day=0)
    kinds = sorted({(w.kind, w.recipient) for w in written})
    networks, providers = health_networks(POLICY), ecm_providers(POLICY)
    expected = {(RECONCILIATION, n) for n in networks} | {(ACTIVITY, n) for n in networks}
    expected |= {(ELIGIBILITY, p) for p in set(networks) | set(providers)}
    assert set(kinds) == expected and len(written) == len(expected)
    assert run_due(exporter, POLICY, now, daily_at=clock(6, 0), weekly_day=0) == []
    ending = week_ending(now, 0)
    assert ending.weekday() == 6 and 1 <= (now.date() - ending.date()).days <= 7


def test_the_server_runs_the_file_exchange(plan_ctx: Context, database_url: str, tmp_path: Path) -> None:
    add_members(plan_ctx, range(1, 4))
    root = tmp_path / "exchange"
    env = {
        "CALAIM_FILES_ROOT": str(root),
        "CALAIM_FILES_POLL_S": "0.2",
        "CALAIM_FILES_SETTLE_S": "0",
        "CALAIM_FILES_DAILY_AT": "00:00",
    }
    with gateway_process(database_url, env=env) as base:
        inbox = root / "hn-altamed" / "inbox"
        write_file(tmp_path / "auth.txt", "hn-authorization", [auth_row(k).values() for k in (1, 2, 3)])
        deadline = time.monotonic() + 60
        while not inbox.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        (tmp_path / "auth.txt").rename(inbox / "auth.txt")
        archive = root / "hn-altamed" / "archive"
        while time.monotonic() < deadline and not (archive.exists() and list(archive.iterdir())):
            time.sleep(0.1)
        assert [p.name.endswith("-auth.txt") for p in archive.iterdir()] == [True]
        found = httpx.get(f"{base}/fhir/CoverageEligibilityResponse", params={"responsible-party": "hn"}).json()
        assert sorted(e["resource"]["preAuthRef"] for e in found["entry"]) == ["HN-0000001", "HN-0000002", "HN-0000003"]
        outbox = root / "hn-altamed" / "outbox"
        while time.monotonic() < deadline and len([p for p in outbox.iterdir() if not p.name.startswith(".")]) < 3:
            time.sleep(0.1)
        kinds = sorted(p.name.split("_")[0] for p in outbox.iterdir() if not p.name.startswith("."))
        assert kinds == sorted([ACTIVITY, RECONCILIATION, ELIGIBILITY])
