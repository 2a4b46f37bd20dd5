"""PostgreSQL pieces of ``bench.postgres``: a durable throwaway cluster, gateway processes on any database
URL, the raw ``COPY`` write limit, and the read/search pools drawn from a store of either dialect.

The cluster is the tests' ``PostgresCluster`` (temp directory, free port, unprivileged owner under root)
started with *durable* settings instead of the tests' ``fsync=off``: ``fsync=on``,
``synchronous_commit=on``, ``full_page_writes=on``, so a commit costs a WAL flush as in production. The
other settings are the tests' (``max_connections=200``, ``shared_buffers=256MB``) and PostgreSQL 15's
defaults otherwise (no tuning of ``work_mem``, ``wal_buffers``, checkpoints).
"""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
from sqlalchemy import Engine

from bench.limits import IndexRow, Prepared
from bench.search import draw_queries
from bench.servers import BIN, HOST, free_port, wait_healthy
from gateway.search.extract import COLUMNS
from gateway.store.database import make_engine
from tests.support.postgres import PostgresCluster, find_pg_bin

DURABLE_OPTIONS = (
    "-c fsync=on -c synchronous_commit=on -c full_page_writes=on -c max_connections=200 -c shared_buffers=256MB"
)


@dataclass
class DurableCluster(PostgresCluster):
    """``PostgresCluster`` with production durability (a commit is flushed to disk before it returns)."""

    def start(self) -> DurableCluster:
        """initdb, then start the server with ``DURABLE_OPTIONS`` and wait until it accepts connections."""
        if self.owner is not None:
            os.chmod(self.root, 0o755)
            import shutil

            shutil.chown(self.root, user=self.owner)
        self._run(self.bin_dir / "initdb", "-D", str(self.data_dir), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 {DURABLE_OPTIONS}"
        self._run(
            self.bin_dir / "pg_ctl", "-D", str(self.data_dir), "-l", str(self.root / "server.log"), "-o", options, "-w",
            "start",
        )  # fmt: skip
        return self

    def setting(self, name: str) -> str:
        """The live value of a server setting (to print what the run used)."""
        with psycopg.connect(libpq_url(self.url())) as conn:
            row = conn.execute("SELECT current_setting(%s)", (name,)).fetchone()
        return str(row[0]) if row else "?"


def libpq_url(url: str) -> str:
    """A SQLAlchemy ``postgresql+psycopg://`` URL as psycopg itself takes it."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


@contextmanager
def gateway(database_url: str, *, workers: int, log_dir: Path) -> Iterator[str]:
    """``calaim-gateway serve --database-url URL --workers N --no-auth`` (otherwise its defaults, so SQLite
    runs with synchronous=FULL); yields the origin ``http://127.0.0.1:PORT``."""
    port = free_port()
    log = log_dir / f"gateway-{port}.log"
    command = [str(BIN / "calaim-gateway"), "serve", "--host", HOST, "--port", str(port)]
    # --no-auth: these benchmarks measure the store; bench/smart_overhead.py measures token enforcement.
    command += ["--database-url", database_url, "--workers", str(workers), "--no-auth"]
    with log.open("ab") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_healthy(process, f"http://{HOST}:{port}", log)
            yield f"http://{HOST}:{port}"
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


_NEXT_RIDS = "SELECT nextval(pg_get_serial_sequence('resource', 'rid')) FROM generate_series(1, %s)"
_COPY_RESOURCE = "COPY resource (rid, res_type, res_id, version_id, last_updated, deleted, body) FROM STDIN"
_COPY_VERSION = (
    "COPY resource_version (rid, res_type, res_id, version_id, last_updated, method, deleted, body) FROM STDIN"
)


def copy_transaction(conn: psycopg.Connection[tuple[object, ...]], batch: Sequence[Prepared]) -> None:
    """The COPY limit: ``batch``'s resource, version and index rows written with ``COPY ... FROM STDIN``
    (psycopg ``cursor.copy``) in one transaction, row ids taken from the column's sequence like the
    gateway takes them. The index rows were computed by the gateway's extractor beforehand (not timed)."""
    micros = time.time_ns() // 1000
    with conn.transaction(), conn.cursor() as cur:
        rids = [int(str(r[0])) for r in cur.execute(_NEXT_RIDS, (len(batch),)).fetchall()]
        with cur.copy(_COPY_RESOURCE) as copy:
            for rid, p in zip(rids, batch, strict=True):
                copy.write_row((rid, p.res_type, p.res_id, 1, micros, False, p.body))
        with cur.copy(_COPY_VERSION) as copy:
            for rid, p in zip(rids, batch, strict=True):
                copy.write_row((rid, p.res_type, p.res_id, 1, micros, "POST", False, p.body))
        per_kind: dict[str, list[IndexRow]] = {}
        for rid, p in zip(rids, batch, strict=True):
            for kind, rows in p.rows.items():
                per_kind.setdefault(kind, []).extend((rid, p.res_type, *row) for row in rows)
        for kind, rows in per_kind.items():
            with cur.copy(f"COPY idx_{kind} (rid, res_type, param, {', '.join(COLUMNS[kind])}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)


def stored_ids(database_url: str) -> list[tuple[str, str]]:
    """``(type, id)`` of every live resource of the store at ``database_url`` (either dialect)."""
    sql = "SELECT res_type, res_id FROM resource WHERE deleted = {} ORDER BY rid"
    if database_url.startswith("sqlite:///"):
        with sqlite3.connect(database_url.removeprefix("sqlite:///")) as lite:
            return [(str(t), str(i)) for t, i in lite.execute(sql.format("0"))]
    with psycopg.connect(libpq_url(database_url)) as conn:
        return [(str(t), str(i)) for t, i in conn.execute(sql.format("false")).fetchall()]


def pools(
    ids: list[tuple[str, str]], *, families: int, reads: int, per_kind: int, seed: int
) -> tuple[list[str], dict[str, list[str]]]:
    """Read paths and search paths per kind: the query mix of ``bench.search``, drawn from ``ids``
    (which may come from PostgreSQL, where ``bench.search.query_pool`` reads a SQLite file)."""
    rng = random.Random(seed)
    patients = [i for t, i in ids if t == "Patient"]
    read_paths = [f"/fhir/{t}/{i}" for t, i in rng.sample(ids, min(reads, len(ids)))]
    return read_paths, draw_queries(rng, patients, families=families, per_kind=per_kind)


@contextmanager
def fresh_engines(only: str, prefix: str) -> Iterator[list[tuple[str, Engine]]]:
    """Engines on an empty SQLite file and on a fresh database of a durable PostgreSQL cluster (``only``:
    ``both``, ``sqlite`` or ``postgresql``; PostgreSQL is left out when it is not installed), named for
    the output; the cluster, the files and the engines are gone after the block."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    bin_dir = find_pg_bin()
    cluster = DurableCluster(bin_dir).start() if bin_dir is not None and only != "sqlite" else None
    engines: list[tuple[str, Engine]] = []
    try:
        if only != "postgresql":
            engines.append(("SQLite", make_engine(f"sqlite:///{workdir / 'outbox.db'}")))
        if cluster is not None:
            engines.append(("PostgreSQL", make_engine(cluster.url(cluster.create_database()))))
        yield engines
    finally:
        for _, engine in engines:
            engine.dispose()
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)
