"""Driving the FHIR core in-process (no HTTP): loading the search data set, and the ingest rate the
core reaches on its own, which ``profile_ingest`` breaks down."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import orjson

from bench.data import FAMILY_SIZE, Generator
from gateway.fhir.context import Context
from gateway.fhir.core import build_context, dispatch
from gateway.fhir.request import FhirRequest
from gateway.settings import Settings

BASE_URL = "http://bench.invalid/fhir"
BUNDLE_HEADERS = {"prefer": "return=minimal", "content-type": "application/fhir+json"}


def open_context(db_path: Path, *, synchronous: str, validation_workers: int | None = None) -> Context:
    """The core over the SQLite file ``db_path`` (created with the gateway's schema if missing);
    ``validation_workers`` as the setting (None: the default, the CPUs available)."""
    settings = Settings(
        database_url=f"sqlite:///{db_path}", sqlite_synchronous=synchronous, validation_workers=validation_workers
    )
    return build_context(settings)


def post_bundle(ctx: Context, body: bytes) -> None:
    """POST one transaction Bundle to the core; raise if it is not accepted."""
    answer = dispatch(ctx, FhirRequest("POST", "", headers=BUNDLE_HEADERS, body=body, base_url=BASE_URL))
    if answer.status != 200:
        raise RuntimeError(f"transaction answered {answer.status}: {(answer.body or b'')[:300]!r}")


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What ``load`` stored: resources, families, and the in-process rate."""

    resources: int
    families: int
    seconds: float

    @property
    def per_second(self) -> float:
        """Resources stored per second."""
        return self.resources / self.seconds if self.seconds else 0.0


def load(ctx: Context, generator: Generator, resources: int, *, entries: int = 1000) -> LoadResult:
    """Store ``resources`` resources as transaction Bundles of ``entries`` entries through ``dispatch``.

    Bundles are serialized one at a time so memory stays flat at 100k resources; the time counts only
    the core's work (serializing the request Bundle is the client's)."""
    per_bundle = max(1, entries // FAMILY_SIZE)
    families_total = max(1, resources // FAMILY_SIZE)
    first = generator.next_number
    spent = 0.0
    done = 0
    while done < families_total:
        count = min(per_bundle, families_total - done)
        body = orjson.dumps(_bundle(generator, count))
        started = time.perf_counter()
        post_bundle(ctx, body)
        spent += time.perf_counter() - started
        done += count
    return LoadResult(done * FAMILY_SIZE, generator.next_number - first, spent)


def _bundle(generator: Generator, families: int) -> dict[str, object]:
    from bench.data import transaction

    return transaction(generator.families(families))
