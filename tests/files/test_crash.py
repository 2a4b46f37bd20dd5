"""Crash safety with real processes: ``calaim-gateway files watch --once`` is killed (SIGKILL) in the middle
of a file, then run again; every good row ends applied exactly once, every bad row reported once, and the
file reaches the archive only after its last row committed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import orjson
from sqlalchemy import create_engine, select, text

from gateway.fhir.context import Context
from gateway.store.schema import file_inbound, file_row_error, outbox, resource, resource_version
from tests.files.support import add_members, auth_row, write_file

ROWS = 300
BAD = {50, 122, 251}  # rows whose CIN is unknown


def _watch(database_url: str, root: Path) -> subprocess.Popen[bytes]:
    cli = Path(sys.executable).parent / "calaim-gateway"
    env = {
        **os.environ,
        "CALAIM_FILES_CHUNK_ROWS": "25",
        "CALAIM_FILES_SETTLE_S": "0",
        "CALAIM_SQLITE_SYNCHRONOUS": "NORMAL",
        "CALAIM_LOG_LEVEL": "warning",
    }
    command = [
        str(cli),
        "files",
        "watch",
        "--once",
        "--no-schedule",
        "--root",
        str(root),
        "--database-url",
        database_url,
    ]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_kill_in_the_middle_then_restart_applies_every_row_once(
    plan_ctx: Context, database_url: str, tmp_path: Path
) -> None:
    add_members(plan_ctx, range(1, ROWS + 1))
    root = tmp_path / "exchange"
    rows = [
        auth_row(k, cin="99999999Z" if k in BAD else None).values() if k in BAD else auth_row(k).values()
        for k in range(1, ROWS + 1)
    ]
    write_file(root / "hn-altamed" / "inbox" / "book.txt", "hn-authorization", rows)
    engine = create_engine(database_url.replace("postgresql://", "postgresql+psycopg://"))
    first = _watch(database_url, root)
    deadline = time.monotonic() + 120
    position = 0
    while time.monotonic() < deadline and first.poll() is None:
        with engine.connect() as conn:
            position = conn.execute(select(file_inbound.c.position)).scalar() or 0
        if position >= 60:
            break
        time.sleep(0.05)
    assert first.poll() is None, first.stdout.read().decode() if first.stdout else ""
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    with engine.connect() as conn:
        stopped_at = int(conn.execute(select(file_inbound.c.position)).scalar_one())
    assert 0 < stopped_at < ROWS + 1
    assert not (root / "hn-altamed" / "archive").exists() or not list((root / "hn-altamed" / "archive").iterdir())
    assert [p.name for p in (root / ".work" / "hn-altamed").iterdir()] == ["book.txt"]
    second = _watch(database_url, root)
    output = second.communicate(timeout=300)[0].decode()
    assert second.returncode == 0, output
    archived = list((root / "hn-altamed" / "archive").iterdir())
    assert len(archived) == 1 and archived[0].name.endswith("-book.txt")
    with engine.connect() as conn:
        entry = conn.execute(select(file_inbound)).one()
        errors = conn.execute(select(file_row_error.c.row_no, file_row_error.c.code)).all()
        numbers = Counter(
            orjson.loads(body)["preAuthRef"]
            for (body,) in conn.execute(
                select(resource.c.body).where(resource.c.res_type == "CoverageEligibilityResponse")
            )
        )
        versions = conn.execute(
            text("SELECT max(version_id) FROM resource WHERE res_type = 'CoverageEligibilityResponse'")
        ).scalar_one()
        # Each referral's Task in its two versions (created Pending, moved by the decision), none twice; the
        # HN's own authorizations are not sent back to it, so they write no reconciliation event.
        tasks = Counter(
            rid for (rid,) in conn.execute(select(resource_version.c.rid).where(resource_version.c.res_type == "Task"))
        )
        events = conn.execute(select(outbox.c.topic).where(outbox.c.topic == "calaim.authorization>files")).all()
        referrals = conn.execute(
            text("SELECT count(*) FROM resource WHERE res_type = 'ServiceRequest' AND deleted = :f"), {"f": False}
        ).scalar_one()
    engine.dispose()
    good = ROWS - len(BAD)
    assert (entry.status, entry.position, entry.rows_read) == ("done", ROWS + 1, ROWS)
    assert (entry.rows_applied, entry.rows_rejected) == (good, len(BAD))
    assert sorted(row for row, _ in errors) == sorted(k + 1 for k in BAD)  # each bad row reported once
    assert len(numbers) == good and set(numbers.values()) == {1} and versions == 1
    assert len(tasks) == good and set(tasks.values()) == {2} and events == []
    assert referrals == good
