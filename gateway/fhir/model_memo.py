"""A bounded memo of the R4B model's verdicts on complex elements (the cost of validation on write).

The R4B pass of ``gateway.fhir.validation`` (``fhir.resources.R4B`` on ``fhir_core``) validates every
complex element of a resource (each Coding, Reference, Identifier, Period, ...) by calling
``fhir_core.types.FhirBase.fhir_model_validator(value, model_class)``, which builds the element's model
from its JSON object with pydantic and runs the model's own validators. For a JSON object that result is
a function of the model class and the object alone: the library passes nothing else (no validation
context, no parent), and the gateway never uses the model instances, only whether they raise.

Identical elements recur across the resources of a server (the Coding of a service code, the Reference
to the plan's or a provider's Organization, the status CodeableConcepts): measured on the ingest
benchmark's resources, 65 % of the element validations repeat one seen before. ``install`` wraps the
library's function so that an element already validated **successfully** for the same model class and
the same JSON bytes (``orjson.dumps``: keys in the same order, the same JSON types, so ``1``, ``1.0``
and ``true`` differ) returns the instance built then. A failing element is never remembered: it raises
from the library's own code every time, so errors and their locations are the library's. The memo holds
at most ``MAX_ENTRIES`` instances and is emptied when full (a simple bound: the elements that recur come
back at once).

Cost and effect (``python -m bench.profile_ingest``, docs/performance.md): the model pass of the ingest
benchmark's resources ~100 -> ~70 µs per resource.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
from fhir_core.types import FhirBase

MAX_ENTRIES = 8192
"""Element instances remembered per process (a few MB)."""

_memo: dict[tuple[type, bytes], Any] = {}
_installed = threading.Lock()
_original: Any = None


def _memoized(cls: type, value: Any, model_klass: type) -> Any:
    """``FhirBase.fhir_model_validator`` with the memo in front (module docstring)."""
    if type(value) is not dict:
        return _original(cls, value, model_klass)
    try:
        key = (model_klass, orjson.dumps(value))
    except TypeError:  # a value JSON cannot carry (an integer beyond 64 bits): not remembered
        return _original(cls, value, model_klass)
    found = _memo.get(key)
    if found is not None:
        return found
    model = _original(cls, value, model_klass)  # raises for an invalid element: nothing remembered
    if len(_memo) >= MAX_ENTRIES:
        _memo.clear()
    _memo[key] = model
    return model


def install() -> None:
    """Put the memo in front of the library's element validation (once per process; idempotent)."""
    global _original
    with _installed:
        if _original is not None:
            return
        _original = FhirBase.__dict__["fhir_model_validator"].__func__
        FhirBase.fhir_model_validator = classmethod(_memoized)  # type: ignore[method-assign,assignment]


def installed() -> bool:
    """True once ``install`` has run in this process."""
    return _original is not None


@contextmanager
def suspended() -> Iterator[None]:
    """The library's own function, without the memo, inside the block (tests and measurements compare
    the two; not for concurrent use)."""
    install()
    FhirBase.fhir_model_validator = classmethod(_original)  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        FhirBase.fhir_model_validator = classmethod(_memoized)  # type: ignore[method-assign,assignment]


def clear() -> None:
    """Forget every remembered element (tests)."""
    _memo.clear()


def size() -> int:
    """Elements remembered now."""
    return len(_memo)
