"""The validation and index rows of large transactions, computed in worker processes beside them.

A created resource costs the transaction's thread three pure computations before its rows are written:
the R4 element walk and the ``fhir.resources`` R4B model (``gateway.fhir.validation.validate_resource``,
the model pass alone being most of it) and the search-index rows (``gateway.search.extract``). For a
transaction of many entries they run in other processes, on the other cores, while the transaction's
thread works through the entries before them: the resources are sent once their references are
rewritten (``urn:uuid`` → ``Type/id``), in the order the transaction will write them, in chunks that grow
from a small first one (so the first verdicts come back at once), two chunks per worker ahead of the one
awaited. Before an entry is dispatched its judgement is awaited, so an invalid entry fails exactly where
it would have failed validated in the thread (https://hl7.org/fhir/R4/http.html#transaction: all or
nothing, at the first error); a thread that would wait judges the last resources not yet handed over
itself (``Judgements``).

The index rows are used only for the very content they were computed from: the interaction compares
the resource it is about to store (after the write hooks, which may change it) with the bytes that were
sent (``Judgement.rows_for``); when they differ, the thread extracts the rows itself.

The pool is one per process, started by the server (``start``, from the app's lifespan, in the
background: until its workers answer, and in processes that never start it, such as the CLI's commands
and scripts importing the core, transactions validate in their own thread), with ``spawn``ed workers (no
fork of a threaded server; ``spawn`` re-imports the main module, hence no start on first use) that
import the models once. Resources cross the process boundary as orjson bytes, judgements come back as
JSON arrays. A worker that dies breaks the pool: the chunks it did not answer are judged in the calling
thread, and a new pool starts in the background.
"""

from __future__ import annotations

import bisect
import logging
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

import orjson

from gateway import jsonutil
from gateway.errors import Issue
from gateway.parent_watch import exit_with_parent
from gateway.runtime import collector_paused
from gateway.types import JSONObject

log = logging.getLogger(__name__)

MIN_RESOURCES = 32
"""Fewer resources than this are judged in the calling thread (the round trip would not pay off)."""
FIRST_CHUNK = 8
"""Resources of the first chunk; each next one is twice as large, up to an even share per worker."""
CHUNKS_PER_WORKER = 4
"""Chunks per worker once grown: small enough to keep every worker busy, few enough to amortize."""
CHUNKS_AHEAD_PER_WORKER = 2
"""Chunks handed to each worker ahead of the one the transaction's thread waits for; the rest wait in the
thread, which judges the last of them itself rather than wait (``Judgements``)."""

IndexValues = Mapping[str, Sequence[Sequence[Any]]]
"""Index rows per kind, each row the values of its table's columns after ``rid, res_type`` (``param``
first; ``gateway.search.extract.extract_values``), as they come back in JSON."""


@dataclass(frozen=True, slots=True)
class Judgement:
    """What a worker found for one resource: every issue ``validate_resource`` reports, and its index rows
    (None when they could not travel as JSON: the thread then extracts them)."""

    issues: list[Issue]
    rows: IndexValues | None
    basis: bytes
    """The resource's bytes as sent: the content ``issues`` and ``rows`` belong to."""

    @property
    def errors(self) -> list[Issue]:
        """The issues that make the resource invalid (``ensure_valid``'s choice)."""
        return [issue for issue in self.issues if issue.severity in ("error", "fatal")]

    def rows_for(self, resource: JSONObject) -> IndexValues | None:
        """The index rows of ``resource`` when it is still the content that was judged, else None."""
        if self.rows is None:
            return None
        return self.rows if jsonutil.dumps(resource) == self.basis else None


