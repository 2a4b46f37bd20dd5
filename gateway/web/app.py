"""The FastAPI application: documentation (/docs, openapi), liveness, error handlers, and the FHIR
front door (``gateway/web/fhir_asgi.py``) that serves every ``/fhir`` request before FastAPI's middleware
stack (``GatewayApp``). Each FHIR route of the core's routing table is also registered with FastAPI so
that the OpenAPI document lists it.

Errors are OperationOutcome everywhere (https://hl7.org/fhir/R4/http.html#Status-Codes): ``FhirError``
is rendered by one handler; anything unexpected is a 500 that names an error id, never internals.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

from gateway import jsonutil, runtime
from gateway.errors import FhirError, InternalError, NotFound
from gateway.fhir import model_pool
from gateway.fhir.context import Context
from gateway.fhir.core import build_context
from gateway.fhir.router import Route
from gateway.fhir.routes import ROUTES
from gateway.services import enabled_services, start_all, stop_all
from gateway.settings import Settings
from gateway.web.fhir_asgi import FHIR_PREFIX, FhirFrontDoor, Verifier, serves, unexpected_error
from gateway.web.security import smart_security

log = logging.getLogger("gateway.http")
FHIR_CONTENT_TYPE = "application/fhir+json; charset=utf-8"


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


class GatewayApp(FastAPI):
    """FastAPI with the FHIR front door in front of its middleware stack: a ``/fhir`` request goes to
    ``front_door`` directly, anything else (docs, OpenAPI, liveness, the SMART authorization server)
    through FastAPI as usual. The stack (Starlette's error middleware, FastAPI's telemetry and body-limit
    middleware, the router) costs more per request than a point read, and the front door renders its own
    errors, so FHIR requests skip it; FastAPI's optional OpenTelemetry instrumentation, which the gateway
    does not configure, therefore sees no FHIR request."""

    front_door: FhirFrontDoor | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        front_door = self.front_door
        if front_door is not None and serves(scope):
            if self.root_path:
                scope["root_path"] = self.root_path
            scope["app"] = self
            await front_door(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_app(settings: Settings, *, context: Context | None = None, background: bool = True) -> FastAPI:
    """The gateway's ASGI app for ``settings`` (a prepared ``context`` may be passed by tests); with
    ``background``, its lifespan runs the background services the settings enable (``gateway.services``)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if getattr(app.state, "ctx", None) is None:
            app.state.ctx = await run_in_threadpool(build_context, settings)
        if settings.auth_enabled and getattr(app.state, "verifier", None) is None:
            app.state.verifier = await run_in_threadpool(_token_verifier, app.state.ctx, settings)
            app.state.ctx.security = smart_security
        if background:  # the model-check workers of large transactions start beside the server
            model_pool.pool().start(model_pool.configured_workers(settings.validation_workers))
        services = enabled_services(app.state.ctx, settings) if background else []
        await start_all(services)
        if background:
            await run_in_threadpool(runtime.settle)
        try:
            yield
        finally:
            if background:
                runtime.thaw()
            await stop_all(services)
            if background:
                await run_in_threadpool(model_pool.pool().shutdown)
            if app.state.ctx.audit is not None:
                await run_in_threadpool(app.state.ctx.audit.close)
            app.state.ctx.repo.engine.dispose()

    app = GatewayApp(
        title="CalAIM FHIR gateway",
        version="0.1.0",
        summary="FHIR R4 gateway for Medi-Cal CalAIM ECM and Community Supports",
        lifespan=lifespan,
    )
    app.state.ctx = context
    app.state.verifier = None

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
        return _error_response(unexpected_error(exc))  # type and location logged only, never the message

    @app.get("/healthz", tags=["operations"], summary="Liveness: the process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    from adapters.smart import mount_smart  # before the FHIR routes: /fhir/.well-known/* are its routes

    mount_smart(app, settings)
    for route in ROUTES:
        for method in route.methods:
            app.add_api_route(
                _fastapi_path(route),
                _documented_only,
                methods=[method],
                name=route.name,
                operation_id=f"{route.name}-{method.lower()}",
                summary=route.summary,
                description=f"FHIR R4 REST interaction `{route.name}` (https://hl7.org/fhir/R4/http.html); "
                "bodies and answers are application/fhir+json, errors are OperationOutcome.",
                tags=["FHIR"],
                response_class=Response,
                responses={200: {"content": {"application/fhir+json": {}}}},
                openapi_extra={"parameters": _path_parameters(route)},
            )
    state = app.state  # read by item: attribute access on Starlette's State costs a failed lookup first
    app.front_door = FhirFrontDoor(settings, context=lambda: state["ctx"], verifier=lambda: state["verifier"])
    return app


def _token_verifier(ctx: Context, settings: Settings) -> Verifier:
    """The SMART access-token verifier of the authorization server (adapters/smart) on the store of ``ctx``."""
    from adapters.smart.verify import AccessTokenVerifier

    return AccessTokenVerifier(ctx.repo.engine, settings)


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


async def _documented_only(request: Request) -> Response:
    # The endpoint of the documented FHIR routes: never reached, since FhirFrontDoor answers first.
    raise InternalError("FHIR requests are served by the front door")
