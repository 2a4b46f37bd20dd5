"""Step 1 (``Preparer.prepare``: hl7apy parse, profile check, map) in worker processes, so that parsing uses
the other cores while the listener's process applies and commits (docs/hl7v2.md "Throughput").

hl7apy builds an object per field, component and subcomponent: parsing one REF^I12 costs several
milliseconds of pure-Python CPU, more than the rest of step 1 together. In threads it would hold the GIL
that the committing thread needs; in ``workers`` processes it runs beside it. Workers are started with
``spawn`` (the listener's process has threads; ``fork`` would copy their locks), receive the
``Preparer`` once, and prepare one message at the start so that hl7apy's v2.5/v2.5.1 reference tables
and the R4B models of the validator's model pass (``adapters.hl7v2.prevalidate``) are loaded before the
first real message; those objects (~110,000) are then frozen out of the cyclic garbage collector
(``gc.freeze``), which otherwise scans them again in its older generations (hl7apy's element trees are
cycles, so it runs often: ~60 µs of collector per message saved). A worker holds no database connection and
keeps nothing between messages but its memos. A thread of each worker waits on its parent's sentinel and ends
the worker when the listener's process is gone, even by kill -9 (``gateway.parent_watch``).

The transport is one socket pair per worker, driven by the listener's **event loop itself** (asyncio
streams): a message is written to its worker as soon as its frame is read (the worker always has the
next messages queued, so it never waits for the parent), and the answers are read by the loop as they
come. ``concurrent.futures.ProcessPoolExecutor`` put two threads of its own between the loop and the
worker (its manager and its queue feeder) and kept at most one message queued per worker: every message
needed those threads, and the event loop, to win the GIL from the committing thread in turn (up to a
5 ms switch interval each), so the worker sat idle half the time under load (docs/performance.md "County
HL7 v2", session 6). Frames are ``multiprocessing.connection``'s (a 4-byte big-endian length, then the
pickle), so the worker side is a plain ``Connection``. The message bytes are not sent back (the parent
has them): an answer is the pickled ``Prepared`` without ``raw``, a few kB.

``workers=0`` prepares in a thread of the listener's process instead (one core). When a worker process
dies (killed, out of memory), the messages it had are prepared in threads and a new worker is started,
up to ``MAX_RESTARTS`` times; after that the listener prepares in threads (a log line says so).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import logging
import multiprocessing
import multiprocessing.connection
import os
import pickle
import socket
import struct
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess

from adapters.hl7v2.prepare import Prepared, Preparer
from gateway.parent_watch import exit_with_parent

log = logging.getLogger("adapters.hl7v2")

MAX_WORKERS = 4
MAX_RESTARTS = 5
START_TIMEOUT_S = 120.0
WARM_UP = (
    b"MSH|^~\\&|WARM|UP|GW|PLAN|20250101000000||REF^I12^REF_I12|WARM-UP|P|2.5.1\r"
    b"RF1|P|R|ecm^ECM^CALAIMSVC|||CR-0|20250101\rPRD|RP|Warm^Up\rPID|1||90000000A^^^MEDI-CAL^MA||Warm^Up\r"
)
"""A synthetic message parsed by each worker at start (loads hl7apy's reference tables; no PHI)."""
READY = b"ready"
"""A worker's first frame: it has parsed ``WARM_UP`` and takes messages."""
_LENGTH = struct.Struct("!i")


def default_workers() -> int:
    """Parse workers for this machine: one per core but the one the committing thread needs, at most
    ``MAX_WORKERS``; none on a single core. A parse costs about what a commit does, so one worker per
    committing thread keeps up."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return 0 if cores < 2 else min(cores - 1, MAX_WORKERS)


def serve_worker(preparer: Preparer, conn: multiprocessing.connection.Connection) -> None:
    """A worker process's life: warm up, say ``READY``, then answer each ``(raw, too_large, limit)`` frame
    with its ``Prepared`` (without ``raw``) in order, until the parent closes its end (or ends)."""
    exit_with_parent("hl7v2-parent")
    preparer.prepare(WARM_UP)
    gc.collect()
    gc.freeze()  # what the warm-up loaded (hl7apy's tables, the R4B models) is never scanned by the collector again
    conn.send_bytes(READY)
    while True:
        try:
            raw, too_large, limit = pickle.loads(conn.recv_bytes())  # noqa: S301  (our parent, a private socket pair)
        except (EOFError, OSError):
            return
        prepared = preparer.prepare(raw, too_large=too_large, limit=limit)
        prepared.raw = b""  # the parent has it
        conn.send_bytes(pickle.dumps(prepared, pickle.HIGHEST_PROTOCOL))
        prepared.release()  # no cycle left for the collector (``Prepared.release``)


class WorkerDied(Exception):
    """The worker process ended with messages outstanding."""


@dataclass(eq=False)
class _Worker:
    """One worker process and the listener's end of its socket pair."""

    process: BaseProcess
    conn: multiprocessing.connection.Connection | None
    """The parent's end until the event loop takes it over (``_attach``)."""
    greeted: bool
    """Its ``READY`` frame was read already (by ``ParsePool.start``)."""
    writer: asyncio.StreamWriter | None = None
    reader_task: asyncio.Task[None] | None = None
    attaching: asyncio.Future[None] | None = None
    """Its ``_open`` (the first message to it starts it)."""
    outstanding: collections.deque[asyncio.Future[bytes]] = field(default_factory=collections.deque)
    dead: bool = False


class ParsePool:
    """``await prepare(...)`` in a worker process (or a thread when ``workers`` is 0); ``await aclose()``
    (or ``close()`` outside the event loop) at the end."""

    def __init__(self, preparer: Preparer, workers: int) -> None:
        self.preparer = preparer
        self.workers = workers
        self.restarts = 0
        self._context = multiprocessing.get_context("spawn")
        self._pool: list[_Worker] = [self._spawn() for _ in range(workers)]

    def _spawn(self) -> _Worker:
        parent_end, child_end = self._context.Pipe(duplex=True)
        process = self._context.Process(
            target=serve_worker, args=(self.preparer, child_end), name="hl7v2-parse", daemon=True
        )
        process.start()
        child_end.close()
        return _Worker(process, parent_end, greeted=False)

    def start(self) -> None:
        """Wait until every worker has imported hl7apy and parsed ``WARM_UP`` (blocking: run it in a thread)."""
        for worker in self._pool:
            conn = worker.conn
            if conn is not None and not worker.greeted:
                if not conn.poll(START_TIMEOUT_S) or conn.recv_bytes() != READY:
                    raise RuntimeError("an HL7 v2 parse worker did not start")
                worker.greeted = True

    def worker_pids(self) -> list[int]:
        """The process ids of the running workers (empty when preparing in threads)."""
        return sorted(worker.process.pid for worker in self._pool if worker.process.pid is not None)

    async def prepare(self, raw: bytes, *, too_large: int | None, limit: int | None) -> Prepared:
        """Step 1 of one message, off the event loop: in the worker with the fewest messages outstanding."""
        for dead in [worker for worker in self._pool if worker.dead]:
            self._replace(dead)
        if self._pool:
            worker = min(self._pool, key=lambda w: len(w.outstanding))
            try:
                await self._attach(worker)
                answer = await self._send(worker, pickle.dumps((raw, too_large, limit), pickle.HIGHEST_PROTOCOL))
            except (WorkerDied, ConnectionError, OSError):
                self._replace(worker)
            else:
                prepared: Prepared = pickle.loads(answer)  # noqa: S301  (our own worker, a private socket pair)
                prepared.raw = raw
                return prepared
        return await asyncio.to_thread(self.preparer.prepare, raw, too_large=too_large, limit=limit)

    async def _attach(self, worker: _Worker) -> None:
        """Take the worker's socket into the running event loop (once; concurrent callers wait for it)."""
        if worker.writer is not None:
            return
        if worker.attaching is None:
            worker.attaching = asyncio.ensure_future(self._open(worker))
        await asyncio.shield(worker.attaching)

    async def _open(self, worker: _Worker) -> None:
        conn, worker.conn = worker.conn, None
        if conn is None:
            raise WorkerDied()
        sock = socket.socket(fileno=os.dup(conn.fileno()))
        conn.close()
        reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 20)
        worker.reader_task = asyncio.create_task(self._read(worker, reader))
        worker.writer = writer

    async def _send(self, worker: _Worker, payload: bytes) -> bytes:
        if worker.dead or worker.writer is None:
            raise WorkerDied()
        answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        worker.outstanding.append(answer)
        worker.writer.write(_LENGTH.pack(len(payload)) + payload)
        return await answer

    async def _read(self, worker: _Worker, reader: asyncio.StreamReader) -> None:
        """The worker's answers, in the order its messages were sent; at end of file, the worker is gone."""
        greeted = worker.greeted
        try:
            while True:
                (size,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
                payload = await reader.readexactly(size)
                if not greeted:
                    greeted = worker.greeted = payload == READY
                    continue
                answer = worker.outstanding.popleft()
                if not answer.done():
                    answer.set_result(payload)
        except (asyncio.IncompleteReadError, ConnectionError, OSError, IndexError, struct.error):
            pass
        worker.dead = True
        while worker.outstanding:
            answer = worker.outstanding.popleft()
            if not answer.done():
                answer.set_exception(WorkerDied())

    def _replace(self, worker: _Worker) -> None:
        """A worker died: the first message to notice starts another one (or, after ``MAX_RESTARTS``, none)."""
        if worker not in self._pool:
            return  # already replaced
        self._pool.remove(worker)
        _let_go(worker)
        self.restarts += 1
        if self.restarts > MAX_RESTARTS:
            log.error("hl7v2: parse workers died %d times; parsing in threads from now on", self.restarts)
            for other in self._pool:
                _let_go(other)  # it ends when it has answered what it had and sees its socket closed
            self._pool = []
            return
        log.error("hl7v2: a parse worker died; starting another")
        self._pool.append(self._spawn())

    async def aclose(self) -> None:
        """Stop the workers: each ends when it has answered what it was sent and sees its socket closed."""
        pool, self._pool = self._pool, []
        for worker in pool:
            _let_go(worker)
            if worker.writer is not None:
                with contextlib.suppress(Exception):
                    await worker.writer.wait_closed()
            if worker.reader_task is not None:
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await asyncio.wait_for(worker.reader_task, 10)
        await asyncio.to_thread(_end, pool)

    def close(self) -> None:
        """Stop the workers from outside the event loop: the ones the loop never talked to are told by the end
        of their socket; the others (their socket belongs to the loop) are ended."""
        pool, self._pool = self._pool, []
        for worker in pool:
            if worker.writer is not None:
                worker.dead = True
                worker.process.terminate()
            else:
                _let_go(worker)
        _end(pool)


def _let_go(worker: _Worker) -> None:
    """Close the listener's end of a worker's socket (the worker ends when it reads the end of it)."""
    worker.dead = True
    if worker.conn is not None:
        worker.conn.close()
        worker.conn = None
    elif worker.writer is not None and not worker.writer.is_closing():
        worker.writer.close()


def _end(pool: list[_Worker]) -> None:
    """Wait for the workers to end (a few seconds), then end the ones that did not."""
    for worker in pool:
        worker.process.join(timeout=10)
        if worker.process.is_alive():
            worker.process.kill()
            worker.process.join(timeout=5)
