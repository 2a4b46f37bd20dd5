"""The SQLite store's write-ahead log is checkpointed after ``sqlite_wal_autocheckpoint`` pages
(``gateway/store/database.py``; https://www.sqlite.org/pragma.html#pragma_wal_autocheckpoint), and a log
that grew past ``JOURNAL_SIZE_LIMIT`` is cut back when it is reset."""

from __future__ import annotations

import time
from pathlib import Path

from sqlalchemy import text

from gateway.fhir.core import build_context
from gateway.settings import Settings
from gateway.store.database import JOURNAL_SIZE_LIMIT
from tests.conftest import patient


def _pragma(settings: Settings, name: str) -> int:
    ctx = build_context(settings)
    try:
        with ctx.repo.engine.connect() as conn:
            return int(conn.execute(text(f"PRAGMA {name}")).scalar_one())
    finally:
        ctx.repo.engine.dispose()


def test_every_connection_takes_the_configured_checkpoint_size(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    assert _pragma(Settings(database_url=url), "wal_autocheckpoint") == Settings().sqlite_wal_autocheckpoint == 10_000
    assert _pragma(Settings(database_url=url, sqlite_wal_autocheckpoint=64), "wal_autocheckpoint") == 64
    assert _pragma(Settings(database_url=url), "journal_size_limit") == JOURNAL_SIZE_LIMIT


def test_the_log_is_checkpointed_once_it_passes_the_size(tmp_path: Path) -> None:
    """With a small checkpoint size the log stays small while writes go on; with the default it holds
    them all (no checkpoint yet), and everything written is read back either way."""
    sizes = {}
    for pages in (16, 10_000):
        path = tmp_path / f"{pages}.db"
        ctx = build_context(Settings(database_url=f"sqlite:///{path}", sqlite_wal_autocheckpoint=pages))
        ctx.repo.checkpointer = None  # the commits' own checkpoints only (the thread's: the next test)
        try:
            for n in range(40):
                with ctx.repo.write() as tx:
                    for k in range(5):
                        tx.create(patient(family=f"Wal{n}x{k}", cin=f"9{n:03d}{k:04d}A"))
            with ctx.repo.engine.connect() as conn:
                count = conn.execute(text("SELECT count(*) FROM resource")).scalar_one()
            sizes[pages] = Path(f"{path}-wal").stat().st_size
        finally:
            ctx.repo.engine.dispose()
        assert count == 200
    assert sizes[16] < sizes[10_000] / 4, sizes


def test_writes_are_checkpointed_by_a_thread_of_its_own(tmp_path: Path) -> None:
    """With commits never checkpointing (``sqlite_wal_autocheckpoint=0``), the store's checkpointer copies
    the log into the database file shortly after the writes (``gateway.store.checkpoint``), and its thread
    ends once the writes stop."""
    path = tmp_path / "c.db"
    ctx = build_context(Settings(database_url=f"sqlite:///{path}", sqlite_wal_autocheckpoint=0))
    checkpointer = ctx.repo.checkpointer
    assert checkpointer is not None
    checkpointer.interval_s, checkpointer.idle_s = 0.05, 0.3
    try:
        before = path.stat().st_size
        for n in range(20):
            with ctx.repo.write() as tx:
                for k in range(5):
                    tx.create(patient(family=f"Ck{n}x{k}", cin=f"8{n:03d}{k:04d}A"))
        deadline = time.monotonic() + 10
        while checkpointer.checkpoints == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert checkpointer.checkpoints >= 1
        assert path.stat().st_size > before  # the pages are in the database file, not only in the log
        while checkpointer.running and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not checkpointer.running  # idle: no thread left behind
        with ctx.repo.write() as tx:
            tx.create(patient(family="Again", cin="80000001A"))
        assert checkpointer.running  # the next write starts it again
    finally:
        ctx.repo.engine.dispose()


def test_a_memory_store_has_no_checkpointer() -> None:
    ctx = build_context(Settings(database_url="sqlite://"))
    assert ctx.repo.checkpointer is None
