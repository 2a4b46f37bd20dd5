"""Where the time of one request goes: each request kind timed in-process at four depths, one thread,
no load generator, so the differences are the cost of each layer.

- ``bare``: the limit's handler alone (``bench.bare_search`` / the read SELECT / ``bench.limits``
  insert for creates) on a ``sqlite3`` connection;
- ``core``: ``gateway.fhir.core.dispatch`` (parsing, validation, search engine, SQLAlchemy, store);
- ``app``: the gateway's ASGI app (FastAPI routing, negotiation, the real threadpool hop), called
  directly without a server;
- ``bare app``: ``bench.bare_app`` called the same way.

``python -m bench.profile_requests [--resources 20000] [--profile search:chain]`` prints µs per request
(best of 3 rounds) and, with ``--profile KIND``, the cProfile of the core for that kind.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson

from bench import limits, search
from bench.bare_search import SHAPES, BareQuery
from bench.data import FAMILY_SIZE, Generator
from bench.inprocess import BASE_URL, load, open_context
from gateway.fhir.context import Context
from gateway.fhir.core import dispatch
from gateway.fhir.request import FhirRequest
from gateway.settings import Settings
from gateway.web.app import create_app

App = Callable[..., Any]
CREATE_HEADERS = {
    "prefer": "return=minimal",
    "content-type": "application/fhir+json",
    "accept": "application/fhir+json",
}


def asgi_scope(method: str, path: str, body: bytes, *, token: str | None = None) -> dict[str, Any]:
    """The ASGI HTTP scope of one request to the gateway (with a bearer ``token`` when given)."""
    target, _, query = path.partition("?")
    headers = [(b"host", b"bench.invalid"), (b"accept", b"application/fhir+json")]
    if token:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    if body:
        headers += [
            (b"content-type", b"application/fhir+json"),
            (b"prefer", b"return=minimal"),
            (b"content-length", str(len(body)).encode()),
        ]
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": target,
        "raw_path": target.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": headers,
        "server": ("bench.invalid", 80),
        "client": ("127.0.0.1", 1),
    }


async def call_asgi(app: App, method: str, path: str, body: bytes = b"") -> int:
    """One request through an ASGI app without a server; the response status."""
    sent = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await asyncio.sleep(3600)
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = int(message["status"])

    await app(asgi_scope(method, path, body), receive, send)
    return status


def _core_request(method: str, path: str, body: bytes) -> FhirRequest:
    parts = urlsplit(path)
    return FhirRequest(
        method,
        parts.path.removeprefix("/fhir/"),
        query=parse_qsl(parts.query),
        headers=CREATE_HEADERS if body else {},
        body=body or None,
        base_url=BASE_URL,
    )


def _discard(_value: object) -> None:
    """Drop a result (so a call fits ``best_us``)."""


def best_us(run: Callable[[], None], count: int, rounds: int = 3) -> float:
    """Best mean µs per item of ``rounds`` runs of ``run`` (which handles ``count`` items)."""
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        run()
        best = min(best, (time.perf_counter() - started) / count * 1e6)
    return best


class Layers:
    """The four depths over one store."""

    def __init__(self, ctx: Context, db_path: Path) -> None:
        self.ctx = ctx
        self.db = sqlite3.connect(db_path, check_same_thread=False)
        self.db.execute("PRAGMA cache_size=-65536")  # as bench.bare_app and the gateway
        self.app = create_app(Settings(database_url=f"sqlite:///{db_path}", auth_enabled=False), context=ctx)
        os.environ["BENCH_BARE_DB"] = str(db_path)
        from bench import bare_app

        self.bare_app = bare_app.app
        self.loop = asyncio.new_event_loop()

    def core(self, calls: list[tuple[str, str, bytes]]) -> None:
        """Every call through ``dispatch``."""
        for method, path, body in calls:
            dispatch(self.ctx, _core_request(method, path, body))

    def asgi(self, app: App, calls: list[tuple[str, str, bytes]]) -> None:
        """Every call through ``app``; a non-2xx answer is an error."""

        async def run() -> None:
            for method, path, body in calls:
                status = await call_asgi(app, method, path, body)
                if status >= 300:
                    raise RuntimeError(f"{method} {path} answered {status}")

        self.loop.run_until_complete(run())

    def bare_search(self, paths: list[str]) -> None:
        """Every search through its hand-written handler."""
        for path in paths:
            parts = urlsplit(path)
            query = BareQuery(parts.path.rsplit("/", 1)[1], parse_qsl(parts.query))
            SHAPES[query.shape](self.db, query, BASE_URL)

    def bare_read(self, paths: list[str]) -> None:
        """Every read as the bare route's SELECT."""
        for path in paths:
            _, _, res_type, res_id = path.split("/")
            self.db.execute(
                "SELECT body FROM resource WHERE res_type = ? AND res_id = ?", (res_type, res_id)
            ).fetchone()


