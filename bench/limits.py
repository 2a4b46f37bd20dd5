"""The write limit: "the same SQLite insert without the gateway".

The same stored bytes (``id`` and ``meta`` stamped, serialized with orjson) and the same index rows
(computed by the gateway's own extractor before timing) go straight into a SQLite file that has the
gateway's schema (made by the gateway's own ``build_context``) and the gateway's PRAGMAs, through the
``sqlite3`` module, with ids from the gateway's own ``new_id`` (time-ordered, as the server assigns
them): one transaction per resource for the single-create limit, one per Bundle for the ingest limit.
Row ids are allocated the way the gateway does (``max(rid)`` once per transaction under ``BEGIN
IMMEDIATE``).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from bench.data import Family, Json, with_ids
from gateway.fhir.core import build_context
from gateway.search.extract import COLUMNS, extract_values
from gateway.search.sources import stored_values
from gateway.settings import Settings
from gateway.store.database import JOURNAL_SIZE_LIMIT, bind_without_adaptation
from gateway.store.ids import new_id

IndexRow = tuple[Any, ...]
"""``(param, *value columns)`` in the order of ``gateway.search.extract.COLUMNS``."""


@dataclass(frozen=True, slots=True)
class Prepared:
    """One resource as the store keeps it: type, id, stamped bytes, index rows per kind."""

    res_type: str
    res_id: str
    body: bytes
    rows: dict[str, list[IndexRow]]

    @property
    def row_count(self) -> int:
        """Index rows of this resource (all kinds)."""
        return sum(len(r) for r in self.rows.values())


def _instant() -> tuple[str, int]:
    now = datetime.now(UTC)
    micros = int(now.timestamp() * 1_000_000)
    return now.isoformat(timespec="milliseconds").replace("+00:00", "Z"), micros


def prepare(resource: Json, res_id: str | None = None) -> Prepared:
    """Stamp ``resource`` like the repository does and compute its index rows (not timed)."""
    stamped = dict(resource)
    stamped["id"] = res_id or new_id()
    stamped["meta"] = {"versionId": "1", "lastUpdated": _instant()[0]}
    # The rows the gateway stores (``gateway.search.sources``: none a derivable parameter repeats).
    found = stored_values(stamped["resourceType"], extract_values(stamped))
    rows = {kind: [tuple(row) for row in kind_rows] for kind, kind_rows in found.items() if kind_rows}
    return Prepared(stamped["resourceType"], stamped["id"], orjson.dumps(stamped), rows)


def prepare_families(families: Iterable[Family]) -> list[Prepared]:
    """The stored form of every resource of ``families`` (``urn:uuid`` references resolved to ids)."""
    out: list[Prepared] = []
    for fam in families:
        ids = tuple(new_id() for _ in fam.resources)
        out.extend(prepare(res, rid) for res, rid in zip(with_ids(fam, ids), ids, strict=True))
    return out


def create_store(path: Path) -> None:
    """An empty SQLite file with exactly the gateway's schema (created by the gateway itself)."""
    build_context(Settings(database_url=f"sqlite:///{path}")).repo.engine.dispose()


def connect(path: Path, *, synchronous: str) -> sqlite3.Connection:
    """A ``sqlite3`` connection with the PRAGMAs of ``gateway.store.database`` (autocommit: we BEGIN), and
    its binding of ``bytes``/``None`` (``bind_without_adaptation``)."""
    bind_without_adaptation()
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    for pragma in (
        "journal_mode=WAL",
        f"wal_autocheckpoint={Settings().sqlite_wal_autocheckpoint}",
        f"journal_size_limit={JOURNAL_SIZE_LIMIT}",
        f"synchronous={synchronous}",
        "busy_timeout=10000",
        "foreign_keys=ON",
        "cache_size=-65536",
    ):
        conn.execute(f"PRAGMA {pragma}")
    return conn


_INSERT_RESOURCE = (
    "INSERT INTO resource (rid, res_type, res_id, version_id, last_updated, deleted, body) VALUES (?, ?, ?, 1, ?, 0, ?)"
)
_INSERT_VERSION = (
    "INSERT INTO resource_version (rid, res_type, res_id, version_id, last_updated, method, deleted, body) "
    "VALUES (?, ?, ?, 1, ?, 'POST', 0, ?)"
)


def _insert_index(kind: str, columns: tuple[str, ...]) -> str:
    marks = ", ".join("?" * (3 + len(columns)))
    return f"INSERT INTO idx_{kind} (rid, res_type, param, {', '.join(columns)}) VALUES ({marks})"


_INSERT_INDEX = {kind: _insert_index(kind, cols) for kind, cols in COLUMNS.items()}


def insert_transaction(conn: sqlite3.Connection, batch: Sequence[Prepared]) -> None:
    """One write transaction holding ``batch``: resource, version and index rows, then COMMIT."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        first = int(conn.execute("SELECT coalesce(max(rid), 0) FROM resource").fetchone()[0]) + 1
        micros = _instant()[1]
        current = [(first + k, p.res_type, p.res_id, micros, p.body) for k, p in enumerate(batch)]
        conn.executemany(_INSERT_RESOURCE, current)
        conn.executemany(_INSERT_VERSION, current)
        per_kind: dict[str, list[IndexRow]] = {}
        for k, p in enumerate(batch):
            for kind, rows in p.rows.items():
                per_kind.setdefault(kind, []).extend((first + k, p.res_type, *row) for row in rows)
        for kind, rows in per_kind.items():
            conn.executemany(_INSERT_INDEX[kind], rows)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def timed_inserts(conn: sqlite3.Connection, batches: Sequence[Sequence[Prepared]]) -> float:
    """Seconds to write ``batches``, one transaction each."""
    started = time.perf_counter()
    for batch in batches:
        insert_transaction(conn, batch)
    return time.perf_counter() - started
