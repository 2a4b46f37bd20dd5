"""Named leadership: at most one live gateway instance runs a singleton job (DESIGN.md choice 8).

Some work must run in one process only, whatever the number of instances: the MLLP listener on the
county's port ("mllp-listener"), a file schedule ("file-schedule"). Each instance asks for the lease;
the one that gets it does the work and renews the lease more often than ``ttl_seconds``; the others try
again later, and one of them takes over when the holder dies or stops renewing::

    lease = Lease(engine, "file-schedule", ttl_seconds=30)
    while not stop.is_set():
        if lease.renew() or lease.acquire():
            run_one_bounded_step()  # shorter than the ttl; check ``lease.held`` inside long steps
        stop.wait(10)
    lease.release()

One interface, two mechanisms:

- PostgreSQL: a session-level advisory lock (``pg_try_advisory_lock(LEASE_LOCK_SPACE, hashtext(name))``)
  on a connection the lease keeps open. The server drops the lock with the session, so a killed holder
  frees it at once; ``idle_session_timeout`` (PostgreSQL 14+) ends the session of a holder that has not
  renewed for ``ttl_seconds`` (hung, or cut off by the network). No clock is involved.
- SQLite: a row of the ``lease`` table (name, holder, expires_at) taken under ``BEGIN IMMEDIATE`` when
  absent or expired. A killed holder's lease is free after its ``expires_at``.

``held`` is judged locally and conservatively: the lease counts as held until ``ttl_seconds`` after the
start of the last successful acquire or renew (the server side expires no earlier than that).
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from typing import Protocol

from sqlalchemy import Connection, Engine, delete, insert, select, text, update
from sqlalchemy.exc import SQLAlchemyError

from gateway.store.database import write_transaction
from gateway.store.schema import lease as lease_table

log = logging.getLogger(__name__)

LEASE_LOCK_SPACE = 0x4C454153
"""First key of the two-key advisory locks of leases ("LEAS"): keeps them apart from other advisory locks
(the migration lock uses the one-key form, which PostgreSQL keeps in a separate key space anyway)."""

_PG_TRY_LOCK = text("SELECT pg_try_advisory_lock(:space, hashtext(:name))")
_PG_UNLOCK = text("SELECT pg_advisory_unlock(:space, hashtext(:name))")
_PG_SET = text("SELECT set_config(:setting, :value, false)")
_PG_HOLDER = text(
    "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
    " WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2"
    " AND l.classid = CAST(:space AS oid) AND l.objid = CAST(hashtext(:name) AS oid)"
)


def _micros() -> int:
    return time.time_ns() // 1000


def default_holder() -> str:
    """``host:pid:random``: unique per ``Lease`` object (two leases in one process are two contenders)."""
    return f"{socket.gethostname()[:32]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class _Mechanism(Protocol):
    def take(self) -> bool: ...
    def keep(self) -> bool: ...
    def give_up(self) -> None: ...


class Lease:
    """A named lease for one contender (``holder``), over an advisory lock or a ``lease`` row."""

    def __init__(self, engine: Engine, name: str, *, holder: str | None = None, ttl_seconds: float = 30.0) -> None:
        if not 0 < len(name) <= 64 or ttl_seconds < 1:
            raise ValueError("a lease needs a name of 1-64 characters and ttl_seconds >= 1")
        self.name = name
        self.holder = holder or default_holder()
        self.ttl_seconds = ttl_seconds
        self._mechanism: _Mechanism = (
            _AdvisoryLock(engine, name, self.holder, ttl_seconds)
            if engine.dialect.name == "postgresql"
            else _LeaseRow(engine, name, self.holder, ttl_seconds)
        )
        self._valid_until: float | None = None  # time.monotonic() deadline while held

    @property
    def held(self) -> bool:
        """True while the last acquire/renew succeeded less than ``ttl_seconds`` ago."""
        return self._valid_until is not None and time.monotonic() < self._valid_until

    def acquire(self) -> bool:
        """Take the lease if it is free (or already ours); False when another holder has it."""
        return self._attempt(self._mechanism.take)

    def renew(self) -> bool:
        """Extend a lease we hold; False (and no longer held) when it was lost or never taken."""
        if self._valid_until is None:
            return False
        return self._attempt(self._mechanism.keep)

    def release(self) -> None:
        """Give the lease up so another contender can take it at once (a no-op when not ours)."""
        self._valid_until = None
        try:
            self._mechanism.give_up()
        except SQLAlchemyError:
            log.warning("lease %s: release failed; it frees itself when the session or ttl ends", self.name)

    def _attempt(self, step: Callable[[], bool]) -> bool:
        started = time.monotonic()
        try:
            ok = step()
        except SQLAlchemyError:
            # Holding cannot be confirmed: act as if lost, which is the safe side for a singleton job.
            log.warning("lease %s: database error while taking or renewing", self.name, exc_info=True)
            ok = False
        self._valid_until = started + self.ttl_seconds if ok else None
        return ok


class _AdvisoryLock:
    """PostgreSQL: a session advisory lock on a connection held open for as long as the lease is held."""

    def __init__(self, engine: Engine, name: str, holder: str, ttl_seconds: float) -> None:
        self._engine = engine
        self._keys = {"space": LEASE_LOCK_SPACE, "name": name}
        self._holder = holder
        self._ttl_ms = int(ttl_seconds * 1000)
        self._conn: Connection | None = None

    def take(self) -> bool:
        if self._conn is not None and self.keep():
            return True  # already ours: locking again would stack a second lock needing a second unlock
        conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            if not conn.execute(_PG_TRY_LOCK, self._keys).scalar_one():
                conn.close()  # session untouched: back to the pool
                return False
            # From here the session is the lease's own; it is discarded, never pooled, when the lease ends.
            conn.execute(_PG_SET, {"setting": "application_name", "value": self._holder[:63]})
            if (conn.dialect.server_version_info or (0,)) >= (14,):
                conn.execute(_PG_SET, {"setting": "idle_session_timeout", "value": str(self._ttl_ms)})
        except BaseException:
            conn.invalidate()
            conn.close()
            raise
        self._conn = conn
        return True

    def keep(self) -> bool:
        if self._conn is None:
            return False
        try:
            # A session keeps its advisory locks until it ends: a live session means the lease is ours.
            self._conn.execute(text("SELECT 1"))
        except SQLAlchemyError:
            self._discard()
            return False
        return True

    def give_up(self) -> None:
        if self._conn is None:
            return
        try:
            self._conn.execute(_PG_UNLOCK, self._keys)
        finally:
            self._discard()

    def _discard(self) -> None:
        assert self._conn is not None
        conn, self._conn = self._conn, None
        conn.invalidate()  # closing the session drops any lock left, and its settings with it
        conn.close()


class _LeaseRow:
    """SQLite: the ``lease`` row, written under ``BEGIN IMMEDIATE`` so two contenders cannot both win."""

    def __init__(self, engine: Engine, name: str, holder: str, ttl_seconds: float) -> None:
        self._engine = engine
        self._name = name
        self._holder = holder
        self._ttl_micros = int(ttl_seconds * 1_000_000)

    def take(self) -> bool:
        now = _micros()
        row = lease_table.c
        with write_transaction(self._engine) as conn:
            current = conn.execute(select(row.holder, row.expires_at).where(row.name == self._name)).first()
            claim = {"holder": self._holder, "expires_at": now + self._ttl_micros}
            if current is None:
                conn.execute(insert(lease_table).values(name=self._name, **claim))
            elif current.holder == self._holder or current.expires_at <= now:
                conn.execute(update(lease_table).where(row.name == self._name).values(**claim))
            else:
                return False
        return True

    def keep(self) -> bool:
        # Still our row, even past expires_at, means nobody took it meanwhile (taking rewrites the holder).
        row = lease_table.c
        with write_transaction(self._engine) as conn:
            extended = (
                update(lease_table)
                .where(row.name == self._name, row.holder == self._holder)
                .values(expires_at=_micros() + self._ttl_micros)
            )
            return conn.execute(extended).rowcount == 1

    def give_up(self) -> None:
        row = lease_table.c
        with write_transaction(self._engine) as conn:
            conn.execute(delete(lease_table).where(row.name == self._name, row.holder == self._holder))


def current_holder(engine: Engine, name: str) -> str | None:
    """Who holds lease ``name`` now (None: nobody), for operators and health checks.

    On PostgreSQL this is the holder's ``application_name`` (the first 63 characters of ``holder``).
    """
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            found = conn.execute(_PG_HOLDER, {"space": LEASE_LOCK_SPACE, "name": name}).scalar()
        else:
            row = lease_table.c
            query = select(row.holder).where(row.name == name, row.expires_at > _micros())
            found = conn.execute(query).scalar()
    return None if found is None else str(found)
