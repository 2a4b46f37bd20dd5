"""The authorization server's HTTP endpoints (FastAPI), mounted by ``mount_smart``.

- ``GET {base}/.well-known/smart-configuration``, ``GET {base}/.well-known/openid-configuration``,
  ``GET /auth/jwks``, ``GET /auth/smart-style.json``: public documents.
- ``GET|POST /auth/authorize``: the authorization request (SMART App Launch step 3); without a session
  the login page, then the patient picker (standalone ``launch/patient``), then the consent page, whose
  POST (with the session's CSRF token) issues the code.
- ``POST /auth/login``: the login form (double-submit CSRF cookie), then back to ``/auth/authorize``.
- ``POST /auth/token``, ``POST /auth/revoke``, ``POST /auth/introspect``: RFC 6749, 7009, 7662.
- ``POST /auth/launch``: an authenticated EHR client creates a launch context (patient, encounter).

``{base}`` is the FHIR base (``settings.public_base_url`` or derived from the request as the FHIR
front door derives it). authlib runs in the threadpool.
"""

from __future__ import annotations

import hmac
import re
import secrets
import threading
from typing import Any
from urllib.parse import parse_qsl, urlencode

from authlib.oauth2.rfc6749 import InsecureTransportError, OAuth2Error
from fastapi import APIRouter, FastAPI, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, RedirectResponse, Response

from adapters.smart import codes, discovery, pages, scopes
from adapters.smart.registry import authenticate_user
from adapters.smart.server import NO_STORE, SmartAuthorizationServer, SmartRequest
from adapters.smart.tokens import LaunchContext
from gateway.fhir.context import Context
from gateway.settings import Settings

SESSION_COOKIE = "calaim_smart_session"
CSRF_COOKIE = "calaim_smart_csrf"
_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
STYLE = {
    "color_background": "#f7f7f7",
    "color_error": "#a40000",
    "color_highlight": "#0b5cad",
    "color_modal_backdrop": "",
    "color_success": "#2e7d32",
    "color_text": "#1b1b1b",
    "dim_border_radius": "4px",
    "dim_font_size": "16px",
    "dim_spacing_size": "16px",
    "font_family_body": "system-ui, sans-serif",
    "font_family_heading": "system-ui, sans-serif",
}
"""The SMART style document (https://build.fhir.org/ig/HL7/smart-app-launch/scopes-and-launch-context.html#styling)."""
_server_lock = threading.Lock()


def mount_smart(app: FastAPI, settings: Settings) -> None:
    """Register the authorization server's routes on ``app``."""
    app.include_router(build_router(settings))


def fhir_base(request: Request, settings: Settings) -> str:
    """The FHIR base URL the request addresses (as gateway/web/fhir_asgi.py derives it)."""
    if settings.public_base_url:
        return settings.public_base_url.rstrip("/")
    host = request.headers.get("host")
    if not host:
        server = request.scope.get("server") or ("localhost", 80)
        host = f"{server[0]}:{server[1]}"
    return f"{request.url.scheme}://{host}{request.scope.get('root_path', '')}/fhir"


def smart_server(app: FastAPI, settings: Settings) -> SmartAuthorizationServer:
    """The app's authorization server, built on first use over the Context's engine (call in a thread)."""
    server: SmartAuthorizationServer | None = getattr(app.state, "smart_server", None)
    if server is None:
        with _server_lock:
            server = getattr(app.state, "smart_server", None)
            if server is None:
                ctx: Context = app.state.ctx
                server = SmartAuthorizationServer(ctx.repo.engine, settings)
                app.state.smart_server = server
    return server


