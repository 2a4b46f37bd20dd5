"""Short-lived single-use secrets of the authorization server: authorization codes, EHR launch ids,
login sessions. Only SHA-256 digests are stored; single use is an atomic ``UPDATE ... WHERE used_at IS
NULL``, so two concurrent redemptions (two processes) cannot both succeed.

- Authorization code (RFC 6749 section 4.1.2): bound to client, redirect_uri, user, scope, PKCE S256
  challenge and launch context; at most ``CALAIM_SMART_CODE_LIFETIME_S`` old; redeemed once. A second
  redemption revokes every token issued from the code.
- EHR launch (https://build.fhir.org/ig/HL7/smart-app-launch/app-launch.html#launch-app-ehr-launch): an
  opaque ``launch`` id bound to a patient (and encounter) that an authenticated EHR client creates.
- Session: the login session behind the HttpOnly cookie of the authorization pages, with its CSRF token.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, delete, insert, select, update

from adapters.smart.handles import digest, new_handle
from adapters.smart.registry import User
from adapters.smart.tokens import LaunchContext
from gateway.store.database import write_transaction
from gateway.store.schema import smart_auth_code, smart_launch, smart_session, smart_user


@dataclass(frozen=True, slots=True)
class AuthorizationCode:
    """A redeemed authorization code (authlib ``AuthorizationCodeMixin``)."""

    grant_id: str
    client_id: str
    username: str
    redirect_uri: str
    scope: str
    code_challenge: str
    nonce: str | None
    auth_time: int
    context: LaunchContext

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str | None:
        return self.nonce

    def get_auth_time(self) -> int:
        return self.auth_time

    def get_acr(self) -> None:
        return None

    def get_amr(self) -> None:
        return None


def save_code(
    engine: Engine,
    *,
    code: str,
    client_id: str,
    user: User,
    redirect_uri: str,
    scope: str,
    code_challenge: str,
    nonce: str | None,
    context: LaunchContext,
    lifetime_s: int,
) -> None:
    """Store a fresh authorization code (as its digest)."""
    now = int(time.time())
    with write_transaction(engine) as conn:
        conn.execute(
            insert(smart_auth_code).values(
                code_hash=digest(code),
                grant_id=secrets.token_hex(16),
                client_id=client_id,
                username=user.username,
                redirect_uri=redirect_uri,
                scope=scope,
                code_challenge=code_challenge,
                nonce=nonce,
                auth_time=user.auth_time or now,
                context=context.dumps(),
                expires_at=now + lifetime_s,
                used_at=None,
            )
        )


def redeem_code(engine: Engine, code: str, client_id: str) -> tuple[AuthorizationCode | None, str | None]:
    """Spend ``code`` for ``client_id``: ``(code, None)`` the first time; ``(None, grant_id)`` when it was
    spent before (the caller revokes that grant's tokens); ``(None, None)`` when unknown, expired or of
    another client."""
    now = int(time.time())
    code_hash = digest(code)
    with write_transaction(engine) as conn:
        row = conn.execute(select(smart_auth_code).where(smart_auth_code.c.code_hash == code_hash)).mappings().first()
        if row is None or row["client_id"] != client_id:
            return None, None
        claimed = conn.execute(
            update(smart_auth_code)
            .where(smart_auth_code.c.code_hash == code_hash, smart_auth_code.c.used_at.is_(None))
            .values(used_at=now)
        ).rowcount
    if claimed != 1:
        return None, row["grant_id"]
    if row["expires_at"] <= now:
        return None, None
    return (
        AuthorizationCode(
            grant_id=row["grant_id"],
            client_id=row["client_id"],
            username=row["username"],
            redirect_uri=row["redirect_uri"],
            scope=row["scope"],
            code_challenge=row["code_challenge"],
            nonce=row["nonce"],
            auth_time=row["auth_time"],
            context=LaunchContext.loads(row["context"]),
        ),
        None,
    )


# --- EHR launch contexts -------------------------------------------------------------------------------


def create_launch(
    engine: Engine, *, created_by: str, for_client: str | None, context: dict[str, Any], lifetime_s: int
) -> str:
    """A new launch id bound to ``context`` (``patient``, ``encounter``)."""
    launch = new_handle()
    with write_transaction(engine) as conn:
        conn.execute(
            insert(smart_launch).values(
                launch_hash=digest(launch),
                created_by=created_by,
                client_id=for_client,
                context=json.dumps(context),
                expires_at=int(time.time()) + lifetime_s,
                used_at=None,
            )
        )
    return launch


def peek_launch(engine: Engine, launch: str, client_id: str) -> dict[str, Any] | None:
    """The context of an unspent, unexpired launch id usable by ``client_id``."""
    with engine.connect() as conn:
        row = conn.execute(select(smart_launch).where(smart_launch.c.launch_hash == digest(launch))).mappings().first()
    if row is None or row["used_at"] is not None or row["expires_at"] <= int(time.time()):
        return None
    if row["client_id"] not in (None, client_id):
        return None
    context: dict[str, Any] = json.loads(row["context"])
    return context


def spend_launch(engine: Engine, launch: str) -> bool:
    """Mark a launch id used (when its code is issued); False when it was used already."""
    with write_transaction(engine) as conn:
        return (
            conn.execute(
                update(smart_launch)
                .where(smart_launch.c.launch_hash == digest(launch), smart_launch.c.used_at.is_(None))
                .values(used_at=int(time.time()))
            ).rowcount
            == 1
        )


# --- login sessions ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Session:
    """A signed-in user of the authorization pages."""

    user: User
    csrf_token: str


def open_session(engine: Engine, user: User, lifetime_s: int) -> str:
    """A new session id for ``user`` (the cookie value)."""
    session_id = new_handle()
    now = int(time.time())
    with write_transaction(engine) as conn:
        conn.execute(delete(smart_session).where(smart_session.c.expires_at <= now))
        conn.execute(
            insert(smart_session).values(
                session_hash=digest(session_id),
                username=user.username,
                csrf_token=secrets.token_urlsafe(24),
                auth_time=user.auth_time or now,
                expires_at=now + lifetime_s,
            )
        )
    return session_id


def find_session(engine: Engine, session_id: str | None) -> Session | None:
    """The live session of cookie value ``session_id``."""
    if not session_id:
        return None
    query = (
        select(smart_session, smart_user.c.organization, smart_user.c.fhir_user)
        .join(smart_user, smart_user.c.username == smart_session.c.username)
        .where(smart_session.c.session_hash == digest(session_id))
    )
    with engine.connect() as conn:
        row = conn.execute(query).mappings().first()
    if row is None or row["expires_at"] <= int(time.time()):
        return None
    user = User(row["username"], row["organization"], row["fhir_user"], auth_time=row["auth_time"])
    return Session(user=user, csrf_token=row["csrf_token"])