def judge(resource_type: str, resource: JSONObject) -> tuple[list[Issue], IndexValues | None]:
    """The issues and index rows of one resource (in a worker, or in the thread for a lost chunk)."""
    from gateway.fhir.validation import validate_resource
    from gateway.search.extract import extract_values

    issues = validate_resource(resource, resource_type=resource_type)
    if any(issue.severity in ("error", "fatal") for issue in issues):
        return issues, None
    try:
        rows: IndexValues | None = {kind: found for kind, found in extract_values(resource).items() if found}
    except Exception:  # an index the extractor cannot build is the thread's to report, as without the pool
        rows = None
    return issues, rows


def _judge_chunk(payload: bytes) -> bytes:
    """In a worker: the judgement of each ``[url type, resource]`` pair of ``payload``.

    The cyclic collector is paused for the chunk (the worker does nothing else meanwhile): a chunk keeps
    its resources, models and rows alive until it answers, and the collections they would trigger free
    nothing (reference counting frees them); the next automatic collection after the chunk takes any cycle
    it left (``gateway.runtime.collector_paused``)."""
    with collector_paused():
        out: list[list[Any]] = []
        for resource_type, resource in orjson.loads(payload):
            issues, rows = judge(resource_type, resource)
            wire_issues = [[i.code, i.diagnostics, i.severity, list(i.expression)] for i in issues]
            try:
                orjson.dumps(rows)
            except TypeError:  # a value JSON cannot carry (e.g. an integer beyond 64 bits): the thread extracts
                rows = None
            out.append([wire_issues, rows])
        return orjson.dumps(out)


def _warm() -> None:
    """Worker initializer: import the validator, the models of the served types, the profiles and the
    index plans once and freeze them out of the collector's way (``gateway.runtime.settle``, as the server
    process does); leave Ctrl-C to the server process, which shuts the pool down; end with the parent."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    exit_with_parent("model-pool-parent")
    from gateway.runtime import settle

    settle()


Send = Callable[[bytes], "Future[bytes]"]
"""Hands a chunk's payload to a worker (``ProcessPoolExecutor.submit`` of ``_judge_chunk``)."""


