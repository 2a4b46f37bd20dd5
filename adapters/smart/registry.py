"""Registered clients and users of the authorization server (``calaim-gateway clients|users add``).

A client is public (PKCE only), confidential symmetric (``client_secret_basic``/``client_secret_post``)
or confidential asymmetric (``private_key_jwt`` with a registered JWKS or JWKS URL; the only kind that
may use SMART Backend Services' client_credentials grant). Client secrets and user passwords are kept
as argon2id hashes with OWASP's minimum parameters (m=19 MiB, t=2, p=1: a login or a secret check costs
tens of milliseconds, not hundreds). A user acts for one Organization and may have a ``fhirUser``.

The ``Client`` and ``User`` classes implement what authlib's grants ask of them (``ClientMixin``).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Engine, Table, insert, select, update
from sqlalchemy.exc import IntegrityError

from adapters.smart import scopes
from gateway.store.database import write_transaction
from gateway.store.schema import smart_client, smart_user

HASHER = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
PUBLIC, SECRET, PRIVATE_KEY_JWT = "none", "client_secret", "private_key_jwt"
_ORGANIZATION = re.compile(r"^(Organization/)?([A-Za-z0-9\-.]{1,64})$")
_FHIR_USER = re.compile(r"^(Practitioner|PractitionerRole|Patient|RelatedPerson|Person)/[A-Za-z0-9\-.]{1,64}$")
# A dummy hash to verify against for unknown users, so that timing does not tell which users exist.
_DUMMY_HASH = HASHER.hash("not a password of anyone")


class RegistryError(ValueError):
    """A registration is invalid (bad organization, duplicate id...)."""


@dataclass(frozen=True, slots=True)
class Client:
    """A registered OAuth client (authlib ``ClientMixin``)."""

    client_id: str
    auth_method: str
    scope: str
    redirect_uris: tuple[str, ...] = ()
    secret_hash: str | None = None
    jwks: dict[str, Any] | None = None
    jwks_url: str | None = None
    organization: str | None = None

    @property
    def confidential(self) -> bool:
        """True unless the client is public."""
        return self.auth_method != PUBLIC

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> None:
        return None  # SMART requires redirect_uri in every authorization request

    def get_allowed_scope(self, scope: str | None) -> str | None:
        granted = scopes.intersect(scope, self.scope)
        return granted or None

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.redirect_uris  # exact match, no prefix or pattern

    def check_client_secret(self, client_secret: str) -> bool:
        return self.secret_hash is not None and verify_secret(self.secret_hash, client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        if self.auth_method == PUBLIC:
            return method == "none" and endpoint != "introspection"
        if self.auth_method == SECRET:
            return method in ("client_secret_basic", "client_secret_post")
        return method == PRIVATE_KEY_JWT

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code" and bool(self.redirect_uris)

    def check_grant_type(self, grant_type: str) -> bool:
        if grant_type in ("authorization_code", "refresh_token"):
            return bool(self.redirect_uris)
        return grant_type == "client_credentials" and self.auth_method == PRIVATE_KEY_JWT


@dataclass(frozen=True, slots=True)
class User:
    """Provider staff who sign in on the login page."""

    username: str
    organization: str
    fhir_user: str | None = None
    auth_time: int = field(default=0, compare=False)

    def get_user_id(self) -> str:
        return self.username


def verify_secret(secret_hash: str, secret: str) -> bool:
    """True when ``secret`` matches the argon2 ``secret_hash``."""
    try:
        return HASHER.verify(secret_hash, secret)
    except (VerificationError, InvalidHashError):
        return False


def organization_id(value: str) -> str:
    """``hn-altamed`` from ``Organization/hn-altamed`` or ``hn-altamed``."""
    match = _ORGANIZATION.match(value.strip())
    if match is None:
        raise RegistryError(f"not an Organization reference: {value!r}")
    return match.group(2)


def add_client(
    engine: Engine,
    *,
    client_id: str,
    scope: str,
    redirect_uris: Sequence[str] = (),
    secret: str | None = None,
    jwks: dict[str, Any] | None = None,
    jwks_url: str | None = None,
    organization: str | None = None,
) -> Client:
    """Register a client: public (no secret, no keys), symmetric (``secret``) or asymmetric (``jwks`` or
    ``jwks_url``)."""
    if sum(x is not None for x in (secret, jwks, jwks_url)) > 1:
        raise RegistryError("a client has a secret, a JWKS or a JWKS URL, not several")
    invalid = [s for s in scopes.split(scope) if not scopes.is_valid(s)]
    if invalid or not scope.strip():
        raise RegistryError(f"unknown scopes: {' '.join(invalid) or '(none given)'}")
    if jwks is not None and not (isinstance(jwks.get("keys"), list) and jwks["keys"]):
        raise RegistryError("the JWKS has no keys")
    method = SECRET if secret is not None else PRIVATE_KEY_JWT if (jwks or jwks_url) else PUBLIC
    client = Client(
        client_id=client_id,
        auth_method=method,
        scope=" ".join(scopes.split(scope)),
        redirect_uris=tuple(redirect_uris),
        secret_hash=HASHER.hash(secret) if secret is not None else None,
        jwks=jwks,
        jwks_url=jwks_url,
        organization=organization_id(organization) if organization else None,
    )
    row = {
        "client_id": client.client_id,
        "auth_method": client.auth_method,
        "secret_hash": client.secret_hash,
        "redirect_uris": json.dumps(list(client.redirect_uris)),
        "scope": client.scope,
        "jwks": json.dumps(jwks) if jwks is not None else None,
        "jwks_url": jwks_url,
        "organization": client.organization,
    }
    _insert_new(engine, smart_client, row, f"client {client_id!r}")
    return client


def get_client(engine: Engine, client_id: str) -> Client | None:
    """The registered client ``client_id``."""
    with engine.connect() as conn:
        row = conn.execute(select(smart_client).where(smart_client.c.client_id == client_id)).mappings().first()
    if row is None:
        return None
    return Client(
        client_id=row["client_id"],
        auth_method=row["auth_method"],
        scope=row["scope"],
        redirect_uris=tuple(json.loads(row["redirect_uris"])),
        secret_hash=row["secret_hash"],
        jwks=json.loads(row["jwks"]) if row["jwks"] else None,
        jwks_url=row["jwks_url"],
        organization=row["organization"],
    )


def add_user(engine: Engine, *, username: str, password: str, organization: str, fhir_user: str | None = None) -> User:
    """Register a user who acts for ``organization`` (``Organization/ID`` or ``ID``)."""
    if not username.strip() or len(password) < 8:
        raise RegistryError("a user needs a name and a password of at least 8 characters")
    if fhir_user is not None and not _FHIR_USER.match(fhir_user):
        raise RegistryError(f"fhirUser must be a reference such as Practitioner/ID, not {fhir_user!r}")
    user = User(username=username, organization=organization_id(organization), fhir_user=fhir_user)
    row = {
        "username": username,
        "password_hash": HASHER.hash(password),
        "organization": user.organization,
        "fhir_user": fhir_user,
        "failed_logins": 0,
        "locked_until": 0,
    }
    _insert_new(engine, smart_user, row, f"user {username!r}")
    return user


def _insert_new(engine: Engine, table: Table, row: dict[str, Any], what: str) -> None:
    """Insert ``row`` (stamped ``created_at``) into ``table``; ``RegistryError`` when its key is taken:
    the unique key decides, so two concurrent registrations cannot both succeed (DESIGN.md choice 3)."""
    try:
        with write_transaction(engine) as conn:
            conn.execute(insert(table).values(**row, created_at=int(time.time())))
    except IntegrityError as exc:
        raise RegistryError(f"{what} exists already") from exc


def get_user(engine: Engine, username: str) -> User | None:
    """The registered user ``username``."""
    with engine.connect() as conn:
        row = conn.execute(select(smart_user).where(smart_user.c.username == username)).mappings().first()
    return None if row is None else User(row["username"], row["organization"], row["fhir_user"])


def authenticate_user(
    engine: Engine, username: str, password: str, *, max_failures: int, lockout_s: int
) -> User | None:
    """The user when ``password`` is right and the account is not locked; ``None`` otherwise (callers
    show one generic message). ``max_failures`` wrong passwords in a row lock the account for
    ``lockout_s`` seconds; a right password while locked still fails."""
    now = int(time.time())
    with engine.connect() as conn:
        row = conn.execute(select(smart_user).where(smart_user.c.username == username)).mappings().first()
    if row is None:
        verify_secret(_DUMMY_HASH, password)
        return None
    locked = row["locked_until"] > now
    if not locked and verify_secret(row["password_hash"], password):
        with write_transaction(engine) as conn:
            conn.execute(
                update(smart_user).where(smart_user.c.username == username).values(failed_logins=0, locked_until=0)
            )
        return User(row["username"], row["organization"], row["fhir_user"], auth_time=now)
    if not locked:
        with write_transaction(engine) as conn:
            failures = conn.execute(
                update(smart_user)
                .where(smart_user.c.username == username)
                .values(failed_logins=smart_user.c.failed_logins + 1)
                .returning(smart_user.c.failed_logins)
            ).scalar_one()
            if failures >= max_failures:
                conn.execute(
                    update(smart_user)
                    .where(smart_user.c.username == username)
                    .values(failed_logins=0, locked_until=now + lockout_s)
                )
    return None