def build_router(settings: Settings) -> APIRouter:
    """The routes of the authorization server."""
    router = APIRouter(tags=["SMART on FHIR"])

    async def oauth_request(request: Request, *, read_form: bool = True) -> SmartRequest:
        form: list[tuple[str, str]] = []
        if read_form and request.method == "POST":
            form = [(k, v) for k, v in (await request.form()).multi_items() if isinstance(v, str)]
        base = fhir_base(request, settings)
        return SmartRequest(
            method=request.method,
            uri=str(request.url),
            headers=request.headers,
            query=list(request.query_params.multi_items()),
            form=form,
            fhir_base=base,
            token_url=discovery.oauth_uris(base)["token"],
        )

    async def server_for(request: Request) -> SmartAuthorizationServer:
        return await run_in_threadpool(smart_server, request.app, settings)

    @router.get("/fhir/.well-known/smart-configuration", summary="SMART App Launch discovery")
    async def smart_configuration(request: Request) -> JSONResponse:
        body = discovery.smart_configuration(fhir_base(request, settings))
        return JSONResponse(body, headers={"Access-Control-Allow-Origin": "*"})

    @router.get("/fhir/.well-known/openid-configuration", summary="OpenID Connect discovery")
    async def openid_configuration(request: Request) -> JSONResponse:
        server = await server_for(request)
        body = discovery.openid_configuration(fhir_base(request, settings), server.key.alg)
        return JSONResponse(body, headers={"Access-Control-Allow-Origin": "*"})

    @router.get("/auth/jwks", summary="The server's public signing keys (JWKS)")
    async def jwks(request: Request) -> JSONResponse:
        server = await server_for(request)
        return JSONResponse(server.key.jwks(), headers={"Access-Control-Allow-Origin": "*"})

    @router.get("/auth/smart-style.json", summary="SMART styling document (smart_style_url)")
    async def style() -> JSONResponse:
        return JSONResponse(STYLE, headers={"Access-Control-Allow-Origin": "*"})

    async def authorize(request: Request) -> Response:
        try:
            oauth = await oauth_request(request)
        except InsecureTransportError:
            return pages.error_page("insecure_transport", "OAuth requires https (or a loopback address)")
        server = await server_for(request)
        ctx: Context = request.app.state.ctx
        session_id = request.cookies.get(SESSION_COOKIE)
        return await run_in_threadpool(_authorize, server, ctx, oauth, session_id, request.url.scheme == "https")

    for method in ("GET", "POST"):  # SMART's authorize-post capability: the same endpoint by POST
        router.add_api_route(
            "/auth/authorize",
            authorize,
            methods=[method],
            summary=f"Authorization endpoint ({method})",
            operation_id=f"smart-authorize-{method.lower()}",
            response_model=None,
        )

    @router.post("/auth/login", summary="Login form of the authorization pages", response_model=None)
    async def login(request: Request) -> Response:
        form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
        next_query = urlencode(parse_qsl(form.get("next", ""), keep_blank_values=True))
        cookie = request.cookies.get(CSRF_COOKIE, "")
        if not cookie or not hmac.compare_digest(cookie, form.get("_csrf", "")):
            return pages.error_page("invalid_request", "The login form expired: start again from the application", 403)
        server = await server_for(request)
        user = await run_in_threadpool(
            authenticate_user,
            server.engine,
            form.get("username", ""),
            form.get("password", ""),
            max_failures=settings.smart_login_max_failures,
            lockout_s=settings.smart_login_lockout_s,
        )
        secure = request.url.scheme == "https"
        if user is None:
            client_id = dict(parse_qsl(next_query)).get("client_id", "")
            return _login_page(client_id, next_query, secure, error="Invalid user name or password.", status=401)
        session_id = await run_in_threadpool(codes.open_session, server.engine, user, settings.smart_session_lifetime_s)
        response = RedirectResponse(f"authorize?{next_query}", status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            session_id,
            max_age=settings.smart_session_lifetime_s,
            path="/auth",
            httponly=True,
            samesite="lax",
            secure=secure,
        )
        response.delete_cookie(CSRF_COOKIE, path="/auth")
        return response

    @router.post("/auth/token", summary="Token endpoint (RFC 6749)", response_model=None)
    async def token(request: Request) -> Response:
        return await _endpoint(request, lambda server, oauth: server.create_token_response(oauth))

    @router.post("/auth/revoke", summary="Token revocation (RFC 7009)", response_model=None)
    async def revoke(request: Request) -> Response:
        return await _endpoint(request, lambda server, oauth: server.create_endpoint_response("revocation", oauth))

    @router.post("/auth/introspect", summary="Token introspection (RFC 7662)", response_model=None)
    async def introspect(request: Request) -> Response:
        return await _endpoint(request, lambda server, oauth: server.create_endpoint_response("introspection", oauth))

    @router.post(
        "/auth/launch", summary="EHR launch: create a launch context (authenticated EHR client)", response_model=None
    )
    async def launch(request: Request) -> Response:
        ctx: Context = request.app.state.ctx
        return await _endpoint(request, lambda server, oauth: _create_launch(server, ctx, oauth))

    async def _endpoint(request: Request, call: Any) -> Response:
        try:
            oauth = await oauth_request(request)
        except InsecureTransportError as error:
            return JSONResponse(dict(error.get_body()), status_code=400, headers=NO_STORE)
        server = await server_for(request)
        response: Response = await run_in_threadpool(call, server, oauth)
        return response

    return router


def _login_page(
    client_id: str, next_query: str, secure: bool, *, error: str | None = None, status: int = 200
) -> Response:
    csrf = secrets.token_urlsafe(24)
    response = pages.render("login.html", status, client_id=client_id, next=next_query, csrf=csrf, error=error)
    response.set_cookie(CSRF_COOKIE, csrf, max_age=1800, path="/auth", httponly=True, samesite="strict", secure=secure)
    return response