class Judgements:
    """Judgements being computed for the resources sent (by position), awaited one chunk at a time.

    Only ``window`` chunks are handed to the workers ahead of the one the thread waits for; the others
    stay here, and a thread that would wait judges the last resources no worker has been given, one at a
    time from the back, until its chunk is back (work stealing: the workers keep their order, and the
    wait becomes work). Each resource is judged once: by a worker if its chunk was handed over, else by
    the thread. Chunks are never taken back from the executor (``Future.cancel``): a cancelled future
    trips CPython 3.11's pool when a worker dies (``terminate_broken`` sets its exception).
    """

    def __init__(
        self, types: Sequence[str], bases: Sequence[bytes], starts: Sequence[int], *, send: Send, window: int
    ) -> None:
        self._types = types
        self._bases = bases
        self._starts = list(starts)
        self._send = send
        self._window = max(1, window)
        self._futures: list[Future[bytes]] = []
        """The futures of the chunks handed to the workers: chunks ``0 .. len - 1``."""
        self._sent_end = 0
        """The end (exclusive) of the positions handed to the workers."""
        self._end = len(bases)
        """Positions from here on were judged by the thread (``_here``) and are never handed over."""
        self._here: dict[int, Judgement] = {}
        self._done: dict[int, list[Judgement]] = {}
        self._closed = False
        self._restarted = False
        self.stolen = 0
        """Resources judged by the waiting thread instead of a worker (observability, tests)."""
        self._hand_over(0)

    def __len__(self) -> int:
        return len(self._bases)

    @property
    def handed_over(self) -> int:
        """Chunks given to the workers so far."""
        return len(self._futures)

    def ready(self, position: int) -> bool:
        """Whether the judgement of the resource sent at ``position`` is there without waiting."""
        if position >= self._end:
            return True
        n = bisect.bisect_right(self._starts, position) - 1
        return n in self._done or (n < len(self._futures) and self._futures[n].done())

    def get(self, position: int) -> Judgement:
        """The judgement of the resource sent at ``position`` (waits for its chunk, judging the last
        resources no worker has been given meanwhile)."""
        if position >= self._end:
            return self._here[position]
        n = bisect.bisect_right(self._starts, position) - 1
        chunk = self._done.get(n)
        if chunk is None:
            chunk = self._done[n] = self._collect(n)
        return chunk[position - self._starts[n]]

    def _hand_over(self, n: int) -> None:
        """Give the workers the next chunks, up to ``window`` ahead of chunk ``n``."""
        while not self._closed and len(self._futures) < min(len(self._starts), n + self._window):
            positions = self._bounds(len(self._futures))
            if positions.start >= self._end:
                return  # the thread judged all of it
            try:
                self._futures.append(self._send(self._payload(positions)))
            except (BrokenProcessPool, RuntimeError) as exc:  # broken, or shut down by a restart meanwhile
                if isinstance(exc, BrokenProcessPool):
                    self._lost()
                self._closed = True  # the thread judges the rest
                return
            self._sent_end = positions.stop

    def _collect(self, n: int) -> list[Judgement]:
        self._hand_over(n)
        if n >= len(self._futures):
            return [self._judge_one(p) for p in self._bounds(n)]  # never handed over (the pool broke)
        future = self._futures[n]
        while not future.done() and self._end > self._sent_end:
            self._end -= 1
            self._here[self._end] = self._judge_one(self._end)
            self.stolen += 1
        try:
            answers: list[list[Any]] = orjson.loads(future.result())
        except Exception as exc:  # a worker died (BrokenProcessPool) or failed: judge the chunk here
            log.warning("judgement chunk failed (%s); judging it in the request thread", type(exc).__name__)
            if isinstance(exc, BrokenProcessPool):
                self._lost()
            return [self._judge_one(p) for p in self._bounds(n)]
        start = self._starts[n]
        return [
            Judgement(
                [Issue(code=c, diagnostics=d, severity=s, expression=tuple(e)) for c, d, s, e in wire_issues],
                rows,
                self._bases[start + offset],
            )
            for offset, (wire_issues, rows) in enumerate(answers)
        ]

    def _lost(self) -> None:
        if not self._restarted:
            _POOL.restart()  # once: the other chunks of this pool are lost too
            self._restarted = True

    def _bounds(self, n: int) -> range:
        """The positions of chunk ``n`` that the thread has not judged."""
        stop = self._starts[n + 1] if n + 1 < len(self._starts) else len(self._bases)
        return range(self._starts[n], min(stop, self._end))

    def _payload(self, positions: range) -> bytes:
        pairs = (b"[%s,%s]" % (orjson.dumps(self._types[p]), self._bases[p]) for p in positions)
        return b"[" + b",".join(pairs) + b"]"

    def _judge_one(self, position: int) -> Judgement:
        issues, rows = judge(self._types[position], orjson.loads(self._bases[position]))
        return Judgement(issues, rows, self._bases[position])


