"""Opening the SQLite store while another process holds its lock (gateway/store/database.py ``_set_wal``):
``PRAGMA journal_mode=WAL`` can answer "database is locked" at once, and a new connection then waits for
the lock, within the store's lock timeout, instead of failing."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from gateway.store.database import _set_wal


def _locked_file(path: Path) -> sqlite3.Connection:
    """A rollback-journal file held under an EXCLUSIVE lock by another connection (switching it to WAL
    needs that lock; the holder releases it when told)."""
    seed = sqlite3.connect(path, isolation_level=None)
    seed.execute("CREATE TABLE t (x)")
    seed.close()
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    return holder


def test_the_wal_switch_waits_for_the_lock(tmp_path: Path) -> None:
    holder = _locked_file(tmp_path / "s.db")
    opener = sqlite3.connect(tmp_path / "s.db", isolation_level=None, timeout=0)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        opener.execute("PRAGMA journal_mode=WAL")  # what the bare pragma does
    released = threading.Timer(0.2, lambda: holder.execute("COMMIT"))
    released.start()
    started = time.monotonic()
    _set_wal(opener.cursor(), within_s=10)
    released.join()
    assert time.monotonic() - started >= 0.1, "it waited for the holder"
    assert opener.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    opener.close()
    holder.close()


def test_the_wait_is_bounded(tmp_path: Path) -> None:
    holder = _locked_file(tmp_path / "s.db")
    opener = sqlite3.connect(tmp_path / "s.db", isolation_level=None, timeout=0)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        _set_wal(opener.cursor(), within_s=0.1)
    opener.close()
    holder.execute("COMMIT")
    holder.close()
