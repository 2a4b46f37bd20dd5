"""Checkpoints of a SQLite store's write-ahead log, from a thread of their own instead of a writer's commit.

In WAL mode (https://www.sqlite.org/wal.html) a commit appends pages to the log; a *checkpoint* copies them
back into the database file. By default the commit that takes the log past ``wal_autocheckpoint`` pages
runs the checkpoint itself, so one writer in every few pays for copying everything the others wrote (and
an ``fsync`` of the database file), and its caller waits: with SQLite's 1,000 pages that was nearly every
large transaction, with 10,000 it is a rarer but longer stall (measured on the ingest bench's rows in
transactions of 5: p99 of a commit 15.7 ms with 1,000 pages, 24.9 ms with 10,000, 6.9 ms with none;
docs/performance.md, session 8).

``WalCheckpointer`` takes that work off the commit path: after a write (``wrote``, one flag set and a
liveness check), a thread with its own connection runs ``PRAGMA wal_checkpoint(PASSIVE)`` at most every
``interval_s``. A passive checkpoint takes no lock a writer or reader waits for
(https://www.sqlite.org/c3ref/wal_checkpoint_v2.html): it copies what no reader still needs and leaves
the rest to the next round, and the log is reused from its start once all of it was copied. The
connections' ``wal_autocheckpoint`` stays as a bound (``CALAIM_SQLITE_WAL_AUTOCHECKPOINT``): should this
thread fall behind, a commit checkpoints as before. The thread ends after ``idle_s`` without writes and
the next write starts it again, so an idle store (or a test's) holds no thread. Errors (the file gone, a
busy checkpoint) are logged without content and end nothing but that round.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time

log = logging.getLogger(__name__)

INTERVAL_S = 1.0
"""Seconds between two checkpoints of a store being written."""
IDLE_S = 5.0
"""Seconds without a write after which the thread ends (the next write starts it again)."""


class WalCheckpointer:
    """The checkpoint thread of one SQLite database file (module docstring)."""

    def __init__(self, path: str, *, interval_s: float = INTERVAL_S, idle_s: float = IDLE_S) -> None:
        self.path = path
        self.interval_s = interval_s
        self.idle_s = idle_s
        self.checkpoints = 0
        """Checkpoints run (observability, tests)."""
        self._lock = threading.Lock()
        self._pending = False
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        """Whether the checkpoint thread is alive (it ends when idle; the next ``wrote`` starts it)."""
        return self._thread is not None

    def wrote(self) -> None:
        """A transaction committed: a checkpoint is due within ``interval_s`` (starts the thread if needed)."""
        self._pending = True
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)
                    self._thread.start()

    def _run(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=1.0)
        try:
            idle_since = time.monotonic()
            while True:
                time.sleep(self.interval_s)
                with self._lock:
                    due, self._pending = self._pending, False
                    if not due and time.monotonic() - idle_since >= self.idle_s:
                        self._thread = None  # under the lock: a ``wrote`` after this starts a new thread
                        return
                if due:
                    idle_since = time.monotonic()
                    self._checkpoint(conn)
        finally:
            conn.close()

    def _checkpoint(self, conn: sqlite3.Connection) -> None:
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            self.checkpoints += 1
        except sqlite3.Error as exc:  # busy, or the file gone: the next round (or a commit) does it
            log.warning("WAL checkpoint skipped (%s)", type(exc).__name__)
