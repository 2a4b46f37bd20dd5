"""The grants of the authorization server, on authlib's (one class per grant, as the RFCs have it).

- ``AuthorizationCode``: RFC 6749 section 4.1 with SMART App Launch's additions: ``aud`` must be this
  FHIR base, an EHR ``launch`` id must be live, PKCE is required for every client and only S256 is
  accepted (``S256OnlyChallenge``; RFC 7636 allows ``plain``, SMART 2.x does not).
- ``OpenIdCode``: OpenID Connect id_token (RS256 with the server's key) for ``openid fhirUser``.
- ``RefreshToken``: RFC 6749 section 6 with rotation; narrowing the scope is allowed, widening refused.
- ``ClientCredentials``: SMART Backend Services; ``private_key_jwt`` only, ``system/`` scopes,
  ``expires_in`` at most 300 s, no refresh token.

Grants find the server's state through ``request`` (a ``SmartRequest``: FHIR base, token URL) and
``server`` (a ``SmartAuthorizationServer``: engine, settings, tokens).
"""

from __future__ import annotations

import time
from typing import Any

from authlib.oauth2.rfc6749 import InvalidGrantError, InvalidRequestError, InvalidScopeError, grants
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oidc.core import OpenIDCode

from adapters.smart import codes, scopes
from adapters.smart.codes import AuthorizationCode as StoredCode
from adapters.smart.registry import Client, User, get_user
from adapters.smart.tokens import LaunchContext, RefreshRecord, RefreshReused

ALL_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt", "none"]


class S256OnlyChallenge(CodeChallenge):  # type: ignore[misc]  # authlib is untyped
    """PKCE (RFC 7636) as SMART 2.x requires it: a ``code_challenge`` with method S256 on every
    authorization request, a matching ``code_verifier`` on every code redemption, whatever the client."""

    DEFAULT_CODE_CHALLENGE_METHOD = "S256"
    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        data = grant.request.payload.data
        if not data.get("code_challenge"):
            raise InvalidRequestError("PKCE is required: missing 'code_challenge'")
        if data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("PKCE 'code_challenge_method' must be S256")
        super().validate_code_challenge(grant, redirect_uri)

    def validate_code_verifier(self, grant: Any, result: Any) -> None:
        if not grant.request.form.get("code_verifier"):
            raise InvalidRequestError("Missing 'code_verifier'")
        super().validate_code_verifier(grant, result)

    def get_authorization_code_challenge(self, authorization_code: StoredCode) -> str:
        return authorization_code.code_challenge

    def get_authorization_code_challenge_method(self, authorization_code: StoredCode) -> str:
        return "S256"


class AuthorizationCode(grants.AuthorizationCodeGrant):  # type: ignore[misc]
    """Authorization code grant with SMART's ``aud`` and ``launch`` checks."""

    TOKEN_ENDPOINT_AUTH_METHODS = ALL_AUTH_METHODS

    def validate_authorization_request(self) -> str:
        redirect_uri: str = super().validate_authorization_request()
        try:
            self._validate_smart()
        except InvalidRequestError as error:
            error.redirect_uri = redirect_uri
            raise
        return redirect_uri

    def _validate_smart(self) -> None:
        request = self.request
        data = request.payload.data
        aud = (data.get("aud") or "").rstrip("/")
        if not aud:
            raise InvalidRequestError("Missing 'aud': the FHIR base URL of this server")
        if aud != request.fhir_base:
            raise InvalidRequestError("'aud' is not the FHIR base URL of this server")
        launch = data.get("launch")
        request.launch_context = None
        if launch:
            context = codes.peek_launch(self.server.engine, launch, request.client.client_id)
            if context is None:
                raise InvalidRequestError("The 'launch' id is unknown, expired or already used")
            request.launch_context = context
        elif scopes.LAUNCH in scopes.split(request.scope):
            raise InvalidRequestError("The 'launch' scope needs a 'launch' parameter (EHR launch)")

    def save_authorization_code(self, code: str, request: Any) -> None:
        context: LaunchContext = request.smart_context
        launch = request.payload.data.get("launch")
        if launch and not codes.spend_launch(self.server.engine, launch):
            raise InvalidRequestError("The 'launch' id was already used", redirect_uri=request.payload.redirect_uri)
        codes.save_code(
            self.server.engine,
            code=code,
            client_id=request.client.client_id,
            user=request.user,
            redirect_uri=request.payload.redirect_uri,
            scope=request.scope,
            code_challenge=request.payload.data["code_challenge"],
            nonce=request.payload.data.get("nonce"),
            context=context,
            lifetime_s=self.server.settings.smart_code_lifetime_s,
        )

    def query_authorization_code(self, code: str, client: Client) -> StoredCode | None:
        found, reused_grant = codes.redeem_code(self.server.engine, code, client.client_id)
        if reused_grant is not None:
            # RFC 6749 section 4.1.2: a code used twice revokes what was issued from it.
            self.server.tokens.revoke_grant(reused_grant)
        return found

    def delete_authorization_code(self, authorization_code: StoredCode) -> None:
        pass  # redeem_code spent it already (atomically)

    def authenticate_user(self, authorization_code: StoredCode) -> User | None:
        user = get_user(self.server.engine, authorization_code.username)
        if user is None:
            return None
        return User(user.username, user.organization, user.fhir_user, auth_time=authorization_code.auth_time)

    def generate_token(
        self,
        user: User | None = None,
        scope: str | None = None,
        grant_type: str | None = None,
        expires_in: int | None = None,
        include_refresh_token: bool = True,
    ) -> dict[str, Any]:
        stored: StoredCode = self.request.authorization_code
        return self.server.tokens.issue(  # type: ignore[no-any-return]
            issuer=self.request.fhir_base,
            client=self.request.client,
            user=user,
            scope=stored.scope,
            context=stored.context,
            grant_id=stored.grant_id,
            refresh_scope=stored.scope if include_refresh_token else None,
        )


