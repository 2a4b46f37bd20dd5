"""``private_key_jwt`` client authentication (RFC 7523 section 2.2) as SMART requires it.

https://build.fhir.org/ig/HL7/smart-app-launch/client-confidential-asymmetric.html and
https://build.fhir.org/ig/HL7/smart-app-launch/backend-services.html: the client signs an assertion
with ``iss`` = ``sub`` = its client id, ``aud`` = the token endpoint URL, ``exp`` no more than five
minutes ahead, and a ``jti`` never used before; the server accepts RS384 and ES384 only and verifies it
with the client's registered JWKS or the JWKS fetched from its registered URL. authlib's
``JWTBearerClientAssertion`` leaves the algorithm list, the five-minute bound and replay detection to
the server: replay is a primary key in ``smart_assertion_jti`` (so it holds across processes).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
from authlib.oauth2.rfc6749 import InvalidClientError
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from sqlalchemy import Engine, delete, insert
from sqlalchemy.exc import IntegrityError

from adapters.smart.registry import PRIVATE_KEY_JWT, Client
from gateway.settings import Settings
from gateway.store.database import write_transaction
from gateway.store.schema import smart_assertion_jti

ALGORITHMS = ("RS384", "ES384")
MAX_LIFETIME_S = 300
CLOCK_SKEW_S = 5


class JwksCache:
    """JWK Sets fetched from clients' ``jwks_url`` (httpx, with a timeout), cached for a while; a key id
    not in the cached set triggers one fresh fetch (the client rotated its keys)."""

    def __init__(self, *, ttl_s: float, timeout_s: float) -> None:
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self._sets: dict[str, tuple[float, dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def get(self, url: str, kid: str | None) -> dict[str, Any]:
        """The JWKS at ``url``, refetched when stale or lacking ``kid``."""
        with self._lock:
            cached = self._sets.get(url)
        now = time.monotonic()
        fresh = cached is not None and now - cached[0] < self.ttl_s
        if cached is not None and fresh and (kid is None or any(k.get("kid") == kid for k in cached[1]["keys"])):
            return cached[1]
        try:
            response = httpx.get(url, timeout=self.timeout_s, follow_redirects=False)
            response.raise_for_status()
            jwks = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise InvalidClientError(description="The client's JWKS could not be fetched from its jwks_url") from exc
        if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
            raise InvalidClientError(description="The client's jwks_url does not serve a JWK Set")
        with self._lock:
            self._sets[url] = (now, jwks)
        return jwks


class PrivateKeyJwt(JWTBearerClientAssertion):  # type: ignore[misc]  # authlib is untyped
    """The ``private_key_jwt`` method registered with the authorization server."""

    CLIENT_AUTH_METHOD = PRIVATE_KEY_JWT

    def __init__(self, engine: Engine, settings: Settings) -> None:
        super().__init__(validate_jti=True, leeway=CLOCK_SKEW_S)
        self.engine = engine
        self.jwks_cache = JwksCache(ttl_s=settings.smart_jwks_cache_s, timeout_s=settings.smart_jwks_timeout_s)

    def __call__(self, query_client: Any, request: Any) -> Client | None:
        data = request.form
        if data.get("client_assertion_type") != self.CLIENT_ASSERTION_TYPE or not data.get("client_assertion"):
            return None
        assertion: str = data["client_assertion"]
        headers, claims = self.extract_assertion(assertion)
        client_id = claims.get("sub")
        if not isinstance(client_id, str):
            raise InvalidClientError(description="The client assertion has no valid 'sub'")
        client: Client | None = query_client(client_id)
        if client is None or client.auth_method != PRIVATE_KEY_JWT:
            raise InvalidClientError(description="The client does not exist or has no registered keys")
        alg = headers.get("alg")
        if alg not in ALGORITHMS:
            raise InvalidClientError(description=f"The client assertion must be signed with {' or '.join(ALGORITHMS)}")
        keys = self._key_set(client, headers.get("kid"))
        try:
            verified = jwt.decode(assertion, keys, algorithms=[alg]).claims
        except (JoseError, ValueError) as exc:
            raise InvalidClientError(description="The client assertion signature is invalid") from exc
        self._check_claims(verified, client_id, request.token_url)
        request.client = client
        return self.authenticate_client(client)  # type: ignore[no-any-return]

    def _key_set(self, client: Client, kid: Any) -> KeySet:
        jwks = client.jwks
        if jwks is None and client.jwks_url:
            jwks = self.jwks_cache.get(client.jwks_url, kid if isinstance(kid, str) else None)
        try:
            return KeySet.import_key_set(jwks or {"keys": []})  # type: ignore[arg-type]
        except (JoseError, ValueError, TypeError) as exc:
            raise InvalidClientError(description="The client's JWKS is not valid") from exc

    def _check_claims(self, claims: dict[str, Any], client_id: str, token_url: str) -> None:
        now = int(time.time())
        if claims.get("iss") != client_id:
            raise InvalidClientError(description="The client assertion's 'iss' must equal 'sub' (the client id)")
        aud = claims.get("aud")
        if aud != token_url and not (isinstance(aud, list) and token_url in aud):
            raise InvalidClientError(description="The client assertion's 'aud' must be the token endpoint URL")
        exp = claims.get("exp")
        if not isinstance(exp, int) or isinstance(exp, bool):
            raise InvalidClientError(description="The client assertion has no valid 'exp'")
        if exp <= now - CLOCK_SKEW_S:
            raise InvalidClientError(description="The client assertion has expired")
        if exp > now + MAX_LIFETIME_S + CLOCK_SKEW_S:
            raise InvalidClientError(description="The client assertion's 'exp' is more than 5 minutes ahead")
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti or len(jti) > 200:
            raise InvalidClientError(description="The client assertion has no valid 'jti'")
        if not self.remember_jti(client_id, jti, exp):
            raise InvalidClientError(description="The client assertion's 'jti' was used before (replay)")

    def remember_jti(self, client_id: str, jti: str, exp: int) -> bool:
        """Record ``jti`` of ``client_id``; False when it was recorded before. Rows of assertions that
        expired are dropped on the way (a replay of those fails on ``exp``)."""
        now = int(time.time())
        try:
            with write_transaction(self.engine) as conn:
                conn.execute(
                    delete(smart_assertion_jti).where(smart_assertion_jti.c.expires_at < now - 2 * CLOCK_SKEW_S)
                )
                conn.execute(insert(smart_assertion_jti).values(client_id=client_id, jti=jti, expires_at=exp))
        except IntegrityError:
            return False
        return True
