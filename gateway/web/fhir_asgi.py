"""The FHIR API as a raw ASGI handler: HTTP in, ``FhirRequest`` through the core's table, HTTP out.

Every request below ``/fhir`` comes here straight from the ASGI scope (https://asgi.readthedocs.io/en/
latest/specs/www.html), without FastAPI's router, middleware, request and response objects: the app
(``gateway.web.app.GatewayApp``) hands these requests to the front door before its middleware stack,
since a read is the hottest path of the server and those layers cost more than the read itself
(docs/performance.md). The front door therefore does what the stack did for them: an unexpected
exception becomes a 500 OperationOutcome naming an error id (and is raised on to the server, as
Starlette's ``ServerErrorMiddleware`` does). The FastAPI routes of the FHIR API remain, so that
openapi/openapi.json documents every interaction.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from functools import lru_cache
from typing import Protocol
from urllib.parse import parse_qsl

from starlette.concurrency import run_in_threadpool
from starlette.types import Receive, Scope, Send

from gateway import jsonutil
from gateway.auth.grant import Grant, InvalidToken
from gateway.errors import FhirError, InternalError, PayloadTooLarge, ServiceUnavailable, Unauthorized, frames
from gateway.fhir import guard
from gateway.fhir.context import Context
from gateway.fhir.request import FhirRequest, FhirResponse
from gateway.fhir.resource_types import SERVED_TYPE_SET
from gateway.fhir.router import Route
from gateway.fhir.routes import ROUTE_TABLE
from gateway.settings import Settings
from gateway.web.negotiation import check_accept, check_content_type

log = logging.getLogger("gateway.http")
FHIR_PREFIX = "/fhir"
FHIR_CONTENT_TYPE = b"application/fhir+json; charset=utf-8"
INLINE_ROUTES = frozenset({"read", "vread"})
"""Routes run on the event loop instead of the threadpool (SQLite only: bounded, non-blocking work)."""
OPEN_ROUTES = frozenset({"capabilities"})
"""Answered without a token: the CapabilityStatement (SMART App Launch: discovery must be public)."""
DISCOVERY_PREFIX = FHIR_PREFIX + "/.well-known/"
"""``[base]/.well-known/smart-configuration`` and the OpenID configuration: served by FastAPI routes."""
READ_ROUTE = next(route for route in ROUTE_TABLE.routes if route.name == "read")
MAX_ACCEPTED = 256
"""Distinct Accept headers remembered as acceptable (clients send a handful)."""


class Verifier(Protocol):
    """The authorization server's access-token verifier (``adapters.smart.verify.AccessTokenVerifier``)."""

    def bearer(self, header: str, audience: str) -> Grant | None:
        """The grant of an ``Authorization`` header value for the FHIR base ``audience``; ``None`` when it
        carries no bearer token; raises ``InvalidToken``."""


def serves(scope: Scope) -> bool:
    """Whether the front door answers this ASGI request: HTTP below ``/fhir`` except the discovery documents."""
    if scope["type"] != "http":
        return False
    path: str = scope.get("path", "")
    if path == FHIR_PREFIX:
        return True
    return path.startswith("/fhir/") and not path.startswith(DISCOVERY_PREFIX)