class OpenIdCode(OpenIDCode):  # type: ignore[misc]
    """id_token for ``openid``: ``iss`` the FHIR base, ``aud`` the client, ``fhirUser`` claim."""

    def __init__(self, server: Any) -> None:
        super().__init__(require_nonce=False)
        self.server = server

    def exists_nonce(self, nonce: str, request: Any) -> bool:
        return False  # a nonce is echoed in the id_token; the client checks it

    def resolve_client_private_key(self, client: Client) -> Any:
        return self.server.key.key

    def get_client_algorithm(self, client: Client) -> str:
        return str(self.server.key.alg)

    def get_encode_header(self, client: Client) -> dict[str, str]:
        return {"alg": self.server.key.alg, "kid": self.server.key.kid, "typ": "JWT"}

    def get_compatible_claims(self, request: Any) -> dict[str, Any]:
        now = int(time.time())
        return {"iss": request.fhir_base, "aud": [request.client.client_id], "iat": now, "exp": now + 3600}

    def generate_user_info(self, user: User, scope: str) -> dict[str, Any]:
        info: dict[str, Any] = {"sub": user.username}
        if scopes.FHIR_USER in scopes.split(scope) and user.fhir_user:
            info["fhirUser"] = user.fhir_user
        return info


class RefreshToken(grants.RefreshTokenGrant):  # type: ignore[misc]
    """Refresh with rotation: each refresh token works once; the new one keeps the original scope."""

    TOKEN_ENDPOINT_AUTH_METHODS = ALL_AUTH_METHODS
    INCLUDE_NEW_REFRESH_TOKEN = True

    def authenticate_refresh_token(self, refresh_token: str) -> RefreshRecord | None:
        record: RefreshRecord | None = self.server.tokens.find_refresh(refresh_token)
        if record is None or record.revoked or record.is_expired():
            return None
        if record.spent:
            self.server.tokens.revoke_grant(record.grant_id)  # a rotated token came back: stolen
            return None
        return record

    def _validate_token_scope(self, token: RefreshRecord) -> None:
        requested = self.request.payload.scope
        if requested and not scopes.is_subset(requested, token.scope):
            raise InvalidScopeError("A refresh may narrow the scope, never widen it")

    def authenticate_user(self, refresh_token: RefreshRecord) -> User | None:
        return get_user(self.server.engine, refresh_token.username)

    def issue_token(self, user: User, refresh_token: RefreshRecord) -> dict[str, Any]:
        requested = self.request.payload.scope
        scope = " ".join(scopes.split(requested)) if requested else refresh_token.scope
        try:
            return self.server.tokens.issue(  # type: ignore[no-any-return]
                issuer=self.request.fhir_base,
                client=self.request.client,
                user=user,
                scope=scope,
                context=refresh_token.context,
                grant_id=refresh_token.grant_id,
                refresh_scope=refresh_token.scope,
                rotate=refresh_token,
            )
        except RefreshReused as reused:
            raise InvalidGrantError("The refresh token was already used") from reused

    def revoke_old_credential(self, refresh_token: RefreshRecord) -> None:
        pass  # spent by issue_token in the transaction that stores its successor


class ClientCredentials(grants.ClientCredentialsGrant):  # type: ignore[misc]
    """SMART Backend Services (client_credentials with a signed client assertion)."""

    TOKEN_ENDPOINT_AUTH_METHODS = ["private_key_jwt"]

    def validate_token_request(self) -> None:
        super().validate_token_request()
        requested = " ".join(s for s in scopes.split(self.request.payload.scope) if s.startswith("system/"))
        granted = self.request.client.get_allowed_scope(requested)
        if not granted:
            raise InvalidScopeError("No requested system/ scope is registered for this client")
        self.request.scope = granted

    def create_token_response(self) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
        token = self.server.tokens.issue(
            issuer=self.request.fhir_base,
            client=self.request.client,
            user=None,
            scope=self.request.scope,
            context=LaunchContext(),
            grant_id=None,
        )
        return 200, token, self.TOKEN_RESPONSE_HEADER
