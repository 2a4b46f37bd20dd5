"""authlib's ``AuthorizationServer`` with a thin FastAPI integration (like authlib's own flask_oauth2).

``SmartRequest`` is an ``OAuth2Request`` built from what the route already read (method, URL, headers,
query and form), plus the FHIR base URL and token URL the request addresses; ``handle_response`` turns
authlib's ``(status, body, headers)`` into a Starlette response. authlib is synchronous: the routes call
it in the threadpool. Grants and endpoints are registered in ``SmartAuthorizationServer.__init__``; none
of them takes a JSON body (only dynamic client registration, RFC 7591/7592, would), so the integration
does not implement ``create_json_request``.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from authlib.oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import OAuth2Payload, OAuth2Request
from sqlalchemy import Engine
from starlette.responses import JSONResponse, Response

from adapters.smart.assertion import PrivateKeyJwt
from adapters.smart.endpoints import Introspection, Revocation
from adapters.smart.grants import AuthorizationCode, ClientCredentials, OpenIdCode, RefreshToken, S256OnlyChallenge
from adapters.smart.keys import SigningKey, load_signing_key
from adapters.smart.registry import Client, get_client
from adapters.smart.tokens import LaunchContext, TokenService
from gateway.settings import Settings

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class SmartPayload(OAuth2Payload):  # type: ignore[misc]  # authlib is untyped
    """Request parameters: first value by name (``data``) and all values (``datalist``)."""

    def __init__(self, params: list[tuple[str, str]]) -> None:
        self._data: dict[str, str] = {}
        self._datalist: defaultdict[str, list[str]] = defaultdict(list)
        for name, value in params:
            self._data.setdefault(name, value)
            self._datalist[name].append(value)

    @property
    def data(self) -> dict[str, str]:
        return self._data

    @property
    def datalist(self) -> defaultdict[str, list[str]]:
        return self._datalist


class SmartRequest(OAuth2Request):  # type: ignore[misc]
    """An OAuth 2.0 request of the gateway's authorization server."""

    def __init__(
        self,
        *,
        method: str,
        uri: str,
        headers: Any,
        query: list[tuple[str, str]],
        form: list[tuple[str, str]],
        fhir_base: str,
        token_url: str,
    ) -> None:
        super().__init__(method, uri, headers=headers)  # raises InsecureTransportError for plain http
        self._args = dict(query[::-1])
        self._form = dict(form[::-1])  # first value wins, as in payload.data
        self.payload = SmartPayload(query + form)
        self.fhir_base = fhir_base
        self.token_url = token_url
        self.launch_context: dict[str, Any] | None = None
        self.smart_context = LaunchContext()

    @property
    def args(self) -> dict[str, str]:
        return self._args

    @property
    def form(self) -> dict[str, str]:
        return self._form


class SmartAuthorizationServer(AuthorizationServer):  # type: ignore[misc]
    """The SMART on FHIR authorization server over the gateway's store."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        super().__init__(scopes_supported=None)
        self.engine = engine
        self.settings = settings
        self.key: SigningKey = load_signing_key(engine, settings)
        self.tokens = TokenService(engine, settings, self.key)
        self.register_client_auth_method(PrivateKeyJwt.CLIENT_AUTH_METHOD, PrivateKeyJwt(engine, settings))
        self.register_grant(AuthorizationCode, [S256OnlyChallenge(required=True), OpenIdCode(self)])
        self.register_grant(RefreshToken)
        self.register_grant(ClientCredentials)
        self.register_endpoint(Revocation)
        self.register_endpoint(Introspection)

    def query_client(self, client_id: str) -> Client | None:
        return get_client(self.engine, client_id)

    def save_token(self, token: dict[str, Any], request: Any) -> None:
        pass  # TokenService.issue records tokens as it signs them

    def create_oauth2_request(self, request: SmartRequest) -> SmartRequest:
        return request

    def handle_response(self, status_code: int, payload: Any, headers: list[tuple[str, str]]) -> Response:
        merged = {**dict(headers), **NO_STORE}
        if isinstance(payload, dict):
            merged.pop("Content-Type", None)
            return JSONResponse(payload, status_code=status_code, headers=merged)
        return Response(payload or b"", status_code=status_code, headers=merged)

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        pass  # no signal subscribers