def chunk_bounds(count: int, workers: int) -> list[int]:
    """Start positions of the chunks of ``count`` resources: growing from ``FIRST_CHUNK`` to an even share."""
    largest = max(FIRST_CHUNK, -(-count // max(1, workers * CHUNKS_PER_WORKER)))
    starts, start, size = [], 0, FIRST_CHUNK
    while start < count:
        starts.append(start)
        start += size
        size = min(size * 2, largest)
    return starts


class ModelPool:
    """The process's pool of model-check workers (``workers`` processes), started by ``start``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._executor: ProcessPoolExecutor | None = None
        self._ready = threading.Event()
        self._workers = 0
        self._failed = False
        self.submitted = 0
        """Resources sent to the workers since the process started (observability, tests)."""

    def submit(self, resources: Sequence[tuple[str, bytes]], *, workers: int) -> Judgements | None:
        """Start judging ``resources`` (url type, resource bytes) in the workers; None when the caller
        should judge them itself (too few resources, pool disabled, or the pool still starting)."""
        if workers <= 0 or len(resources) < MIN_RESOURCES:
            return None
        executor = self._running(workers)
        if executor is None:
            return None
        types = [rtype for rtype, _ in resources]
        bases = [body for _, body in resources]

        def send(payload: bytes) -> Future[bytes]:
            return executor.submit(_judge_chunk, payload)

        window = workers * CHUNKS_AHEAD_PER_WORKER
        pending = Judgements(types, bases, chunk_bounds(len(resources), workers), send=send, window=window)
        if not pending.handed_over:  # the executor refused the first chunk (broken or shut down meanwhile)
            return None
        self.submitted += len(resources)
        return pending

    def start(self, workers: int) -> threading.Event:
        """Start the pool in the background (if not running with ``workers`` already, or broken: a worker
        died while no chunk was in flight, so no caller saw it); set when ready."""
        with self._lock:
            if workers > 0 and (self._executor is None or self._workers != workers or self._broken()):
                self._start(workers)
            return self._ready

    def _broken(self) -> bool:
        """Whether the running executor refuses work (``submit`` raises once it knows a worker died)."""
        if self._executor is None or not self._ready.is_set() or self._failed:
            return False
        try:
            self._executor.submit(os.getpid)
        except (BrokenProcessPool, RuntimeError):
            return True
        return False

    def warm(self, workers: int, *, timeout_s: float) -> bool:
        """Start the pool (if needed) and wait until its workers answer; True when ready in time."""
        return self.start(workers).wait(timeout_s) and not self._failed

    def _running(self, workers: int) -> ProcessPoolExecutor | None:
        with self._lock:
            if self._executor is None or self._workers != workers:
                self._start(workers)
                return None
            if not self._ready.is_set():
                return None
            if self._failed:
                self._executor.shutdown(wait=False, cancel_futures=True)
                self._executor = None
                return None
            return self._executor

    def _start(self, workers: int) -> None:
        if self._failed:
            return  # workers cannot start in this process (e.g. its main module cannot be re-imported)
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        self._ready = ready = threading.Event()
        self._workers = workers
        context = multiprocessing.get_context("spawn")
        self._executor = ProcessPoolExecutor(workers, mp_context=context, initializer=_warm)
        warmups = [self._executor.submit(os.getpid) for _ in range(workers)]
        remaining = [len(warmups)]

        def done(future: Future[int]) -> None:
            if future.cancelled() or future.exception() is not None:
                if not self._failed:
                    log.warning("model check workers failed to start; transactions validate in their own thread")
                self._failed = True
                ready.set()  # settled: ``_running`` finds the executor broken and drops it
                return
            remaining[0] -= 1
            if remaining[0] == 0:
                ready.set()

        for future in warmups:
            future.add_done_callback(done)
        log.info("model check pool starting with %d worker processes", workers)

    def restart(self) -> None:
        """Replace a broken pool by a new one (in the background, as ``start``)."""
        with self._lock:
            if self._workers > 0:
                self._start(self._workers)

    def discard(self, *, wait: bool = False) -> None:
        """Drop the pool (broken, or at shutdown); transactions validate in their own thread until ``start``.
        ``wait``: until the workers have exited (outside the pool's lock)."""
        with self._lock:
            executor, self._executor, self._workers = self._executor, None, 0
        if executor is not None:
            executor.shutdown(wait=wait, cancel_futures=True)

    def shutdown(self) -> None:
        """Stop the workers and wait for them to exit (the server's shutdown). Waiting matters: uvicorn
        ends a process stopped by a signal with that signal again, so interpreter exit hooks (which would
        otherwise stop the workers) never run, and a worker still blocked on its task queue would outlive
        the server."""
        self.discard(wait=True)


_POOL = ModelPool()


def pool() -> ModelPool:
    """The process's pool."""
    return _POOL


def default_workers() -> int:
    """The default number of workers: the CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def configured_workers(setting: int | None) -> int:
    """Workers for the ``validation_workers`` setting (None: ``default_workers()``)."""
    return default_workers() if setting is None else setting