def _authorize(
    server: SmartAuthorizationServer, ctx: Context, oauth: SmartRequest, session_id: str | None, secure: bool
) -> Response:
    """The authorization endpoint's steps: validate, log in, pick a patient, consent, issue the code."""
    session = codes.find_session(server.engine, session_id)
    user = session.user if session else None
    try:
        grant = server.get_consent_grant(oauth, end_user=user)
    except OAuth2Error as error:
        if error.redirect_uri:
            return server.handle_error_response(oauth, error)  # type: ignore[no-any-return]
        return pages.error_page(error.error, error.description)
    oauth_params = [(k, v) for k, values in oauth.payload.datalist.items() if not k.startswith("_") for v in values]
    client_id = oauth.client.client_id
    if session is None or user is None:
        return _login_page(client_id, urlencode(oauth_params), secure)
    form = oauth.form
    context, picked = _launch_context(oauth)
    base = oauth.fhir_base
    if context is None:
        pick = oauth.payload.data.get("_pick")
        if not pick:
            name = oauth.payload.data.get("_name", "")
            patients, more = pages.search_patients(ctx, user=user, client_id=client_id, base_url=base, name=name)
            return pages.render(
                "picker.html",
                username=user.username,
                client_id=client_id,
                params=oauth_params,
                patients=patients,
                more=more,
                name_filter=name,
            )
        chosen = (
            pages.visible_patient(ctx, user=user, client_id=client_id, base_url=base, patient_id=pick)
            if _ID.match(pick)
            else None
        )
        if chosen is None:
            return pages.error_page("invalid_request", "The chosen patient is not available", 403)
        context, picked = LaunchContext(patient=chosen.id, need_patient_banner=True), chosen.display
    decision = form.get("_decision")
    if decision is None or oauth.method != "POST":
        params = oauth_params + (
            [("_pick", context.patient)] if oauth.payload.data.get("_pick") and context.patient else []
        )
        return pages.render(
            "consent.html",
            username=user.username,
            client_id=client_id,
            scopes=[(s, pages.scope_meaning(s)) for s in scopes.split(oauth.scope)],
            patient=picked,
            params=params,
            csrf=session.csrf_token,
        )
    if not hmac.compare_digest(form.get("_csrf", ""), session.csrf_token):
        return pages.error_page("invalid_request", "The consent form expired: start again from the application", 403)
    if decision != "approve":
        return server.create_authorization_response(oauth, grant_user=None, grant=grant)  # type: ignore[no-any-return]
    oauth.smart_context = context
    return server.create_authorization_response(oauth, grant_user=user, grant=grant)  # type: ignore[no-any-return]


def _launch_context(oauth: SmartRequest) -> tuple[LaunchContext | None, str | None]:
    """The launch context fixed without a picker: the EHR launch's, or none needed; ``(None, None)``
    when the user must choose a patient (standalone ``launch/patient`` or ``patient/`` scopes)."""
    if oauth.launch_context is not None:
        patient = oauth.launch_context.get("patient")
        return LaunchContext(patient=patient, encounter=oauth.launch_context.get("encounter")), patient
    granted = oauth.scope or ""
    if scopes.LAUNCH_PATIENT in scopes.split(granted) or scopes.has_patient_scopes(granted):
        return None, None
    return LaunchContext(), None


def _create_launch(server: SmartAuthorizationServer, ctx: Context, oauth: SmartRequest) -> Response:
    """``POST /auth/launch`` (client authentication as at the token endpoint; form ``patient``,
    ``encounter``, optional ``app_client_id``): ``{"launch": ID, "expires_in": N}``."""
    try:
        client = server.authenticate_client(
            oauth, ["client_secret_basic", "client_secret_post", "private_key_jwt"], endpoint="launch"
        )
    except OAuth2Error as error:
        return server.handle_error_response(oauth, error)  # type: ignore[no-any-return]
    if scopes.LAUNCH not in scopes.split(client.scope):
        body = {"error": "unauthorized_client", "error_description": "The client is not registered for 'launch'"}
        return JSONResponse(body, status_code=403, headers=NO_STORE)
    patient = oauth.form.get("patient", "")
    encounter = oauth.form.get("encounter") or None
    if not _ID.match(patient) or ctx.repo.read("Patient", patient) is None:
        body = {"error": "invalid_request", "error_description": "'patient' must be the id of an existing Patient"}
        return JSONResponse(body, status_code=400, headers=NO_STORE)
    if encounter is not None and not _ID.match(encounter):
        body = {"error": "invalid_request", "error_description": "'encounter' must be an Encounter id"}
        return JSONResponse(body, status_code=400, headers=NO_STORE)
    context = {"patient": patient, **({"encounter": encounter} if encounter else {})}
    lifetime = server.settings.smart_launch_lifetime_s
    launch = codes.create_launch(
        server.engine,
        created_by=client.client_id,
        for_client=oauth.form.get("app_client_id") or None,
        context=context,
        lifetime_s=lifetime,
    )
    return JSONResponse({"launch": launch, "expires_in": lifetime}, headers=NO_STORE)
