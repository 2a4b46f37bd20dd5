"""The drop-directory transport (adapters/files/dropdir.py, service.FileExchange): files move to archive only
after their rows are committed, reports go to the sender's outbox, and links, odd names, oversized files,
in-progress uploads and files claiming another sender are refused or left alone."""

from __future__ import annotations

import os
from pathlib import Path

from adapters.files.service import FileExchange
from gateway.fhir.context import Context
from gateway.settings import Settings
from tests.files.support import add_members, auth_row, write_file


def _exchange(ctx: Context, settings: Settings, root: Path, **overrides: object) -> FileExchange:
    values = {"files_root": root, "files_settle_s": 0.0, "files_chunk_rows": 3, **overrides}
    return FileExchange(ctx, settings.model_copy(update=values))


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_inbox_files_are_imported_then_archived(plan_ctx: Context, settings: Settings, tmp_path: Path) -> None:
    root = tmp_path / "exchange"
    exchange = _exchange(plan_ctx, settings, root)
    add_members(plan_ctx, range(1, 6))
    inbox = root / "hn-altamed" / "inbox"
    write_file(inbox / "auth-20250106.txt", "hn-authorization", [auth_row(k).values() for k in range(1, 6)])
    bad = [auth_row(1).values(), auth_row(2, cin="99999999Z").values()]
    write_file(inbox / "auth-20250107.txt", "hn-authorization", bad, sequence=2)
    write_file(inbox / ".upload-in-progress.txt", "hn-authorization", bad, sequence=3)
    assert exchange.run_once(schedule=False) == 2
    assert _names(inbox) == [".upload-in-progress.txt"]
    archived = _names(root / "hn-altamed" / "archive")
    assert len(archived) == 2 and archived[0].endswith("-auth-20250106.txt")
    assert _names(root / "hn-altamed" / "outbox") == ["auth-20250107.txt.errors.txt"]
    assert _names(root / ".work" / "hn-altamed") == []
    report = (root / "hn-altamed" / "outbox" / "auth-20250107.txt.errors.txt").read_text().splitlines()
    assert report[1].split("|")[2:5] == ["3", "MEMBER_CIN", "unknown"]


def test_links_names_sizes_and_senders_are_refused(plan_ctx: Context, settings: Settings, tmp_path: Path) -> None:
    root = tmp_path / "exchange"
    exchange = _exchange(plan_ctx, settings, root, files_max_bytes=2000)
    add_members(plan_ctx, range(1, 40))
    inbox = root / "hn-altamed" / "inbox"
    outside = write_file(tmp_path / "outside.txt", "hn-authorization", [auth_row(1).values()])
    (inbox / "linked.txt").symlink_to(outside)
    write_file(inbox / "bad name;rm.txt", "hn-authorization", [auth_row(2).values()])
    write_file(inbox / "big.txt", "hn-authorization", [auth_row(k).values() for k in range(3, 40)])
    write_file(inbox / "other.txt", "hn-authorization", [auth_row(3).values()], sender="hn-ccn")
    exchange.run_once(schedule=False)
    assert _names(inbox) == []
    rejected = _names(root / "hn-altamed" / "rejected")
    assert len(rejected) == 4 and any(n.endswith("-linked.txt") for n in rejected)
    assert any(os.path.islink(root / "hn-altamed" / "rejected" / n) for n in rejected)  # moved, never followed
    assert outside.exists()
    reports = {p.name: p.read_text() for p in (root / "hn-altamed" / "outbox").iterdir()}
    assert "symbolic links are refused" in reports["linked.txt.errors.txt"]
    assert "letters, digits" in reports["refused-file.errors.txt"]
    assert "more than the 2000 accepted" in reports["big.txt.errors.txt"]
    assert "names sender hn-ccn" in reports["other.txt.errors.txt"]
    assert exchange.importer.run(outside).counts.applied == 1  # nothing of it was applied before


def test_unsettled_files_wait_and_interrupted_files_resume(
    plan_ctx: Context, settings: Settings, tmp_path: Path
) -> None:
    root = tmp_path / "exchange"
    add_members(plan_ctx, range(1, 4))
    waiting = _exchange(plan_ctx, settings, root, files_settle_s=3600.0)
    inbox = root / "hn-altamed" / "inbox"
    write_file(inbox / "fresh.txt", "hn-authorization", [auth_row(1).values()])
    assert waiting.run_once(schedule=False) == 0 and _names(inbox) == ["fresh.txt"]
    work = root / ".work" / "hn-altamed"
    write_file(work / "interrupted.txt", "hn-authorization", [auth_row(k).values() for k in (2, 3)])
    assert waiting.run_once(schedule=False) == 1
    assert _names(work) == [] and _names(inbox) == ["fresh.txt"]
    assert any(n.endswith("-interrupted.txt") for n in _names(root / "hn-altamed" / "archive"))
