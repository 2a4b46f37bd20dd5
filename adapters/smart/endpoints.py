"""Token revocation (RFC 7009) and introspection (RFC 7662, with SMART's fields) on authlib's endpoints.

A client may revoke or introspect only tokens issued to it. Revoking a refresh token revokes its whole
family and the access tokens issued with it (RFC 7009 section 2.1); revoking an access token takes
effect at once in this process and within ``CALAIM_SMART_REVOCATION_RECHECK_S`` in the others (verify.py).
Introspection answers ``active`` plus ``scope``, ``client_id``, ``exp``, ``iat``, ``sub``, ``iss``,
``aud``, ``token_type`` and the launch context (``patient``, ``encounter``, ``fhirUser``,
``organization``), as https://build.fhir.org/ig/HL7/smart-app-launch/token-introspection.html lists.
"""

from __future__ import annotations

from typing import Any

from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7662 import IntrospectionEndpoint

from adapters.smart.registry import Client
from adapters.smart.tokens import AccessRecord, RefreshRecord

TokenRecord = AccessRecord | RefreshRecord
CONTEXT_CLAIMS = ("sub", "iss", "aud", "iat", "patient", "encounter", "fhirUser", "organization")


def _query(server: Any, token: str, hint: str | None) -> TokenRecord | None:
    if hint != "refresh_token":
        found: TokenRecord | None = server.tokens.find_access(token)
        if found is not None:
            return found
    return server.tokens.find_refresh(token)  # type: ignore[no-any-return]


class Revocation(RevocationEndpoint):  # type: ignore[misc]  # authlib is untyped
    """``POST /auth/revoke``."""

    CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt", "none"]

    def query_token(self, token_string: str, token_type_hint: str | None) -> TokenRecord | None:
        return _query(self.server, token_string, token_type_hint)

    def revoke_token(self, token: TokenRecord, request: Any) -> None:
        if isinstance(token, AccessRecord):
            self.server.tokens.revoke_access(token.jti)
        else:
            self.server.tokens.revoke_grant(token.grant_id)


class Introspection(IntrospectionEndpoint):  # type: ignore[misc]
    """``POST /auth/introspect``."""

    CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt"]

    def query_token(self, token_string: str, token_type_hint: str | None) -> TokenRecord | None:
        return _query(self.server, token_string, token_type_hint)

    def check_permission(self, token: TokenRecord, client: Client, request: Any) -> bool:
        return token.check_client(client)

    def introspect_token(self, token: TokenRecord) -> dict[str, Any]:
        if isinstance(token, RefreshRecord):
            payload: dict[str, Any] = {
                "active": True,
                "token_type": "refresh_token",
                "scope": token.scope,
                "client_id": token.client_id,
                "exp": token.expires_at,
                "sub": token.username,
            }
            if token.context.patient:
                payload["patient"] = token.context.patient
            return payload
        claims = token.claims
        payload = {
            "active": True,
            "token_type": "Bearer",
            "scope": claims.get("scope", ""),
            "client_id": claims.get("client_id"),
            "exp": claims["exp"],
        }
        payload.update({name: claims[name] for name in CONTEXT_CLAIMS if name in claims})
        return payload
