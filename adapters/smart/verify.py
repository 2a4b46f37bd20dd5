"""Access-token verification for the FHIR front door: a token in, the caller's ``Grant`` out.

``AccessTokenVerifier.verify`` is on the path of every FHIR request, so it caches: a token already
verified costs one dict lookup, a comparison with the whole cached token and an expiry check. The cache is
keyed by the token's last ``CACHE_KEY_CHARS`` characters (signature bytes) and an entry is used only when
its token equals the presented one character for character: a request's token is a fresh string, and
hashing all of it (~770 characters) cost more than the rest of the cached path. A token seen for the
first time costs one signature check (only the server's own key and algorithm are accepted: ``alg``
``none``, HMAC tricks and foreign keys are refused before any cryptography), plus one primary-key read
of its revocation flag unless the token was issued less than the recheck interval ago (then it counts
as checked at its ``iat``).

The front door hands over the ``Authorization`` header value as it arrived (``bearer``): a second cache,
keyed the same way by the header's last characters and answering only for the identical header, gives the
grant without splitting off the ``Bearer`` scheme (a copy of the ~770-character token per request); its
entries follow the token cache's (the same expiry, audience and recheck tests on every request; dropped
with it on revocation, expiry, or when either is emptied).

Revocation bound: a revocation made in this process is effective at once in every verifier of the
process (``notify_revoked`` evicts the token and remembers its ``jti``); one made by another process is
seen when the token's entry is re-checked, at most ``CALAIM_SMART_REVOCATION_RECHECK_S`` seconds
(default 5) after the last check (or after ``iat``). With the recheck at 0 every request reads the flag.

Token format: adapters/smart/tokens.py; Grant: gateway/auth/grant.py; spec:
https://build.fhir.org/ig/HL7/smart-app-launch/app-launch.html#step-5-access-token (RFC 9068 profile).
"""

from __future__ import annotations

import base64
import json
import threading
import time
import weakref
from collections.abc import Iterable
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from sqlalchemy import Engine, select

from adapters.smart.keys import SigningKey, load_signing_key
from gateway.auth.grant import Grant, InvalidToken
from gateway.settings import Settings
from gateway.store.repository import translate_db_errors
from gateway.store.schema import smart_access_token

CACHE_KEY_CHARS = 40
"""Characters at the end of a token (its signature) that key the cache; the whole token is compared."""

MAX_CACHED = 50_000
"""Cached tokens per verifier; the cache is emptied when it grows past this (tokens are re-verified)."""

REVOKED_MEMORY_S = 86_400
"""How long this process remembers a jti it revoked (the longest access-token lifetime allowed)."""

_VERIFIERS: weakref.WeakSet[AccessTokenVerifier] = weakref.WeakSet()
_VERIFIERS_LOCK = threading.Lock()
_REVOKED_HERE: dict[str, float] = {}
"""jti -> when this process revoked it (first-sight verifications consult it before skipping the store)."""


def notify_revoked(jtis: Iterable[str]) -> None:
    """Tell every verifier of this process that tokens ``jtis`` are revoked (effective immediately)."""
    revoked = frozenset(jtis)
    if not revoked:
        return
    now = time.time()
    with _VERIFIERS_LOCK:
        if len(_REVOKED_HERE) > MAX_CACHED:
            for jti, at in list(_REVOKED_HERE.items()):
                if at < now - REVOKED_MEMORY_S:
                    del _REVOKED_HERE[jti]
        _REVOKED_HERE.update(dict.fromkeys(revoked, now))
        verifiers = list(_VERIFIERS)
    for verifier in verifiers:
        verifier.evict(revoked)


