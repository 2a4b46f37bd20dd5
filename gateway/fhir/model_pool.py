"""The R4B model pass of large transactions, run in worker processes beside the transaction.

Validation on write has two passes (``gateway.fhir.validation``): the R4 element walk (cheap) and the
``fhir.resources`` R4B model (``model_validate``, 85-95 % of the cost: about 270 µs of the ~480 µs a
resource of a 1000-entry transaction Bundle costs in one thread). The model pass depends only on the
resource's structure, so for a transaction of many entries it can run in other processes, on the other
cores, while the transaction's thread does the walk, the hooks, the index extraction and the inserts;
the verdicts are collected before the commit (``Pending.rejected``), so an entry the model rejects
still rolls the whole transaction back (https://hl7.org/fhir/R4/http.html#transaction).

The pool is one per process, started by the server (``start``, from the app's lifespan, in the
background: until its workers answer, and in processes that never start it, such as the CLI's commands
and scripts importing the core, transactions validate in their own thread), with ``spawn``ed workers (no
fork of a threaded server; ``spawn`` re-imports the main module, hence no start on first use) that
import the models once. Resources cross the process boundary as orjson bytes, issues come back as
tuples. A worker that dies breaks the pool: ``rejected`` then runs the model pass in the calling thread
for the chunks it did not get, and a new pool starts in the background.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import orjson

from gateway.errors import Issue
from gateway.types import JSONObject

log = logging.getLogger(__name__)

MIN_RESOURCES = 32
"""Fewer resources than this are validated in the calling thread (the round trip would not pay off)."""
CHUNKS_PER_WORKER = 4
"""Chunks per worker: small enough for the first verdicts to come back early, few enough to amortize."""

Verdict = list[tuple[str, str, tuple[str, ...]]] | None
"""One resource's model issues as (code, diagnostics, expression), or None when the model crashed."""


def _check_chunk(payload: bytes) -> bytes:
    """In a worker: the model verdict of each ``[resourceType, resource]`` pair of ``payload``."""
    from gateway.fhir.validation import model_issues

    out: list[Verdict] = []
    for resource_type, resource in orjson.loads(payload):
        issues = model_issues(resource, resource_type)
        out.append(None if issues is None else [(i.code, i.diagnostics, i.expression) for i in issues])
    return orjson.dumps(out)


def _warm() -> None:
    """Worker initializer: import the validator and build the models of the served types once; leave
    Ctrl-C to the server process, which shuts the pool down."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from gateway.fhir.resource_types import SERVED_TYPE_SET
    from gateway.fhir.validation import warm_models

    warm_models(SERVED_TYPE_SET)


def _issues(verdict: Verdict) -> list[Issue] | None:
    if verdict is None:
        return None
    return [Issue(code=code, diagnostics=text, expression=tuple(where)) for code, text, where in verdict]


class Pending:
    """Model verdicts being computed for ``resources`` (in order)."""

    def __init__(self, resources: list[tuple[str, JSONObject]], chunks: list[tuple[int, Future[bytes]]]) -> None:
        self._resources = resources
        self._chunks = chunks

    def rejected(self) -> Iterator[tuple[int, list[Issue] | None]]:
        """The position and model verdict of each resource the model rejects, in order (None: the model
        crashed). Waits for the workers; runs a chunk in this thread if its worker died."""
        from gateway.fhir.validation import model_issues

        bounds = [start for start, _ in self._chunks] + [len(self._resources)]
        restarted = False
        for n, (start, future) in enumerate(self._chunks):
            try:
                verdicts: list[Verdict] = orjson.loads(future.result())
            except Exception as exc:  # a worker died (BrokenProcessPool) or failed: judge the chunk here
                log.warning("model check chunk failed (%s); validating it in the request thread", type(exc).__name__)
                if isinstance(exc, BrokenProcessPool) and not restarted:
                    _POOL.restart()  # once: the other chunks of this pool are lost too
                    restarted = True
                for position in range(start, bounds[n + 1]):
                    resource_type, resource = self._resources[position]
                    issues = model_issues(resource, resource_type)
                    if issues is None or issues:
                        yield position, issues
                continue
            for offset, verdict in enumerate(verdicts):
                if verdict is None or verdict:
                    yield start + offset, _issues(verdict)


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

    def submit(self, resources: list[tuple[str, JSONObject]], *, workers: int) -> Pending | None:
        """Start the model pass of ``resources`` in the workers; None when the caller should validate
        itself (too few resources, pool disabled, or the pool still starting)."""
        if workers <= 0 or len(resources) < MIN_RESOURCES:
            return None
        executor = self._running(workers)
        if executor is None:
            return None
        count = max(1, min(len(resources) // 8, workers * CHUNKS_PER_WORKER))
        size = -(-len(resources) // count)
        chunks: list[tuple[int, Future[bytes]]] = []
        try:
            for start in range(0, len(resources), size):
                chunks.append((start, executor.submit(_check_chunk, orjson.dumps(resources[start : start + size]))))
        except (BrokenProcessPool, RuntimeError):
            self.restart()
            return None
        self.submitted += len(resources)
        return Pending(resources, chunks)

    def start(self, workers: int) -> threading.Event:
        """Start the pool in the background (if not running with ``workers`` already); set when ready."""
        with self._lock:
            if workers > 0 and (self._executor is None or self._workers != workers):
                self._start(workers)
            return self._ready

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

    def discard(self) -> None:
        """Drop the pool (broken, or at shutdown); transactions validate in their own thread until ``start``."""
        with self._lock:
            if self._executor is not None:
                self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor, self._workers = None, 0

    def shutdown(self) -> None:
        """Stop the workers (at exit)."""
        self.discard()


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
