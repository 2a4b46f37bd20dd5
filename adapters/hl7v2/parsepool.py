"""Step 1 (``Preparer.prepare``: hl7apy parse, profile check, map) in worker processes, so that parsing uses
the other cores while the listener's process applies and commits (docs/hl7v2.md "Performance").

hl7apy builds an object per field, component and subcomponent: parsing one REF^I12 costs several
milliseconds of pure-Python CPU, more than the rest of step 1 together. In threads it would hold the GIL
that the committing thread needs; in ``workers`` processes it runs beside it. Workers are started with
``spawn`` (the listener's process has threads; ``fork`` would copy their locks), receive the
``Preparer`` once, and prepare one message at the start so that hl7apy's v2.5/v2.5.1 reference tables
and the R4B models of the validator's model pass (``adapters.hl7v2.prevalidate``) are loaded before the
first real message. A worker holds no database connection and keeps nothing between
messages. A thread of each worker waits on its parent's sentinel and ends the worker when the listener's
process is gone, even by kill -9 (the pool's queue alone would not tell it: each worker holds both ends
of that pipe, so it never reads end-of-file).

``workers=0`` prepares in a thread of the listener's process instead (one core). When a worker process
dies (killed, out of memory), the message it had is prepared in a thread and the pool is started again,
up to ``MAX_RESTARTS`` times; after that the listener prepares in threads (a log line says so).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import multiprocessing.connection
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from adapters.hl7v2.prepare import Prepared, Preparer
from gateway.parent_watch import exit_with_parent

log = logging.getLogger("adapters.hl7v2")

MAX_WORKERS = 4
MAX_RESTARTS = 5
WARM_UP = (
    b"MSH|^~\\&|WARM|UP|GW|PLAN|20250101000000||REF^I12^REF_I12|WARM-UP|P|2.5.1\r"
    b"RF1|P|R|ecm^ECM^CALAIMSVC|||CR-0|20250101\rPRD|RP|Warm^Up\rPID|1||90000000A^^^MEDI-CAL^MA||Warm^Up\r"
)
"""A synthetic message parsed by each worker at start (loads hl7apy's reference tables; no PHI)."""

_preparer: Preparer | None = None


def default_workers() -> int:
    """Parse workers for this machine: one per core but the one the committing thread needs, at most
    ``MAX_WORKERS``; none on a single core. A parse costs about what a commit does, so one worker per
    committing thread keeps up."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return 0 if cores < 2 else min(cores - 1, MAX_WORKERS)


def _start_worker(preparer: Preparer) -> None:
    global _preparer
    _preparer = preparer
    exit_with_parent("hl7v2-parent")
    preparer.prepare(WARM_UP)


def _prepare_in_worker(raw: bytes, too_large: int | None, limit: int | None) -> Prepared:
    assert _preparer is not None, "the worker's initializer did not run"
    return _preparer.prepare(raw, too_large=too_large, limit=limit)


class ParsePool:
    """``await prepare(...)`` in a worker process (or a thread when ``workers`` is 0); ``close()`` at the end."""

    def __init__(self, preparer: Preparer, workers: int) -> None:
        self.preparer = preparer
        self.workers = workers
        self.restarts = 0
        self._pool = self._new_pool() if workers > 0 else None

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker,
            initargs=(self.preparer,),
        )

    def start(self) -> None:
        """Start every worker now (each imports hl7apy and parses ``WARM_UP``) rather than on first use."""
        if self._pool is not None:
            for future in [self._pool.submit(_prepare_in_worker, WARM_UP, None, None) for _ in range(self.workers)]:
                future.result(timeout=120)

    def worker_pids(self) -> list[int]:
        """The process ids of the running workers (empty when preparing in threads)."""
        processes = getattr(self._pool, "_processes", None) or {}
        return sorted(int(pid) for pid in processes)

    async def prepare(self, raw: bytes, *, too_large: int | None, limit: int | None) -> Prepared:
        """Step 1 of one message, off the event loop."""
        pool = self._pool
        if pool is not None:
            loop = asyncio.get_running_loop()
            try:
                return await loop.run_in_executor(pool, _prepare_in_worker, raw, too_large, limit)
            except BrokenProcessPool:
                pool.shutdown(wait=False, cancel_futures=True)
                if self._pool is pool:  # the first message to notice replaces the pool
                    self.restarts += 1
                    if self.restarts > MAX_RESTARTS:
                        log.error("hl7v2: parse workers died %d times; parsing in threads from now on", self.restarts)
                        self._pool = None
                    else:
                        log.error("hl7v2: a parse worker died; starting the parse workers again")
                        self._pool = self._new_pool()
        return await asyncio.to_thread(self.preparer.prepare, raw, too_large=too_large, limit=limit)

    def close(self) -> None:
        """Stop the workers (messages being parsed finish first)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
