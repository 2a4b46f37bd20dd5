"""Python's cyclic garbage collector paused while a chunk of file rows is applied (docs/performance.md,
"HN file import").

A chunk keeps thousands of objects alive until it commits (each row's JSON bodies, index rows, outbox
payloads); as they pile up, CPython promotes them and runs full collections, each of which walks every
object of the process (the loaded IG, profiles and search plans included) and frees almost nothing: on a
first import of the HN file, 4 full collections of ~85 ms per 2,000 rows, ~17 % of the import's CPU time.
Reference counting still frees everything that is not in a cycle; the few cycles a chunk leaves are
collected by the next automatic collection once the chunk is done (memory measured the same with the
collector paused: the peak RSS is the chunk's live objects).

The collector is process-wide: the pause is counted, so overlapping pauses (two imports in two threads)
re-enable it only when the last one ends, and a collector that was already disabled (by the embedding
program) is left disabled. Other threads' allocations go uncollected for the length of a chunk (seconds
at most), which only delays the collection of their cycles.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_pauses = 0
_was_enabled = False


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic collector for the block (module docstring); reentrant and thread-safe."""
    global _pauses, _was_enabled
    with _lock:
        if _pauses == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _pauses += 1
    try:
        yield
    finally:
        with _lock:
            _pauses -= 1
            if _pauses == 0 and _was_enabled:
                gc.enable()
