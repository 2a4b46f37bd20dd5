"""Access-token verification for the FHIR front door: a token in, the caller's ``Grant`` out.

An access token is an opaque handle (adapters/smart/handles.py): its grant lives in its
``smart_access_token`` row, keyed by the handle's SHA-256 digest. ``AccessTokenVerifier.verify`` is on the
path of every FHIR request, so it caches: a token seen before costs one dict look-up by the token (43
characters) and the expiry, audience and recheck tests. A token seen for the first time in this process
costs one primary-key read of its row (the client, subject, scope, expiry, revocation flag, audience and
launch context), so N processes on one database all accept it; anything that does not have a handle's
form (a JWT of an earlier version, junk) is refused without a read.

The front door hands over the ``Authorization`` header value as it arrived (``bearer``): a second cache,
keyed by the whole header and answering only for the identical header, gives the grant without splitting
off the ``Bearer`` scheme; its entries follow the token cache's (the same expiry, audience and recheck
tests on every request; dropped with it on revocation, expiry, or when either is emptied).

Revocation bound: a revocation made in this process is effective at once in every verifier of the
process (``notify_revoked`` evicts the token); one made by another process is seen when the token's entry
is re-checked, at most ``CALAIM_SMART_REVOCATION_RECHECK_S`` seconds (default 5) after the last read of
its row. With the recheck at 0 every request reads the flag.

Token format: adapters/smart/tokens.py; Grant: gateway/auth/grant.py; spec:
https://build.fhir.org/ig/HL7/smart-app-launch/app-launch.html#step-5-access-token (RFC 6750).
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Engine, select

from adapters.smart.handles import digest, is_handle
from gateway.auth.grant import Grant, InvalidToken
from gateway.settings import Settings
from gateway.store.repository import translate_db_errors
from gateway.store.schema import smart_access_token

MAX_CACHED = 50_000
"""Cached tokens (and headers) per verifier; a cache is emptied when it grows past this (tokens are read
again)."""

_T = smart_access_token.c
_ROW = select(
    _T.revoked, _T.expires_at, _T.audience, _T.subject, _T.client_id, _T.scope, _T.patient, _T.fhir_user,
    _T.organization, _T.encounter,
)  # fmt: skip
REVOKED_MEMORY_S = 86_400
"""How long this process remembers a jti it revoked (the longest access-token lifetime allowed)."""

_VERIFIERS: weakref.WeakSet[AccessTokenVerifier] = weakref.WeakSet()
_VERIFIERS_LOCK = threading.Lock()
_REVOKED_HERE: dict[str, float] = {}
"""jti -> when this process revoked it: a first sight that read the row just before the revocation's
commit still refuses the token (and a notification alone, without the row, is enough in this process)."""


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
        self._recheck_s = settings.smart_revocation_recheck_s
        # token -> (grant, audience, last read of its row as time.time())
        self._cache: dict[str, tuple[Grant, str, float]] = {}
        # Authorization header value -> (grant, audience, valid until: the earlier of the token's exp and
        # its next revocation recheck)
        self._headers: dict[str, tuple[Grant, str, float]] = {}
        with _VERIFIERS_LOCK:
            _VERIFIERS.add(self)

    def verify(self, token: str, audience: str) -> Grant:
        """The Grant of a valid access token for the FHIR base ``audience``; raises InvalidToken
        (unknown, expired, revoked, issued for another FHIR base, malformed)."""
        return self._checked(token, audience)[0]

    def bearer(self, header: str, audience: str) -> Grant | None:
        """The Grant of an ``Authorization`` header value (RFC 6750 §2.1: ``Bearer <token>``, the scheme
        in any case); ``None`` when it carries no bearer token; raises InvalidToken as ``verify`` does.
        The front door's per-request call: a header seen before is one dict look-up by the whole header
        and the expiry, audience and recheck tests of ``verify``."""
        cached = self._headers.get(header)
        # The audience; before the token's expiry and its next recheck.
        if cached is not None and cached[1] == audience and time.time() < cached[2]:
            return cached[0]
        self._headers.pop(header, None)  # expired, another audience or due for a recheck: ``verify`` decides
        kind, _, token = header.partition(" ")
        token = token.strip()
        if kind.lower() != "bearer" or not token:
            return None
        grant, checked = self._checked(token, audience)
        if len(self._headers) >= MAX_CACHED:
            self._headers.clear()
        self._headers[header] = (grant, audience, min(float(grant.expires_at), checked + self._recheck_s))
        return grant

    def _checked(self, token: str, audience: str) -> tuple[Grant, float]:
        """``verify``, and when the token's row was last read."""
        now = time.time()
        cached = self._cache.get(token)
        if cached is not None:
            grant, cached_audience, checked = cached
            if grant.expires_at <= now:
                self._cache.pop(token, None)
                raise InvalidToken("The access token has expired")
            if cached_audience != audience:
                raise InvalidToken("The access token is not for this server (aud)")
            if now - checked <= self._recheck_s:
                return grant, checked
            if self._revoked(grant.token_id):
                self._cache.pop(token, None)
                raise InvalidToken("The access token has been revoked")
            self._cache[token] = (grant, audience, now)
            return grant, now
        grant = self._look_up(token, audience, now)
        if len(self._cache) >= MAX_CACHED:
            self._cache.clear()
        self._cache[token] = (grant, audience, now)
        return grant, now

    def evict(self, jtis: frozenset[str]) -> None:
        """Forget cached tokens (and headers) whose ``jti`` is in ``jtis`` (revoked in this process)."""
        for cache in (self._cache, self._headers):
            for key, (grant, _, _) in list(cache.items()):
                if grant.token_id in jtis:
                    cache.pop(key, None)

    def _look_up(self, token: str, audience: str, now: float) -> Grant:
        """The grant of a token not cached: its row, by the token's digest."""
        if not is_handle(token):
            raise InvalidToken("The access token is malformed (not one this server issues)")
        jti = digest(token)
        with translate_db_errors(), self._engine.connect() as conn:
            row = conn.execute(_ROW.where(_T.jti == jti)).first()
        if row is None:
            raise InvalidToken("The access token is unknown or has been revoked")
        if jti in _REVOKED_HERE:
            raise InvalidToken("The access token has been revoked")
        return _grant(jti, row, audience, now)

    def _revoked(self, jti: str) -> bool:
        """True when the token is revoked or unknown to this server's store."""
        with translate_db_errors(), self._engine.connect() as conn:
            row = conn.execute(select(_T.revoked).where(_T.jti == jti)).first()
        return row is None or bool(row[0])


def _grant(jti: str, row: Any, audience: str, now: float) -> Grant:
    """The Grant of a token's row, after the checks a token's claims used to pass (RFC 9068 §4)."""
    revoked, expires_at, issued_for, subject, client_id, scope, patient, fhir_user, organization, encounter = row
    if revoked:
        raise InvalidToken("The access token has been revoked")
    if expires_at <= now:
        raise InvalidToken("The access token has expired")
    if issued_for != audience:  # None on rows of JWT-era tokens (migration 0015): refused
        raise InvalidToken("The access token is not for this server (aud)")
    return Grant(
        subject=subject,
        client_id=client_id,
        scope=scope,
        token_id=jti,
        expires_at=int(expires_at),
        patient=patient,
        fhir_user=fhir_user,
        organization=organization,
        encounter=encounter,
    )