class FhirFrontDoor:
    """The ASGI handler of the FHIR API (``serves`` says which requests are its own)."""

    def __init__(
        self,
        settings: Settings,
        context: Callable[[], Context],
        verifier: Callable[[], Verifier | None],
    ) -> None:
        self.settings = settings
        self.context = context
        self.verifier = verifier
        self._public_base = settings.public_base_url.rstrip("/") if settings.public_base_url else None
        self._enforced = settings.auth_enabled
        self._accepted: set[str] = set()
        self._verify: Verifier | None = None
        """The verifier once the app has set it up (then the same for the app's life): kept, so that a
        token request does not look it up through the app's state each time (two Python calls)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        debug = log.isEnabledFor(logging.DEBUG)
        started = time.perf_counter() if debug else 0.0
        name = "unmatched"
        try:
            name, answer = await self._answer(scope, receive)
            status, headers, body = answer.status, answer.headers, answer.body
        except FhirError as error:
            status, headers, body = error.status, error.headers, jsonutil.dumps(error.outcome())
        except Exception as exc:
            failure = unexpected_error(exc)
            await _send(send, failure.status, failure.headers, jsonutil.dumps(failure.outcome()))
            raise  # on to the server, which logs it (as Starlette's ServerErrorMiddleware does)
        await _send(send, status, headers, body)
        # An access line per request at DEBUG (it costs as much as a read); who did what is audited as
        # AuditEvents, not logged. No PHI: the route name and status, never the path, query or body.
        if debug:
            log.debug("%s %s -> %d %.1fms", scope["method"], name, status, (time.perf_counter() - started) * 1000)

    async def _answer(self, scope: Scope, receive: Receive) -> tuple[str, FhirResponse]:
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        raw_query: bytes = scope.get("query_string", b"")
        query = parse_qsl(raw_query.decode("latin-1"), keep_blank_values=True) if raw_query else []
        accept = headers.get("accept")
        if query or accept not in self._accepted:
            check_accept(accept, next((v for k, v in query if k == "_format"), None))
            if not query and accept is not None and len(self._accepted) < MAX_ACCEPTED:
                self._accepted.add(accept)
        ctx = self.context()
        method: str = scope["method"]
        path: str = scope["path"][len(FHIR_PREFIX) :].strip("/")
        request = FhirRequest(
            method=method,
            path=path,
            query=query,
            headers=headers,
            base_url=self._public_base or _base(scope, headers),
        )
        route, params = _read_route(method, path) or ROUTE_TABLE.match(request)  # 404/405 before a body is read
        if route.name not in OPEN_ROUTES:
            if self._enforced:
                request.grant = self._grant(headers, request.base_url)
            client = scope.get("client")
            request.client_address = str(client[0]) if client else None
        if method in ("POST", "PUT", "PATCH"):
            request.body = await _read_body(receive, headers, self.settings.max_body_bytes) or None
            check_content_type(route.name, headers.get("content-type"), request.body is not None)
        if route.name in INLINE_ROUTES and ctx.repo.sqlite:
            # A point read on SQLite takes tens of microseconds and never waits for a writer (WAL):
            # a hop to the threadpool would cost ten times more than the read.
            return route.name, guard.run(ctx, route, request, params)
        return route.name, await run_in_threadpool(guard.run, ctx, route, request, params)

    def _grant(self, headers: dict[str, str], base_url: str) -> Grant | None:
        """The caller's grant from its bearer token (RFC 6750 §2.1); ``None`` when enforcement is off
        (``serve --no-auth``)."""
        if not self._enforced:
            return None
        verify = self._verify
        if verify is None:
            verify = self._verify = self.verifier()
            if verify is None:  # fail closed while the verifier is not set up
                raise ServiceUnavailable("Authorization is starting; retry shortly")
        try:
            grant = verify.bearer(headers.get("authorization", ""), base_url)
        except InvalidToken as error:
            raise Unauthorized(
                f"The access token is not valid: {error.description}",
                headers=_challenge(base_url, "invalid_token", error.description),
            ) from None
        if grant is None:
            raise Unauthorized("This FHIR server needs an access token (SMART on FHIR)", headers=_challenge(base_url))
        return grant


def _read_route(method: str, path: str) -> tuple[Route, dict[str, str]] | None:
    """``GET [type]/[id]`` of a served type without consulting the table (the hottest request); the same
    answer ``ROUTE_TABLE.match`` gives (tests/web/test_front_door_fast.py), ``None`` for anything else."""
    if method != "GET":
        return None
    res_type, slash, res_id = path.partition("/")
    if not slash or not res_id or res_id[0] in "$_" or "/" in res_id or res_type not in SERVED_TYPE_SET:
        return None
    return READ_ROUTE, {"type": res_type, "id": res_id}


def unexpected_error(exc: BaseException) -> FhirError:
    """The 500 of an unexpected exception: it names an error id and reveals nothing else; the log line
    carries the type and location only (exception messages can carry resource content, i.e. PHI)."""
    error_id = uuid.uuid4().hex[:12]
    log.error("unexpected error id=%s type=%s at %s", error_id, type(exc).__name__, frames(exc))
    return InternalError(f"Internal server error (error id {error_id})")


def _challenge(base_url: str, error: str | None = None, description: str | None = None) -> dict[str, str]:
    """The ``WWW-Authenticate`` header of a 401 (RFC 6750 §3)."""
    value = f'Bearer realm="{base_url}"'
    if error:
        value += f', error="{error}"'
    if description:
        value += ', error_description="' + description.replace('"', "'")[:200] + '"'
    return {"WWW-Authenticate": value}


def _base(scope: Scope, headers: dict[str, str]) -> str:
    """The FHIR base URL as the client addressed it (Host header, ASGI root_path)."""
    host = headers.get("host")
    if not host:
        server = scope.get("server") or ("localhost", 80)
        host = f"{server[0]}:{server[1]}"
    return f"{scope.get('scheme', 'http')}://{host}{scope.get('root_path', '')}{FHIR_PREFIX}"


async def _read_body(receive: Receive, headers: dict[str, str], limit: int) -> bytes:
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"The body exceeds the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"The body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


@lru_cache(maxsize=256)
def _header_name(name: str) -> bytes:
    """A response header name as ASGI wants it (lower-case bytes); the gateway uses a handful."""
    return name.lower().encode("latin-1")


async def _send(send: Send, status: int, headers: dict[str, str], body: bytes | None) -> None:
    raw = [(_header_name(k), v.encode("latin-1")) for k, v in headers.items()]
    if body is not None:
        raw.append((b"content-type", FHIR_CONTENT_TYPE))
        raw.append((b"content-length", str(len(body)).encode()))
    elif status not in (204, 304):
        raw.append((b"content-length", b"0"))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body or b""})
