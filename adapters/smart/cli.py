"""``calaim-gateway clients add`` and ``calaim-gateway users add``: register OAuth clients and provider
staff in the store (secrets and passwords read from stdin, never from the command line)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click


def _engine(database_url: str | None):  # type: ignore[no-untyped-def]  # sqlalchemy imported lazily
    from gateway.settings import Settings
    from gateway.store.database import make_engine

    return make_engine(database_url or Settings().database_url)


def _secret_from_stdin(what: str) -> str:
    value = sys.stdin.readline().rstrip("\r\n")
    if not value:
        raise click.UsageError(f"no {what} on stdin")
    return value


@click.group()
def clients() -> None:
    """OAuth clients of the SMART authorization server."""


@clients.command("add")
@click.option("--client-id", required=True, help="The client id the app will send.")
@click.option("--redirect-uri", "redirect_uris", multiple=True, help="A redirect URI (exact match); repeatable.")
@click.option("--scope", required=True, help='Registered scopes, e.g. "launch/patient openid fhirUser patient/*.rs".')
@click.option("--public", "public", is_flag=True, help="A public client (PKCE only, no secret).")
@click.option("--secret-stdin", is_flag=True, help="Read the client secret from stdin (client_secret_basic/post).")
@click.option(
    "--jwks-file", type=click.Path(exists=True, dir_okay=False), help="The client's public JWKS (private_key_jwt)."
)
@click.option("--jwks-url", help="URL of the client's public JWKS (private_key_jwt).")
@click.option("--organization", help="Organization/ID the client acts for (backend services).")
@click.option("--database-url", default=None, help="Store URL (env CALAIM_DATABASE_URL).")
def clients_add(
    client_id: str,
    redirect_uris: tuple[str, ...],
    scope: str,
    public: bool,
    secret_stdin: bool,
    jwks_file: str | None,
    jwks_url: str | None,
    organization: str | None,
    database_url: str | None,
) -> None:
    """Register a client: exactly one of --public, --secret-stdin, --jwks-file, --jwks-url."""
    from adapters.smart.registry import RegistryError, add_client

    if sum((public, secret_stdin, jwks_file is not None, jwks_url is not None)) != 1:
        raise click.UsageError("give exactly one of --public, --secret-stdin, --jwks-file, --jwks-url")
    secret = _secret_from_stdin("client secret") if secret_stdin else None
    jwks = json.loads(Path(jwks_file).read_text(encoding="utf-8")) if jwks_file else None
    engine = _engine(database_url)
    try:
        client = add_client(
            engine,
            client_id=client_id,
            scope=scope,
            redirect_uris=redirect_uris,
            secret=secret,
            jwks=jwks,
            jwks_url=jwks_url,
            organization=organization,
        )
    except RegistryError as error:
        raise click.ClickException(str(error)) from error
    finally:
        engine.dispose()
    click.echo(f"client {client.client_id} registered ({client.auth_method}; scope {client.scope})")


@click.group()
def users() -> None:
    """Provider staff who sign in to authorize apps."""


@users.command("add")
@click.option("--username", required=True)
@click.option("--password-stdin", is_flag=True, required=True, help="Read the password from stdin.")
@click.option("--organization", required=True, help="Organization/ID the user acts for, e.g. Organization/hn-altamed.")
@click.option("--fhir-user", help="The user's FHIR resource, e.g. Practitioner/p-1.")
@click.option("--database-url", default=None, help="Store URL (env CALAIM_DATABASE_URL).")
def users_add(
    username: str, password_stdin: bool, organization: str, fhir_user: str | None, database_url: str | None
) -> None:
    """Register a user (the password is hashed with argon2id)."""
    from adapters.smart.registry import RegistryError, add_user

    password = _secret_from_stdin("password")
    engine = _engine(database_url)
    try:
        user = add_user(engine, username=username, password=password, organization=organization, fhir_user=fhir_user)
    except RegistryError as error:
        raise click.ClickException(str(error)) from error
    finally:
        engine.dispose()
    click.echo(f"user {user.username} registered (organization {user.organization})")