def measure(layers: Layers, db_path: Path, families: int, count: int, work: Path) -> dict[str, dict[str, float]]:
    """µs per request of read, each search kind and single create, at each depth."""
    reads = search.read_pool(db_path, count=count, seed=3)
    pool = search.query_pool(db_path, families=families, per_kind=count, seed=3)
    out: dict[str, dict[str, float]] = {}

    def gets(paths: list[str]) -> list[tuple[str, str, bytes]]:
        return [("GET", p, b"") for p in paths]

    out["read"] = {
        "bare": best_us(lambda: layers.bare_read(reads), len(reads)),
        "core": best_us(lambda: layers.core(gets(reads)), len(reads)),
        "app": best_us(lambda: layers.asgi(layers.app, gets(reads)), len(reads)),
        "bare app": best_us(lambda: layers.asgi(layers.bare_app, gets(reads)), len(reads)),
    }
    for kind, paths in pool.items():
        out[f"search {kind}"] = {
            "bare": best_us(lambda p=paths: layers.bare_search(p), len(paths)),  # type: ignore[misc]
            "core": best_us(lambda p=paths: layers.core(gets(p)), len(paths)),  # type: ignore[misc]
            "app": best_us(lambda p=paths: layers.asgi(layers.app, gets(p)), len(paths)),  # type: ignore[misc]
            "bare app": best_us(lambda p=paths: layers.asgi(layers.bare_app, gets(p)), len(paths)),  # type: ignore[misc]
        }
    bodies = [("POST", f"/fhir/{t}", orjson.dumps(r)) for t, r in Generator(seed=11).single_creates(count)]
    limits.create_store(work / "limit.db")
    raw = limits.connect(work / "limit.db", synchronous=layers.ctx.settings.sqlite_synchronous)
    rounds = [[[limits.prepare(orjson.loads(body))] for _, _, body in bodies] for _ in range(3)]  # fresh ids
    out["single create"] = {
        "bare": best_us(lambda: _discard(limits.timed_inserts(raw, rounds.pop())), len(bodies)),
        "core": best_us(lambda: layers.core(bodies), len(bodies)),
        "app": best_us(lambda: layers.asgi(layers.app, bodies), len(bodies)),
    }
    raw.close()
    return out


def profile_kind(layers: Layers, db_path: Path, families: int, kind: str, count: int, top: int) -> None:
    """cProfile of the core for ``kind`` (``read``, ``create`` or ``search:<kind>``), top by cumulative time."""
    if kind == "read":
        calls = [("GET", p, b"") for p in search.read_pool(db_path, count=count, seed=5)]
    elif kind == "create":
        calls = [("POST", f"/fhir/{t}", orjson.dumps(r)) for t, r in Generator(seed=13).single_creates(count)]
    else:
        pool = search.query_pool(db_path, families=families, per_kind=count, seed=5)
        calls = [("GET", p, b"") for p in pool[kind.removeprefix("search:")]]
    profile = cProfile.Profile()
    profile.enable()
    layers.core(calls)
    profile.disable()
    pstats.Stats(profile).sort_stats("cumulative").print_stats(top)


def main(argv: list[str] | None = None) -> None:
    """Build a store, print the per-layer table (and a profile when asked)."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--resources", type=int, default=20_000)
    parser.add_argument("--count", type=int, default=300, help="requests per kind and round")
    parser.add_argument("--synchronous", default="FULL", choices=("FULL", "NORMAL"))
    parser.add_argument("--profile", default=None, help="read | create | search:<kind>")
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-layers-") as tmp:
        db_path = Path(tmp) / "store.db"
        ctx = open_context(db_path, synchronous=args.synchronous)
        loaded = load(ctx, Generator(seed=1), args.resources)
        families = loaded.resources // FAMILY_SIZE
        layers = Layers(ctx, db_path)
        if args.profile:
            profile_kind(layers, db_path, families, args.profile, args.count, args.top)
            return
        table = measure(layers, db_path, families, args.count, Path(tmp))
        print(f"µs per request, in-process, one thread ({loaded.resources:,} stored, synchronous={args.synchronous})")
        print(f"{'request':<20}{'bare':>10}{'core':>10}{'app':>10}{'bare app':>10}{'app/core':>10}")
        for name, row in table.items():
            ratio = row["app"] / row["core"] if row.get("core") else 0.0
            cells = "".join(
                f"{row[k]:>10.0f}" if k in row else f"{'-':>10}" for k in ("bare", "core", "app", "bare app")
            )
            print(f"{name:<20}{cells}{ratio:>10.2f}")
        ctx.repo.engine.dispose()


if __name__ == "__main__":
    main()
