"""Where the commit thread's CPU goes, part by part (docs/performance.md "County HL7 v2", session 11).

``.venv/bin/python -m bench.hl7v2 --commit-parts GROUP [--messages N]`` commits fresh new-member REF^I12
in-process, as the listener's commit thread does (``InboundProcessor.commit`` of ``GROUP`` messages at a
time, each prepared and pickled once as a parse worker's answer is, ``Prepared.release`` after its group),
on a SQLite file with ``synchronous=FULL`` after ``WARM_UP`` messages, and prints per message the thread
CPU (``time.thread_time``: user and system time of this thread, so the COMMIT's ``pwrite``/``fdatasync``
count) of each part, and the write-ahead-log frames each group wrote. Parts are inclusive (an indented one
runs inside the one above it; the flushes include the one the referral intake makes, counted in both)
and are measured by wrapping the functions named in ``PARTS`` for the measured groups only: a few µs per
call of overhead, so the figures are for accounting, not for A/B (use instruction counts for that).

The frames come from the WAL index header (https://www.sqlite.org/walformat.html: ``mxFrame``, a 32-bit
native-order integer at offset 16 of the ``-shm`` file): its growth over a commit; commits after which a
checkpoint restarted the log are not counted.
"""

from __future__ import annotations

import collections
import functools
import pickle
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

WARM_UP = 300
"""Messages committed (in groups of 4) before the measured ones: the store's trees past their first pages."""

PARTS: tuple[tuple[str, str, str], ...] = (
    ("adapters.hl7v2.processor", "InboundProcessor.commit", "commit"),
    ("gateway.store.group_commit", "SqliteGroupWriter._open", " BEGIN (connection, file lock)"),
    ("adapters.hl7v2.batch", "plans_for", " screen (one query)"),
    ("adapters.hl7v2.batch", "write", " write"),
    ("gateway.store.repository", "WriteTransaction.create", "  creates (index rows extracted)"),
    ("gateway.store.repository", "WriteTransaction.flush", "  flushes (row inserts)"),
    ("adapters.hl7v2.batch", "take_in", "  referral intake"),
    ("adapters.hl7v2.batch", "_hold", "  conditional keys"),
    ("adapters.hl7v2.messagelog", "insert_rows", "  message-log rows"),
    ("adapters.hl7v2.processor", "InboundProcessor._ack", "  ACKs"),
    ("gateway.store.group_commit", "SqliteGroupWriter._finish", " COMMIT (WAL frames, fsync)"),
)
"""(module, attribute path, label) of each part measured."""


@contextmanager
def _measured(spent: collections.Counter[str]) -> Iterator[None]:
    """``PARTS`` wrapped to add their thread CPU (ns) to ``spent``; restored on exit."""
    restore: list[tuple[Any, str, Any]] = []
    for module_name, path, label in PARTS:
        owner: Any = sys.modules[module_name]
        *holders, name = path.split(".")
        for holder in holders:
            owner = getattr(owner, holder)
        original = owner.__dict__[name]
        restore.append((owner, name, original))
        setattr(owner, name, _timed(original, label, spent))
    try:
        yield
    finally:
        for owner, name, original in reversed(restore):
            setattr(owner, name, original)


def _timed(function: Callable[..., Any], label: str, spent: collections.Counter[str]) -> Callable[..., Any]:
    @functools.wraps(function)
    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.thread_time_ns()
        try:
            return function(*args, **kwargs)
        finally:
            spent[label] += time.thread_time_ns() - start

    return timed


def _frames(shm: Path) -> int:
    """``mxFrame`` of the WAL index header (module docstring)."""
    with shm.open("rb") as index:
        header = index.read(20)
    return int(struct.unpack("=I", header[16:20])[0])


def commit_parts(group: int, count: int) -> list[str]:
    """The report described in the module docstring, one line per part."""
    from adapters.hl7v2.config import mapping_config
    from adapters.hl7v2.processor import InboundProcessor
    from bench.hl7v2 import ref_i12
    from gateway.calaim.policy import Policy
    from gateway.fhir.core import build_context
    from gateway.settings import Settings

    with tempfile.TemporaryDirectory() as tmp:
        database = Path(tmp) / "parts.db"
        settings = Settings(database_url=f"sqlite:///{database}", sqlite_synchronous="FULL", auth_enabled=False)
        ctx = build_context(settings)
        policy = Policy.load(settings.calaim_plan_dir)
        processor = InboundProcessor(ctx, settings, policy, mapping_config(settings, policy))

        def prepared(first: int, last: int) -> list[Any]:
            return [pickle.loads(pickle.dumps(processor.prepare(ref_i12(n, "P")))) for n in range(first, last)]

        def commit(batch: list[Any]) -> None:
            if any(outcome.code != "AA" for outcome in processor.commit(batch)):
                raise RuntimeError("a bench message was not applied")
            for message in batch:
                message.release()

        warm = prepared(0, WARM_UP)
        for first in range(0, WARM_UP, 4):
            commit(warm[first : first + 4])
        measured = prepared(WARM_UP, WARM_UP + count)
        spent: collections.Counter[str] = collections.Counter()
        frames: list[int] = []
        shm = database.with_name(database.name + "-shm")
        with _measured(spent):
            for first in range(0, count, group):
                before = _frames(shm)
                commit(measured[first : first + group])
                after = _frames(shm)
                if after > before:
                    frames.append(after - before)
        ctx.repo.engine.dispose()
    lines = [f"commit thread CPU per REF^I12, groups of {group} ({count} new members after {WARM_UP}), µs:"]
    lines += [f"  {label:34s} {spent[label] / count / 1000:8.0f}" for _, _, label in PARTS]
    if frames:
        lines.append(f"WAL frames per group: median {statistics.median(frames):.0f} ({len(frames)} commits)")
    return lines
