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
"""

from __future__ import annotations

import gc


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
