"""The FHIR API as a raw ASGI handler: HTTP in, ``FhirRequest`` through the core's table, HTTP out.

Every request below ``/fhir`` comes here straight from the ASGI scope (https://asgi.readthedocs.io/en/
latest/specs/www.html), without FastAPI's router, request and response objects: a read is the hottest
path of the server and those layers cost more than the read itself (docs/performance.md). The FastAPI
routes of the FHIR API remain, so that openapi/openapi.json documents every interaction.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from urllib.parse import parse_qsl

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway import jsonutil
from gateway.auth.grant import Grant, InvalidToken
from gateway.errors import FhirError, PayloadTooLarge, ServiceUnavailable, Unauthorized
from gateway.fhir import guard
from gateway.fhir.context import Context
from gateway.fhir.request import FhirRequest, FhirResponse
from gateway.fhir.routes import ROUTE_TABLE
from gateway.settings import Settings
from gateway.web.negotiation import check_accept, check_content_type

log = logging.getLogger("gateway.http")
FHIR_PREFIX = "/fhir"
FHIR_CONTENT_TYPE = b"application/fhir+json; charset=utf-8"
INLINE_ROUTES = frozenset({"read", "vread"})
OPEN_ROUTES = frozenset({"capabilities"})
"""Answered without a token: the CapabilityStatement (SMART App Launch: discovery must be public)."""
DISCOVERY_PREFIX = FHIR_PREFIX + "/.well-known/"
"""``[base]/.well-known/smart-configuration`` and the OpenID configuration: served by FastAPI routes."""

Verifier = Callable[[str, str], Grant]
"""``(access token, FHIR base URL) → Grant``; raises ``InvalidToken``."""
"""Routes run on the event loop instead of the threadpool (SQLite only: bounded, non-blocking work)."""


class FhirFrontDoor:
    """ASGI middleware: ``/fhir`` requests are answered here; anything else goes on to FastAPI."""

    def __init__(
        self,
        app: ASGIApp,
        settings: Settings,
        context: Callable[[Scope], Context],
        verifier: Callable[[Scope], Verifier | None],
    ) -> None:
        self.app = app
        self.settings = settings
        self.context = context
        self.verifier = verifier

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        fhir = path == FHIR_PREFIX or path.startswith(FHIR_PREFIX + "/")
        if scope["type"] != "http" or not fhir or path.startswith(DISCOVERY_PREFIX):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        name = "unmatched"
        try:
            name, answer = await self._answer(scope, receive)
            status, headers, body = answer.status, answer.headers, answer.body
        except FhirError as error:
            status, headers, body = error.status, error.headers, jsonutil.dumps(error.outcome())
        await _send(send, status, headers, body)
        # An access line per request at DEBUG (it costs as much as a read); who did what is audited as
        # AuditEvents, not logged. No PHI: the route name and status, never the path, query or body.
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s -> %d %.1fms", scope["method"], name, status, (time.perf_counter() - started) * 1000)

    async def _answer(self, scope: Scope, receive: Receive) -> tuple[str, FhirResponse]:
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        check_accept(headers.get("accept"), next((v for k, v in query if k == "_format"), None))
        ctx = self.context(scope)
        public = self.settings.public_base_url
        request = FhirRequest(
            method=scope["method"],
            path=scope["path"][len(FHIR_PREFIX) :].strip("/"),
            query=query,
            headers=headers,
            base_url=public.rstrip("/") if public else _base(scope, headers),
        )
        route, params = ROUTE_TABLE.match(request)  # 404/405 before a body is read
        if route.name not in OPEN_ROUTES:
            request.grant = self._grant(scope, headers, request.base_url)
            client = scope.get("client")
            request.client_address = str(client[0]) if client else None
        if request.method in ("POST", "PUT", "PATCH"):
            request.body = await _read_body(receive, headers, self.settings.max_body_bytes) or None
        check_content_type(route.name, headers.get("content-type"), request.body is not None)
        if route.name in INLINE_ROUTES and ctx.repo.sqlite:
            # A point read on SQLite takes tens of microseconds and never waits for a writer (WAL):
            # a hop to the threadpool would cost ten times more than the read.
            return route.name, guard.run(ctx, route, request, params)
        return route.name, await run_in_threadpool(guard.run, ctx, route, request, params)

    def _grant(self, scope: Scope, headers: dict[str, str], base_url: str) -> Grant | None:
        """The caller's grant from its bearer token (RFC 6750 §2.1); ``None`` when enforcement is off
        (``serve --no-auth``)."""
        if not self.settings.auth_enabled:
            return None
        verify = self.verifier(scope)
        if verify is None:  # fail closed while the verifier is not set up
            raise ServiceUnavailable("Authorization is starting; retry shortly")
        kind, _, token = headers.get("authorization", "").partition(" ")
        if kind.lower() != "bearer" or not token.strip():
            raise Unauthorized("This FHIR server needs an access token (SMART on FHIR)", headers=_challenge(base_url))
        try:
            grant = verify(token.strip(), base_url)
        except InvalidToken as error:
            raise Unauthorized(
                f"The access token is not valid: {error.description}",
                headers=_challenge(base_url, "invalid_token", error.description),
            ) from None
        return grant


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


async def _send(send: Send, status: int, headers: dict[str, str], body: bytes | None) -> None:
    raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    if body is not None:
        raw.append((b"content-type", FHIR_CONTENT_TYPE))
        raw.append((b"content-length", str(len(body)).encode()))
    elif status not in (204, 304):
        raw.append((b"content-length", b"0"))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body or b""})