class AccessTokenVerifier:
    """Verifies this server's access tokens into ``Grant`` objects, with a revocation-aware cache."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self._engine = engine
        self._settings = settings
        self._recheck_s = settings.smart_revocation_recheck_s
        self._key: SigningKey | None = None
        # token[-CACHE_KEY_CHARS:] -> (token, grant, audience, last revocation check as time.time())
        self._cache: dict[str, tuple[str, Grant, str, float]] = {}
        # header[-CACHE_KEY_CHARS:] -> (Authorization header value, grant, audience, valid until: the earlier
        # of the token's exp and its next revocation recheck)
        self._headers: dict[str, tuple[str, Grant, str, float]] = {}
        with _VERIFIERS_LOCK:
            _VERIFIERS.add(self)

    def verify(self, token: str, audience: str) -> Grant:
        """The Grant of a valid access token for the FHIR base ``audience``; raises InvalidToken
        (expired, bad signature, alg none/unexpected alg, wrong iss/aud, revoked, malformed). The bound
        method is the front door's ``Verifier`` (``gateway.web.fhir_asgi``) for a bare token."""
        return self._checked(token, audience)[0]

    def bearer(self, header: str, audience: str) -> Grant | None:
        """The Grant of an ``Authorization`` header value (RFC 6750 §2.1: ``Bearer <token>``, the scheme
        in any case); ``None`` when it carries no bearer token; raises InvalidToken as ``verify`` does.
        The front door's per-request call: a header seen before is one dict look-up, the comparison with
        the whole cached header, and the expiry, audience and recheck tests of ``verify``."""
        key = header[-CACHE_KEY_CHARS:]
        cached = self._headers.get(key)
        # The whole header, not only the key; the audience; before the token's expiry and its next recheck.
        if cached is not None and cached[0] == header and cached[2] == audience and time.time() < cached[3]:
            return cached[1]
        self._headers.pop(key, None)  # expired, another audience or due for a recheck: ``verify`` decides
        kind, _, token = header.partition(" ")
        token = token.strip()
        if kind.lower() != "bearer" or not token:
            return None
        grant, checked = self._checked(token, audience)
        if len(self._headers) >= MAX_CACHED:
            self._headers.clear()
        self._headers[key] = (header, grant, audience, min(float(grant.expires_at), checked + self._recheck_s))
        return grant

    def _checked(self, token: str, audience: str) -> tuple[Grant, float]:
        """``verify``, and when the token's revocation state was last checked."""
        now = time.time()
        key = token[-CACHE_KEY_CHARS:]
        cached = self._cache.get(key)
        if cached is not None and cached[0] == token:  # the whole token, not only the key
            _, grant, cached_audience, checked = cached
            if grant.expires_at <= now:
                self._cache.pop(key, None)
                raise InvalidToken("The access token has expired")
            if cached_audience != audience:
                raise InvalidToken("The access token is not for this server (aud)")
            if now - checked <= self._recheck_s:
                return grant, checked
            if self._revoked(grant.token_id):
                self._cache.pop(key, None)
                raise InvalidToken("The access token has been revoked")
            self._cache[key] = (token, grant, audience, now)
            return grant, now
        grant, checked = self._verify_fully(token, audience, now)
        if len(self._cache) >= MAX_CACHED:
            self._cache.clear()
        self._cache[key] = (token, grant, audience, checked)
        return grant, checked

    def evict(self, jtis: frozenset[str]) -> None:
        """Forget cached tokens (and headers) whose ``jti`` is in ``jtis`` (revoked in this process)."""
        for cache in (self._cache, self._headers):
            for key, (_, grant, _, _) in list(cache.items()):
                if grant.token_id in jtis:
                    cache.pop(key, None)

    def _signing_key(self) -> SigningKey:
        if self._key is None:
            with translate_db_errors():
                self._key = load_signing_key(self._engine, self._settings)
        return self._key

    def _verify_fully(self, token: str, audience: str, now: float) -> tuple[Grant, float]:
        """The grant and when its revocation state counts as checked."""
        key = self._signing_key()
        header = _header(token)
        if header.get("alg") != key.alg:
            raise InvalidToken(f"The access token must be signed with {key.alg}")
        if header.get("kid", key.kid) != key.kid:
            raise InvalidToken("The access token was signed by an unknown key")
        try:
            claims = jwt.decode(token, key.key, algorithms=[key.alg]).claims
        except (JoseError, ValueError) as exc:
            raise InvalidToken("The access token signature is invalid") from exc
        grant = _grant(claims, audience, now)
        if grant.token_id in _REVOKED_HERE:
            raise InvalidToken("The access token has been revoked")
        iat = claims.get("iat")
        if isinstance(iat, int) and now - self._recheck_s < iat:
            return grant, min(float(iat), now)  # too new to have been revoked longer ago than the bound
        if self._revoked(grant.token_id):
            raise InvalidToken("The access token has been revoked")
        return grant, now

    def _revoked(self, jti: str) -> bool:
        """True when the token is revoked or unknown to this server's store."""
        with translate_db_errors(), self._engine.connect() as conn:
            row = conn.execute(select(smart_access_token.c.revoked).where(smart_access_token.c.jti == jti)).first()
        return row is None or bool(row[0])


def _header(token: str) -> dict[str, Any]:
    parts = token.split(".")
    if len(parts) != 3 or not all(parts):
        raise InvalidToken("The access token is not a signed JWT")
    try:
        raw = base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4))
        header = json.loads(raw)
    except ValueError as exc:
        raise InvalidToken("The access token header is malformed") from exc
    if not isinstance(header, dict):
        raise InvalidToken("The access token header is malformed")
    return header


def _text(claims: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    value = claims.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise InvalidToken(f"The access token has no valid '{name}' claim")
    return value


def _grant(claims: dict[str, Any], audience: str, now: float) -> Grant:
    exp = claims.get("exp")
    if not isinstance(exp, int) or isinstance(exp, bool):
        raise InvalidToken("The access token has no valid 'exp' claim")
    if exp <= now:
        raise InvalidToken("The access token has expired")
    if claims.get("iss") != audience:
        raise InvalidToken("The access token was not issued for this server (iss)")
    aud = claims.get("aud")
    if aud != audience and not (isinstance(aud, list) and audience in aud):
        raise InvalidToken("The access token is not for this server (aud)")
    return Grant(
        subject=str(_text(claims, "sub")),
        client_id=str(_text(claims, "client_id")),
        scope=str(_text(claims, "scope")),
        token_id=str(_text(claims, "jti")),
        expires_at=exp,
        patient=_text(claims, "patient", required=False),
        fhir_user=_text(claims, "fhirUser", required=False),
        organization=_text(claims, "organization", required=False),
        encounter=_text(claims, "encounter", required=False),
    )
