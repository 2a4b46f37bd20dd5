"""Group commit for SQLite: the writers of one process that queue for the write lock share one commit.

SQLite has one writer at a time, and with ``synchronous=FULL`` each commit waits for an ``fsync`` of the
write-ahead log (https://www.sqlite.org/wal.html, https://www.sqlite.org/pragma.html#pragma_synchronous).
Concurrent single-resource writes then spend most of their time in that fsync, one after another. Group
commit, as PostgreSQL's ``commit_delay`` or InnoDB's binary-log group commit do it, lets them share it:

- a writer takes the process's write lock and runs its unit of work in the group's transaction
  (``BEGIN IMMEDIATE``, opened by the group's first writer), inside a ``SAVEPOINT`` unless it is that
  first writer;
- when it is done and other writers are already waiting for the lock, it does not commit: it releases
  the lock to the next one and waits for the group's commit. The last writer of the group (nobody
  waiting, or the group full or old) commits once for all and wakes them;
- a writer whose work fails rolls back to its own savepoint and fails alone: the work of the others in
  the group is untouched (a failing first writer rolls back the transaction, which holds nothing else, and
  the writers waiting start a new group). If the commit itself fails, every writer of the group fails (nothing of the
  group is on disk, and nobody was told otherwise).

No caller learns of success before the commit that made its work durable, so the guarantees of a
transaction per request hold: atomicity per unit (its savepoint), durability at the answer, and the
isolation SQLite gives a single writer (units run one after another, each seeing the ones before it).
A writer never waits for one that has not started: the group grows only while writers are queued.
Not used for in-memory databases (one connection shared by every thread) nor PostgreSQL (a connection
per writer; the server groups commits itself).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from sqlalchemy import Connection, Engine, RootTransaction

from gateway.errors import ServiceUnavailable
from gateway.store import driver

_SAVEPOINT, _RELEASE, _ROLLBACK_TO = (f"{verb} calaim_group_writer" for verb in ("SAVEPOINT", "RELEASE", "ROLLBACK TO"))
"""Driver SQL (``gateway.store.driver``): SQLAlchemy's ``begin_nested`` costs more than the statement."""

GROUP_MAX_WAIT_S = 0.05
"""A group takes no new writer once its first finished writer has waited this long for the commit."""


@dataclass
class _Group:
    """One open write transaction shared by the writers that joined it."""

    conn: Connection
    transaction: RootTransaction
    members: int = 0
    waiting_since: float | None = None
    """When its first writer finished and began to wait for the commit."""
    broken: BaseException | None = None
    """Set when a savepoint could not be rolled back: the transaction is unusable and is rolled back."""
    error: BaseException | None = None
    """Why the group's commit failed (every member fails)."""
    done: threading.Event = field(default_factory=threading.Event)


@dataclass
class GroupStats:
    """How many commits the writers of this process shared (``docs/performance.md``)."""

    commits: int = 0
    writers: int = 0


class GroupCommitFailed(Exception):
    """The commit of a group failed after this writer's work was done: none of the group is stored."""


class SqliteGroupWriter:
    """The writers of one process on one SQLite file: serialized by a lock, committed in groups.

    ``open_transaction(deadline)`` opens the group's transaction (``BEGIN IMMEDIATE`` on a pooled
    connection, after the cross-process file lock); ``release()`` runs after the group ends (the file
    lock)."""

    def __init__(
        self,
        engine: Engine,
        *,
        lock_timeout_s: float,
        max_writers: int,
        acquire_file_lock: Callable[[float], bool],
        release_file_lock: Callable[[], None],
        busy: Callable[[], ServiceUnavailable],
    ) -> None:
        self._engine = engine
        self._lock = threading.Lock()
        self._count_lock = threading.Lock()
        self._waiting = 0
        self._group: _Group | None = None
        self._lock_timeout_s = lock_timeout_s
        self._max_writers = max(1, max_writers)
        self._acquire_file_lock = acquire_file_lock
        self._release_file_lock = release_file_lock
        self._busy = busy
        self.stats = GroupStats()

    @property
    def waiting(self) -> int:
        """Writers of this process queued for the write lock right now."""
        return self._waiting

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A unit of work inside the current group's transaction; returns once it is committed (or raises:
        its own error, or ``GroupCommitFailed`` when the group's commit failed)."""
        deadline = time.monotonic() + self._lock_timeout_s
        with self._count_lock:
            self._waiting += 1
        try:
            acquired = self._lock.acquire(timeout=self._lock_timeout_s)
        finally:
            with self._count_lock:
                self._waiting -= 1
        if not acquired:
            raise self._busy()
        group = self._group
        if group is None:
            try:
                group = self._group = self._open(deadline)
            except BaseException:
                self._lock.release()
                raise
        # The group's first writer needs no savepoint: if it fails, the transaction holds nothing else.
        alone = group.members == 0
        failure: BaseException | None = None
        try:
            if not alone:
                driver.execute(group.conn, _SAVEPOINT)
            yield group.conn
            if not alone:
                driver.execute(group.conn, _RELEASE)
        except BaseException as exc:
            failure = exc
            if alone:
                group.broken = exc  # rolled back whole below: nobody else is in it
            else:
                try:
                    driver.execute(group.conn, _ROLLBACK_TO)
                    driver.execute(group.conn, _RELEASE)
                except BaseException as broken:
                    group.broken = broken
        group.members += 1
        if self._defer(group):
            self._lock.release()
            if failure is not None:
                raise failure  # its own work is undone; the group goes on without it
            group.done.wait()
            if group.error is not None:
                raise GroupCommitFailed("the shared commit of this write failed") from group.error
            return
        self._group = None
        try:
            self._finish(group)
        finally:
            group.done.set()
            self._lock.release()
        if failure is not None:
            raise failure
        if group.error is not None:
            raise group.error

    def _defer(self, group: _Group) -> bool:
        """Whether the writer that just finished leaves the commit to a queued writer."""
        if group.broken is not None or self._waiting == 0 or group.members >= self._max_writers:
            return False
        now = time.monotonic()
        if group.waiting_since is None:
            group.waiting_since = now
        return now - group.waiting_since < GROUP_MAX_WAIT_S

    def _open(self, deadline: float) -> _Group:
        if not self._acquire_file_lock(deadline):
            raise self._busy()
        try:
            conn = self._engine.connect().execution_options(sqlite_begin="IMMEDIATE")
            try:
                return _Group(conn, conn.begin())
            except BaseException:
                conn.close()
                raise
        except BaseException:
            self._release_file_lock()
            raise

    def _finish(self, group: _Group) -> None:
        """Commit the group (roll it back if it broke); record a failed commit in ``group.error``."""
        try:
            if group.broken is not None:
                group.error = group.broken
                group.transaction.rollback()
            else:
                group.transaction.commit()
                self.stats.commits += 1
                self.stats.writers += group.members
        except BaseException as exc:
            group.error = exc
            with contextlib.suppress(Exception):  # the connection is closed below either way
                group.transaction.rollback()
        finally:
            group.conn.close()
            self._release_file_lock()
