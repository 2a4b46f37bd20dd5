"""The file lock that orders the writers of several gateway processes on one SQLite file
(gateway/store/repository.py ``WriterFileLock``)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.store.repository import WriterFileLock

HOLDER = """
import sys, time
from gateway.store.repository import WriterFileLock
lock = WriterFileLock.beside(sys.argv[1])
assert lock.acquire(time.monotonic() + 10)
print("held", flush=True)
sys.stdin.readline()
lock.release()
print("released", flush=True)
sys.stdin.readline()
"""


def test_a_second_process_waits_for_the_lock_and_gets_it_once_released(tmp_path: Path) -> None:
    database = str(tmp_path / "store.db")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, database], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdin is not None and holder.stdout is not None
    try:
        assert holder.stdout.readline().strip() == "held"
        lock = WriterFileLock.beside(database)
        assert lock is not None
        assert not lock.acquire(time.monotonic() + 0.2), "the lock is held by the other process"
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "released"
        assert lock.acquire(time.monotonic() + 5)
        lock.release()
    finally:
        holder.kill()
        holder.wait()


def test_a_crashed_holder_frees_the_lock(tmp_path: Path) -> None:
    database = str(tmp_path / "store.db")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, database], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "held"
    holder.kill()  # SIGKILL: the kernel drops the process's locks
    holder.wait()
    lock = WriterFileLock.beside(database)
    assert lock is not None and lock.acquire(time.monotonic() + 5)
    lock.release()


@pytest.mark.parametrize("database", [None, "", ":memory:"])
def test_no_file_lock_without_a_file(database: str | None) -> None:
    assert WriterFileLock.beside(database) is None
