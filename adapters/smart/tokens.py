"""Access tokens, refresh tokens and their revocation.

Access tokens are opaque handles (handles.py: 256 random bits, 43 URL-safe characters; SMART App Launch
and Backend Services treat them as opaque to clients, RFC 6749 §1.4). What one grants is its
``smart_access_token`` row, keyed by the handle's SHA-256 digest (the ``jti`` of introspection, audit and
revocation): the FHIR base it is for (``iss``/``aud``), ``sub``, ``exp``, ``iat``, ``client_id``, ``scope``
and the launch context (``patient``, ``encounter``, ``fhirUser``, ``organization``); the verifier
(verify.py) reads it on a token's first sight in a process. Until session 9 the access token was a
~770-character RS256 JWT carrying those claims, parsed and compared on every request
(docs/performance.md); the id_token stays a JWT signed with the server's key (keys.py). Refresh tokens are
random strings kept as SHA-256 digests; each use rotates it (the old one is spent, a new one of the
same family is issued), and a spent one presented again revokes the whole family, as does a reused
authorization code (RFC 6749 section 4.1.2, RFC 9700 section 4.14.2).

Token response fields follow https://build.fhir.org/ig/HL7/smart-app-launch/app-launch.html#response-5.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import Connection, Engine, insert, select, update

from adapters.smart import scopes
from adapters.smart.handles import digest, is_handle, new_handle
from adapters.smart.keys import SigningKey
from adapters.smart.registry import Client, User
from adapters.smart.verify import notify_revoked
from gateway.settings import Settings
from gateway.store.database import write_transaction
from gateway.store.schema import smart_access_token, smart_refresh_token

CONTEXT_COLUMNS = (
    ("patient", "patient"),
    ("encounter", "encounter"),
    ("fhir_user", "fhirUser"),
    ("organization", "organization"),
)
"""``smart_access_token`` columns of the launch context and their claim names (SMART token introspection)."""


class RefreshReused(Exception):
    """The refresh token being rotated was spent already (by a concurrent or a replayed request)."""


@dataclass(frozen=True, slots=True)
class LaunchContext:
    """What an app launch fixed: the patient (EHR launch or picker), encounter, banner need."""

    patient: str | None = None
    encounter: str | None = None
    need_patient_banner: bool = False

    def dumps(self) -> str:
        return json.dumps(asdict(self))

    @staticmethod
    def loads(text: str) -> LaunchContext:
        return LaunchContext(**json.loads(text))


@dataclass(frozen=True, slots=True)
class RefreshRecord:
    """A stored refresh token (authlib ``TokenMixin`` for the refresh grant and revocation)."""

    token_hash: str
    grant_id: str
    client_id: str
    username: str
    scope: str
    context: LaunchContext
    expires_at: int
    spent: bool
    revoked: bool

    def check_client(self, client: Client) -> bool:
        return self.client_id == client.client_id

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return max(0, self.expires_at - int(time.time()))

    def is_expired(self) -> bool:
        return self.expires_at <= int(time.time())

    def is_revoked(self) -> bool:
        return self.revoked or self.spent


@dataclass(frozen=True, slots=True)
class AccessRecord:
    """A stored access token of this server as claims (RFC 7662's names), with its revocation state
    (``TokenMixin``)."""

    claims: dict[str, Any]
    revoked: bool

    @property
    def jti(self) -> str:
        return str(self.claims["jti"])

    def check_client(self, client: Client) -> bool:
        return self.claims.get("client_id") == client.client_id

    def get_scope(self) -> str:
        return str(self.claims.get("scope", ""))

    def get_expires_in(self) -> int:
        return max(0, int(self.claims["exp"]) - int(time.time()))

    def is_expired(self) -> bool:
        return int(self.claims["exp"]) <= int(time.time())

    def is_revoked(self) -> bool:
        return self.revoked


class TokenService:
    """Issues, finds and revokes tokens in the store."""

    def __init__(self, engine: Engine, settings: Settings, key: SigningKey) -> None:
        self.engine = engine
        self.settings = settings
        self.key = key
        """The server's signing key: id_tokens (grants.py); access tokens are handles, not signed."""

    def issue(
        self,
        *,
        issuer: str,
        client: Client,
        user: User | None,
        scope: str,
        context: LaunchContext,
        grant_id: str | None,
        refresh_scope: str | None = None,
        rotate: RefreshRecord | None = None,
    ) -> dict[str, Any]:
        """Issue an access token (and a refresh token of family ``grant_id`` when ``refresh_scope`` is given
        and asks for offline/online access); record both; the token response body. With ``rotate``, that
        refresh token is spent in the same transaction (``RefreshReused`` when it already was, and its
        family is revoked)."""
        now = int(time.time())
        backend = user is None
        lifetime = (
            self.settings.smart_backend_token_lifetime_s if backend else self.settings.smart_access_token_lifetime_s
        )
        access_token = new_handle()
        jti = digest(access_token)  # the row's key: the token itself is never stored
        subject = client.client_id if user is None else user.username
        record = {
            "jti": jti,
            "grant_id": grant_id,
            "client_id": client.client_id,
            "subject": subject,
            "scope": scope,
            "issued_at": now,
            "expires_at": now + lifetime,
            "revoked": False,
            "audience": issuer,
            "patient": context.patient or None,
            "encounter": context.encounter or None,
            "fhir_user": (user.fhir_user or None) if user is not None else None,
            "organization": (client.organization if user is None else user.organization) or None,
        }
        body: dict[str, Any] = {"access_token": access_token, "token_type": "Bearer", "expires_in": lifetime}
        body["scope"] = scope
        refresh_token = None
        if (
            refresh_scope is not None
            and grant_id is not None
            and user is not None
            and scopes.has_refresh(refresh_scope)
        ):
            refresh_token = new_handle()
            online_only = scopes.OFFLINE_ACCESS not in scopes.split(refresh_scope)
            refresh_lifetime = (
                self.settings.smart_online_refresh_lifetime_s
                if online_only
                else self.settings.smart_offline_refresh_lifetime_s
            )
        try:
            with write_transaction(self.engine) as conn:
                if rotate is not None and not _spend(conn, rotate):
                    raise RefreshReused
                conn.execute(insert(smart_access_token).values(record))
                if (
                    refresh_token is not None
                    and user is not None
                    and grant_id is not None
                    and refresh_scope is not None
                ):
                    conn.execute(
                        insert(smart_refresh_token).values(
                            token_hash=digest(refresh_token),
                            grant_id=grant_id,
                            client_id=client.client_id,
                            username=user.username,
                            scope=refresh_scope,
                            context=context.dumps(),
                            issued_at=now,
                            expires_at=now + refresh_lifetime,
                            rotated_at=None,
                            revoked=False,
                        )
                    )
        except RefreshReused:
            assert rotate is not None
            self.revoke_grant(rotate.grant_id)
            raise
        if refresh_token is not None:
            body["refresh_token"] = refresh_token
        if context.patient:
            body["patient"] = context.patient
        if context.encounter:
            body["encounter"] = context.encounter
            body["fhirContext"] = [{"reference": f"Encounter/{context.encounter}"}]
        else:
            body["fhirContext"] = []
        if user is not None:
            body["need_patient_banner"] = context.need_patient_banner
            body["smart_style_url"] = issuer.rsplit("/fhir", 1)[0] + "/auth/smart-style.json"
        return body

    # --- refresh tokens ---------------------------------------------------------------------------------

    def find_refresh(self, token: str) -> RefreshRecord | None:
        """The stored refresh token ``token`` (spent, revoked or expired ones too)."""
        with self.engine.connect() as conn:
            row = (
                conn.execute(select(smart_refresh_token).where(smart_refresh_token.c.token_hash == digest(token)))
                .mappings()
                .first()
            )
        if row is None:
            return None
        return RefreshRecord(
            token_hash=row["token_hash"],
            grant_id=row["grant_id"],
            client_id=row["client_id"],
            username=row["username"],
            scope=row["scope"],
            context=LaunchContext.loads(row["context"]),
            expires_at=row["expires_at"],
            spent=row["rotated_at"] is not None,
            revoked=bool(row["revoked"]),
        )

    # --- access tokens ----------------------------------------------------------------------------------

    def find_access(self, token: str) -> AccessRecord | None:
        """The stored access token ``token`` as RFC 7662 claims (expired or revoked ones too); ``None`` when
        this server never issued it."""
        if not is_handle(token):
            return None
        with self.engine.connect() as conn:
            row = (
                conn.execute(select(smart_access_token).where(smart_access_token.c.jti == digest(token)))
                .mappings()
                .first()
            )
        if row is None or row["audience"] is None:  # JWT-era rows (migration 0015) are no longer tokens
            return None
        claims: dict[str, Any] = {
            "iss": row["audience"],
            "aud": row["audience"],
            "sub": row["subject"],
            "exp": row["expires_at"],
            "iat": row["issued_at"],
            "jti": row["jti"],
            "client_id": row["client_id"],
            "scope": row["scope"],
        }
        for column, claim in CONTEXT_COLUMNS:
            if row[column] is not None:
                claims[claim] = row[column]
        return AccessRecord(claims=claims, revoked=bool(row["revoked"]))

    def revoke_access(self, jti: str) -> None:
        """Revoke one access token, at once in this process (``notify_revoked``)."""
        with write_transaction(self.engine) as conn:
            conn.execute(update(smart_access_token).where(smart_access_token.c.jti == jti).values(revoked=True))
        notify_revoked([jti])

    def revoke_grant(self, grant_id: str) -> None:
        """Revoke every refresh and access token issued from one authorization (a code and its refreshes)."""
        with write_transaction(self.engine) as conn:
            conn.execute(
                update(smart_refresh_token).where(smart_refresh_token.c.grant_id == grant_id).values(revoked=True)
            )
            jtis = [
                row[0]
                for row in conn.execute(
                    update(smart_access_token)
                    .where(smart_access_token.c.grant_id == grant_id)
                    .values(revoked=True)
                    .returning(smart_access_token.c.jti)
                )
            ]
        notify_revoked(jtis)


def _spend(conn: Connection, record: RefreshRecord) -> bool:
    """Mark a refresh token spent unless it already was: exactly one concurrent use wins."""
    claimed = conn.execute(
        update(smart_refresh_token)
        .where(
            smart_refresh_token.c.token_hash == record.token_hash,
            smart_refresh_token.c.rotated_at.is_(None),
            smart_refresh_token.c.revoked.is_(False),
        )
        .values(rotated_at=int(time.time()))
    ).rowcount
    return claimed == 1
