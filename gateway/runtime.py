"""The server process's heap after start-up: what every request uses is loaded once, then kept out of the
cyclic garbage collector's way.

A warmed-up gateway holds hundreds of thousands of long-lived objects (the R4 definitions and value sets,
the R4B model classes, the CalAIM profiles, the search plans). CPython's full collections walk every one of
them each time, and write-heavy work (a 1000-entry transaction, a chunk of file rows, a group of HL7 v2
messages) triggers several of them: ~30-75 ms each, 5-20 % of the CPU of a transaction ingest measured
in-process. ``gc.freeze()`` (https://docs.python.org/3/library/gc.html#gc.freeze) moves the objects alive
at that moment into a permanent generation the collector ignores; objects made later are collected as
before, and reference counting still frees frozen objects that are not in a cycle. ``thaw`` undoes it
when the app stops (tests start many apps in one process).

``collector_paused`` pauses the collector while a large write runs (a transaction Bundle, a chunk of file
rows): its objects live until it ends, so the collections its allocations would set off find nothing to free
(on a first import of the HN file, 4 full collections of ~85 ms per 2,000 rows, ~17 % of its CPU time).
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


def settle() -> None:
    """Load the validation models, profiles, definitions and search plans of the served types, collect,
    and freeze what is alive (module docstring)."""
    from gateway.fhir.profiles import default_profiles
    from gateway.fhir.resource_types import SERVED_TYPE_SET
    from gateway.fhir.validation import warm_models
    from gateway.search.extract import plan_for
    from gateway.search.registry import default_registry

    warm_models(SERVED_TYPE_SET)
    default_profiles()
    registry = default_registry()
    for resource_type in SERVED_TYPE_SET:
        plan_for(resource_type, registry)
    gc.collect()
    gc.freeze()


def thaw() -> None:
    """Give the frozen objects back to the collector."""
    gc.unfreeze()


PAUSE_AT_MOST_S = 2.0
"""Longest the collector stays paused without a collection of its young and middle generations
(``collector_paused``: writers overlapping without a break)."""

_pause_lock = threading.Lock()
_pausers = 0
_paused_since = 0.0
_resume = False
"""Whether the last writer enables the collector again (it was enabled when the first one paused it)."""


@contextmanager
def collector_paused() -> Iterator[None]:
    """The cyclic collector paused while a large write runs: a transaction Bundle of 16 KB or more
    (``gateway.fhir.bundles``), a chunk of file rows (``adapters.files.importer``).

    Such a write keeps every entry's or row's objects (parsed JSON, requests, index rows, outbox payloads,
    responses) alive until it commits, so the young collections its allocations trigger find nothing to
    free and promote all of it, and the middle and full collections that follow walk it again (the
    model-check workers pause theirs per chunk for the same reason: ``gateway.fhir.model_pool``).
    Reference counting frees the write's objects when it ends; what cycles other threads make meanwhile
    wait for the collector's return. The collector is paused while any such write runs (a count: writers
    overlap) and enabled again when the last one ends; if writers keep overlapping, the one ending after
    ``PAUSE_AT_MOST_S`` of pause collects the young and middle generations, so cyclic garbage stays
    bounded. A collector disabled by someone else stays so."""
    global _pausers, _paused_since, _resume
    with _pause_lock:
        if _pausers == 0:
            _paused_since, _resume = time.monotonic(), gc.isenabled()
            gc.disable()
        _pausers += 1
    try:
        yield
    finally:
        with _pause_lock:
            _pausers -= 1
            if _pausers == 0:
                if _resume:
                    gc.enable()
            elif _resume and time.monotonic() - _paused_since > PAUSE_AT_MOST_S:
                _paused_since = time.monotonic()
                gc.collect(1)
