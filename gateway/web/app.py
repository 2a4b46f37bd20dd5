"""The FastAPI application: each FHIR route of the core's routing table becomes an HTTP route whose
endpoint turns the HTTP request into a ``FhirRequest``, runs it in the core, and sends the answer.

Errors are OperationOutcome everywhere (https://hl7.org/fhir/R4/http.html#Status-Codes): ``FhirError``
is rendered by one handler; anything unexpected is a 500 that names an error id, never internals.
"""

from __future__ import annotations

import logging
import time
import traceback
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway import jsonutil
from gateway.errors import FhirError, InternalError, NotFound, PayloadTooLarge
from gateway.fhir.context import Context
from gateway.fhir.core import build_context
from gateway.fhir.request import FhirRequest, FhirResponse
from gateway.fhir.router import Route
from gateway.fhir.routes import ROUTE_TABLE, ROUTES
from gateway.settings import Settings
from gateway.web.negotiation import check_accept, check_content_type

log = logging.getLogger("gateway.http")
FHIR_PREFIX = "/fhir"
FHIR_CONTENT_TYPE = "application/fhir+json; charset=utf-8"
INLINE_ROUTES = frozenset({"read", "vread"})
"""Routes run on the event loop instead of the threadpool (SQLite only: bounded, non-blocking work)."""


def _fastapi_path(route: Route) -> str:
    path = route.pattern.replace("{op}", "${operation}")
    return f"{FHIR_PREFIX}/{path}" if path else FHIR_PREFIX


def _error_response(error: FhirError) -> Response:
    return Response(
        content=jsonutil.dumps(error.outcome()),
        status_code=error.status,
        media_type=FHIR_CONTENT_TYPE,
        headers=error.headers,
    )


def _http_response(answer: FhirResponse) -> Response:
    if answer.body is None:
        return Response(status_code=answer.status, headers=answer.headers)
    return Response(
        content=answer.body, status_code=answer.status, media_type=FHIR_CONTENT_TYPE, headers=answer.headers
    )


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"The body exceeds the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"The body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(settings: Settings, *, context: Context | None = None) -> FastAPI:
    """The gateway's ASGI app for ``settings`` (a prepared ``context`` may be passed by tests)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if getattr(app.state, "ctx", None) is None:
            app.state.ctx = await run_in_threadpool(build_context, settings)
        yield
        app.state.ctx.repo.engine.dispose()

    app = FastAPI(
        title="CalAIM FHIR gateway",
        version="0.1.0",
        summary="FHIR R4 gateway for Medi-Cal CalAIM ECM and Community Supports",
        lifespan=lifespan,
    )
    app.state.ctx = context

    @app.exception_handler(FhirError)
    async def fhir_error_handler(_request: Request, exc: FhirError) -> Response:
        return _error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def http_error_handler(request: Request, exc: StarletteHTTPException) -> Response:
        if request.url.path.startswith(FHIR_PREFIX):
            return _error_response(NotFound(str(exc.detail)) if exc.status_code == 404 else FhirError(str(exc.detail)))
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def unexpected_error_handler(_request: Request, exc: Exception) -> Response:
        error_id = uuid.uuid4().hex[:12]
        # Type and location only: exception messages can carry resource content (PHI).
        log.error("unexpected error id=%s type=%s at %s", error_id, type(exc).__name__, _frames(exc))
        return _error_response(InternalError(f"Internal server error (error id {error_id})"))

    @app.get("/healthz", tags=["operations"], summary="Liveness: the process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    endpoint = _endpoint(settings)
    for route in ROUTES:
        for method in route.methods:
            app.add_api_route(
                _fastapi_path(route),
                endpoint,
                methods=[method],
                name=route.name,
                operation_id=f"{route.name}-{method.lower()}",
                summary=route.summary,
                tags=["FHIR"],
                response_class=Response,
                responses={200: {"content": {"application/fhir+json": {}}}},
                openapi_extra={"parameters": _path_parameters(route)},
            )
    app.add_middleware(FhirFrontDoor, endpoint=endpoint)
    return app


PATH_PARAMETER_DOCS = {
    "type": "A resource type served by the gateway (see /fhir/metadata)",
    "id": "Logical id of the resource",
    "vid": "Version id (meta.versionId)",
    "operation": "Operation name, e.g. validate",
}


def _path_parameters(route: Route) -> list[dict[str, Any]]:
    """OpenAPI path parameters of a route (the endpoint reads the raw path, so FastAPI cannot infer them)."""
    names = [seg[1:-1] if seg != "{op}" else "operation" for seg in route.segments if seg.startswith("{")]
    return [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": {"type": "string"},
            "description": PATH_PARAMETER_DOCS[name],
        }
        for name in names
    ]


def _frames(exc: BaseException) -> str:
    """Where an exception came from (file:line function), without its message, which may hold PHI."""
    return " <- ".join(
        f"{frame.filename.rsplit('/', 1)[-1]}:{frame.lineno} {frame.name}"
        for frame in reversed(traceback.extract_tb(exc.__traceback__)[-6:])
    )


def _endpoint(settings: Settings) -> Any:
    """The one HTTP endpoint of the FHIR API: HTTP in, ``FhirRequest`` through the core's table, HTTP out."""

    async def endpoint(request: Request) -> Response:
        started = time.perf_counter()
        status = 500
        name = "unmatched"
        try:
            check_accept(request.headers.get("accept"), request.query_params.get("_format"))
            ctx: Context = request.app.state.ctx
            base = settings.public_base_url or f"{str(request.base_url).rstrip('/')}{FHIR_PREFIX}"
            fhir_request = FhirRequest(
                method=request.method,
                path=request.scope["path"][len(FHIR_PREFIX) :].strip("/"),
                query=list(request.query_params.multi_items()),
                headers={k.lower(): v for k, v in request.headers.items()},
                base_url=base.rstrip("/"),
            )
            route, params = ROUTE_TABLE.match(fhir_request)  # 404/405 before a body is read
            name = route.name
            if request.method in ("POST", "PUT", "PATCH"):
                fhir_request.body = await _read_body(request, settings.max_body_bytes) or None
            check_content_type(name, request.headers.get("content-type"), fhir_request.body is not None)
            if name in INLINE_ROUTES and ctx.repo.sqlite:
                # A point read on SQLite takes tens of microseconds and never waits for a writer (WAL):
                # a hop to the threadpool would cost ten times more than the read.
                answer = route.handler(ctx, fhir_request, params)
            else:
                answer = await run_in_threadpool(route.handler, ctx, fhir_request, params)
            status = answer.status
            return _http_response(answer)
        except FhirError as error:
            status = error.status
            return _error_response(error)
        finally:
            # No PHI: the route name and status, never the path, query or body.
            log.info("%s %s -> %d %.1fms", request.method, name, status, (time.perf_counter() - started) * 1000)

    return endpoint


class FhirFrontDoor:
    """ASGI middleware that hands every ``/fhir`` request straight to the FHIR endpoint.

    The FastAPI routes of the FHIR API exist to document it (openapi/openapi.json); matching a request
    against ~40 path regexes before the core matches it again in its own table cost more than a whole
    read, so requests below ``/fhir`` skip FastAPI's router. Errors still reach the app's handlers.
    """

    def __init__(self, app: ASGIApp, endpoint: Any) -> None:
        self.app = app
        self.endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and (path == FHIR_PREFIX or path.startswith(FHIR_PREFIX + "/")):
            response = await self.endpoint(Request(scope, receive))
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
