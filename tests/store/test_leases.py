"""Named leadership (gateway/store/leases.py), on SQLite (lease rows) and PostgreSQL (advisory locks).

One holder at a time, within a process and across real processes; a holder that stops renewing loses
the lease after its ttl; a killed holder's lease is taken over (PostgreSQL: as soon as its session ends;
SQLite: once its row expires).
"""

from __future__ import annotations

import signal
import time

import pytest
from sqlalchemy import Engine

from gateway.store.leases import Lease, current_holder
from tests.store.background_procs import Receiver, spawn

TTL = 1.0


def test_one_holder_at_a_time(engine: Engine) -> None:
    first = Lease(engine, "file-schedule", ttl_seconds=30)
    second = Lease(engine, "file-schedule", ttl_seconds=30)
    other_job = Lease(engine, "mllp-listener", ttl_seconds=30)
    try:
        assert current_holder(engine, "file-schedule") is None
        assert first.acquire() and first.held
        assert not second.acquire() and not second.held
        assert other_job.acquire()  # names are independent
        assert first.acquire() and first.renew()  # taking it again is a renewal, not a second lock
        assert current_holder(engine, "file-schedule") == first.holder
        assert not second.renew()  # never held
        first.release()
        assert not first.held and not first.renew()
        assert current_holder(engine, "file-schedule") is None
        assert second.acquire()
        assert not first.acquire()
    finally:
        for lease in (first, second, other_job):
            lease.release()


def test_a_holder_that_stops_renewing_loses_the_lease(engine: Engine) -> None:
    """SQLite: the row expires. PostgreSQL: idle_session_timeout ends the silent holder's session."""
    stale = Lease(engine, "file-schedule", ttl_seconds=TTL)
    fresh = Lease(engine, "file-schedule", ttl_seconds=TTL)
    try:
        assert stale.acquire()
        time.sleep(TTL + 0.5)  # e.g. a process paused, or cut off from the database
        assert not stale.held  # judged locally: it must stop acting before anyone can take over
        assert fresh.acquire()
        assert not stale.renew() and not stale.held
        assert current_holder(engine, "file-schedule") == fresh.holder
    finally:
        stale.release()
        fresh.release()


def test_processes_never_hold_the_lease_together(database_url: str) -> None:
    with Receiver() as receiver:
        procs = [
            spawn("contend", database_url, "mllp-listener", str(receiver.port), "--seconds", "1") for _ in range(3)
        ]
        try:
            errors = [p.communicate(timeout=60)[1].decode() for p in procs if p.wait(timeout=60) != 0]
        finally:
            for p in procs:
                p.kill()
        assert not errors, errors[0]
        lines = receiver.lines()
    # Each holder reports "enter" after acquiring and "leave" (acknowledged) before releasing.
    assert lines and len(lines) % 2 == 0
    for enter, leave in zip(lines[::2], lines[1::2], strict=True):
        assert enter.startswith("enter ") and leave == "leave " + enter.removeprefix("enter "), (enter, leave)
    assert len({line for line in lines if line.startswith("enter ")}) >= 2, "the lease never changed hands"


def test_a_killed_holder_is_taken_over(database_url: str, engine: Engine) -> None:
    standby = Lease(engine, "mllp-listener", ttl_seconds=TTL)
    with Receiver() as receiver:
        holder = spawn("hold", database_url, "mllp-listener", str(receiver.port), "--ttl", str(TTL))
        try:
            deadline = time.monotonic() + 30
            while not any(line.startswith("acquired ") for line in receiver.lines()):
                assert time.monotonic() < deadline and holder.poll() is None, "the holder never got the lease"
                time.sleep(0.02)
            time.sleep(TTL * 1.2)
            assert not standby.acquire()  # renewed past its ttl: still held
        finally:
            holder.send_signal(signal.SIGKILL)
            holder.wait()
        killed_at = time.monotonic()
        while not standby.acquire():
            assert time.monotonic() - killed_at < TTL + 5, "the lease was never taken over"
            time.sleep(0.02)
        took = time.monotonic() - killed_at
        assert not any(line.startswith("lost ") for line in receiver.lines())
    try:
        if engine.dialect.name == "postgresql":
            assert took < TTL  # the advisory lock went with the killed process's session
        else:
            assert took > TTL / 2  # the row had to expire (renewed every ttl/4 until the kill)
        assert current_holder(engine, "mllp-listener") == standby.holder
    finally:
        standby.release()


def test_lease_arguments_are_checked(engine: Engine) -> None:
    with pytest.raises(ValueError, match="ttl"):
        Lease(engine, "x", ttl_seconds=0.1)
    with pytest.raises(ValueError, match="name"):
        Lease(engine, "", ttl_seconds=5)
