"""The read and search limit: a bare ASGI app that serves the same stored bytes from the same SQLite file.

``GET /fhir/{type}/{id}`` answers the ``resource.body`` of ``(type, id)`` as the gateway's read does,
with one indexed SELECT on a connection opened once per process, straight from the event loop: no
framework, no threadpool, no routing table. The six search shapes the benchmark sends (``bench.search``)
are answered with hand-written SQL on the gateway's own index tables and the same Bundle splicing of
stored bytes, so the gap to the gateway is the cost of its generality (query parsing, SQL building,
FastAPI, the threadpool). Run it as ``BENCH_BARE_DB=PATH uvicorn bench.bare_app:app``.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

import orjson

from bench.bare_search import SHAPES, BareQuery

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

FHIR_JSON = b"application/fhir+json; charset=utf-8"
_READ = "SELECT body, version_id FROM resource WHERE res_type = ? AND res_id = ? AND deleted = 0"
_NOT_FOUND = orjson.dumps({"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "not-found"}]})


def _open() -> sqlite3.Connection:
    path = os.environ["BENCH_BARE_DB"]
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
    conn.execute("PRAGMA cache_size=-65536")
    return conn


_conn: sqlite3.Connection | None = None


def _db() -> sqlite3.Connection:
    global _conn  # one connection per worker process, opened lazily after the fork
    if _conn is None:
        _conn = _open()
    return _conn


async def _send(send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    headers = [(b"content-type", FHIR_JSON), (b"content-length", str(len(body)).encode()), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def _base(scope: Scope) -> str:
    host = dict(scope["headers"]).get(b"host", b"localhost").decode("latin-1")
    return f"http://{host}/fhir"


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """The ASGI entry point."""
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    path: str = scope["path"]
    if path == "/healthz":
        await _send(send, 200, b'{"status":"ok"}')
        return
    parts = path.strip("/").split("/")
    if len(parts) == 3 and parts[0] == "fhir":
        row = _db().execute(_READ, (parts[1], parts[2])).fetchone()
        if row is None:
            await _send(send, 404, _NOT_FOUND)
        else:
            await _send(send, 200, row[0], [(b"etag", f'W/"{row[1]}"'.encode())])
        return
    if len(parts) == 2 and parts[0] == "fhir":
        query = BareQuery(parts[1], parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True))
        shape = SHAPES.get(query.shape)
        if shape is not None:
            await _send(send, 200, shape(_db(), query, _base(scope)))
            return
    await _send(send, 404, _NOT_FOUND)
