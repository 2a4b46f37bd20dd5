"""Worker processes end with their parent.

The model-check pool's ``ProcessPoolExecutor`` workers (``gateway.fhir.model_pool``) block on their task
queue; a parent killed by a signal runs no exit hooks, and since each worker holds both ends of that
queue's pipe it never sees end-of-file: it would wait forever (orphans were found on a test machine after
killed test runs). Each worker therefore watches its parent's sentinel (a pipe that becomes readable when
the parent ends) in a daemon thread; the HL7 v2 parse workers (``adapters.hl7v2.parsepool``) do the same.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import threading


def exit_with_parent(name: str) -> None:
    """In a worker process: end it as soon as its parent process has ended (no-op in a main process)."""
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_with, args=(parent.sentinel,), name=name, daemon=True).start()


def _exit_with(sentinel: int) -> None:
    multiprocessing.connection.wait([sentinel])
    os._exit(0)
