"""Discovery documents: ``{base}/.well-known/smart-configuration`` (SMART App Launch 2.x,
https://build.fhir.org/ig/HL7/smart-app-launch/conformance.html) and
``{base}/.well-known/openid-configuration`` (OpenID Connect Discovery 1.0), where ``{base}`` is the
FHIR base URL (``https://host/fhir``), which is also the token issuer.

The OAuth endpoints live beside the FHIR base, under ``/auth`` (``https://host/auth/token``...).
``oauth_uris`` and ``CAPABILITIES`` are shared with the CapabilityStatement's ``rest.security``
(the oauth-uris extension, http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris), so
both say the same thing.
"""

from __future__ import annotations

from typing import Any

from adapters.smart.assertion import ALGORITHMS
from adapters.smart.scopes import SCOPES_SUPPORTED

CAPABILITIES = (
    "launch-ehr",
    "launch-standalone",
    "authorize-post",
    "client-public",
    "client-confidential-symmetric",
    "client-confidential-asymmetric",
    "sso-openid-connect",
    "context-ehr-patient",
    "context-ehr-encounter",
    "context-standalone-patient",
    "context-banner",
    "context-style",
    "permission-offline",
    "permission-online",
    "permission-patient",
    "permission-user",
    "permission-v1",
    "permission-v2",
)
"""SMART capabilities this server implements."""

GRANT_TYPES = ("authorization_code", "refresh_token", "client_credentials")
AUTH_METHODS = ("client_secret_basic", "client_secret_post", "private_key_jwt", "none")


def auth_base(base_url: str) -> str:
    """Where the OAuth endpoints live: the parent of the FHIR base (``https://host/fhir`` → ``https://host``)."""
    return base_url.rstrip("/").rsplit("/", 1)[0]


def oauth_uris(base_url: str) -> dict[str, str]:
    """The OAuth endpoint URLs for the FHIR base ``base_url``: authorize, token, revoke, introspect,
    launch (EHR launch contexts), jwks."""
    root = auth_base(base_url) + "/auth"
    return {
        "authorize": f"{root}/authorize",
        "token": f"{root}/token",
        "revoke": f"{root}/revoke",
        "introspect": f"{root}/introspect",
        "launch": f"{root}/launch",
        "jwks": f"{root}/jwks",
    }


def smart_configuration(base_url: str) -> dict[str, Any]:
    """``/.well-known/smart-configuration`` for ``base_url``."""
    uris = oauth_uris(base_url)
    return {
        **_server(base_url, uris),
        "introspection_endpoint": uris["introspect"],
        "revocation_endpoint": uris["revoke"],
        "grant_types_supported": list(GRANT_TYPES),
        "response_types_supported": ["code"],
        "token_endpoint_auth_methods_supported": list(AUTH_METHODS),
        "token_endpoint_auth_signing_alg_values_supported": list(ALGORITHMS),
        "scopes_supported": list(SCOPES_SUPPORTED),
        "code_challenge_methods_supported": ["S256"],
        "capabilities": list(CAPABILITIES),
    }


def openid_configuration(base_url: str, id_token_alg: str = "RS256") -> dict[str, Any]:  # noqa: S107
    """``/.well-known/openid-configuration`` for ``base_url`` (the id_token issuer); id tokens are signed
    with the server's key: RS256 unless a P-256 key file makes it ES256."""
    return {
        **_server(base_url, oauth_uris(base_url)),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [id_token_alg],
        "scopes_supported": ["openid", "fhirUser"],
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "fhirUser"],
        "token_endpoint_auth_methods_supported": list(AUTH_METHODS),
        "code_challenge_methods_supported": ["S256"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
    }


def _server(base_url: str, uris: dict[str, str]) -> dict[str, Any]:
    """What both documents state alike: the issuer, its authorization and token endpoints and its keys
    (RFC 8414 section 2, OpenID Connect Discovery 1.0 section 3)."""
    return {
        "issuer": base_url,
        "authorization_endpoint": uris["authorize"],
        "token_endpoint": uris["token"],
        "jwks_uri": uris["jwks"],
    }
