"""The ``calaim-gateway`` command line: ``serve`` now, room for ``clients``, ``users``, ``files``, ``mllp``."""

from __future__ import annotations

import logging

import click

from gateway.settings import Settings


@click.group()
@click.version_option(package_name="calaim-gateway")
def main() -> None:
    """CalAIM FHIR gateway."""


@main.command()
@click.option("--host", default=None, help="Interface to bind (env CALAIM_HOST, default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="HTTP port (env CALAIM_PORT, default 8080).")
@click.option("--database-url", default=None, help="sqlite:///PATH or postgresql://... (env CALAIM_DATABASE_URL).")
@click.option("--workers", type=int, default=1, show_default=True, help="Worker processes (PostgreSQL for >1).")
@click.option("--demo", is_flag=True, help="Load the CalAIM demo data first (see `calaim-gateway demo`).")
@click.option(
    "--no-auth",
    is_flag=True,
    help="Development only: serve the FHIR API without access tokens (refused unless bound to loopback).",
)
@click.option("--mllp-port", type=int, default=None, help="County HL7 v2 MLLP port, 0 = off (env CALAIM_MLLP_PORT).")
def serve(
    host: str | None,
    port: int | None,
    database_url: str | None,
    workers: int,
    demo: bool,
    no_auth: bool,
    mllp_port: int | None,
) -> None:
    """Serve the FHIR API at http://HOST:PORT/fhir (docs at /docs, liveness at /healthz)."""
    import os

    import uvicorn

    overrides: dict[str, object] = {"host": host, "port": port, "database_url": database_url, "mllp_port": mllp_port}
    if no_auth:
        _refuse_unless_loopback(host or Settings().host)
        overrides["auth_enabled"] = "false"
    # Flags override the environment; worker processes read their settings from it, so set it there.
    for key, value in overrides.items():
        if value is not None:
            os.environ[f"CALAIM_{key.upper()}"] = str(value)
    settings = Settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    store = _safe_url(settings.database_url)
    if demo:
        _load_demo(settings)
    click.echo(f"calaim-gateway: FHIR base http://{settings.host}:{settings.port}/fhir  store {store}")
    if not settings.auth_enabled:
        _refuse_unless_loopback(settings.host)
        warning = "WARNING: access tokens are NOT enforced (--no-auth): anyone who reaches this port reads everything"
        click.secho(warning, fg="red", bold=True, err=True)
        logging.getLogger("gateway").warning("authorization enforcement is OFF (development mode)")
    uvicorn.run(
        "gateway.web.asgi:app",
        host=settings.host,
        port=settings.port,
        workers=workers,
        access_log=False,  # uvicorn's access log prints query strings, which may carry PHI
        log_level=settings.log_level,
        proxy_headers=True,
    )


def _refuse_unless_loopback(host: str) -> None:
    """``--no-auth`` is for a developer's own machine: only a loopback address may serve without tokens."""
    import ipaddress

    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise click.UsageError(f"--no-auth (CALAIM_AUTH_ENABLED=false) is refused on {host}: bind to 127.0.0.1 or ::1")


def _safe_url(url: str) -> str:
    """The database URL without its password."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@main.command()
@click.option("--output", type=click.Path(dir_okay=False), default=None, help="Write here instead of stdout.")
def openapi(output: str | None) -> None:
    """Print (or write) the OpenAPI document of the HTTP API."""
    import json
    from pathlib import Path

    from gateway.web.openapi import openapi_document

    text = json.dumps(openapi_document(Settings(database_url="sqlite://")), indent=2, sort_keys=True) + "\n"
    if output is None:
        click.echo(text, nl=False)
    else:
        Path(output).write_text(text, encoding="utf-8")


@main.group()
def db() -> None:
    """Database schema commands (Alembic migrations; both dialects)."""


@db.command("upgrade")
@click.option("--database-url", default=None, help="Store URL (env CALAIM_DATABASE_URL).")
def db_upgrade(database_url: str | None) -> None:
    """Bring the store's schema to the newest revision."""
    from gateway.store.database import make_engine
    from gateway.store.migrate import current_revision

    engine = make_engine(database_url or Settings().database_url)
    click.echo(f"schema at revision {current_revision(engine)}")
    engine.dispose()


@db.command("current")
@click.option("--database-url", default=None, help="Store URL (env CALAIM_DATABASE_URL).")
def db_current(database_url: str | None) -> None:
    """Print the store's schema revision (without migrating)."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    from gateway.store.migrate import current_revision

    url = make_url(database_url or Settings().database_url)
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    engine = create_engine(url)
    click.echo(current_revision(engine) or "empty")
    engine.dispose()


@main.command("demo")
@click.option("--database-url", default=None, help="Store URL (env CALAIM_DATABASE_URL).")
def demo_command(database_url: str | None) -> None:
    """Load the Orange County Organizations and synthetic members, referrals, authorizations and services
    through the CalAIM workflow (idempotent: loading twice changes nothing)."""
    settings = Settings(database_url=database_url) if database_url else Settings()
    _load_demo(settings)


def _load_demo(settings: Settings) -> None:
    from gateway.calaim.demo import load_demo
    from gateway.calaim.policy import Policy
    from gateway.fhir.core import build_context

    if not settings.calaim_enabled:
        raise click.UsageError("the demo needs the CalAIM workflow: CALAIM_CALAIM_ENABLED must not be false")
    ctx = build_context(settings)
    try:
        summary = load_demo(ctx, policy=Policy.load(settings.calaim_plan_dir))
    finally:
        ctx.repo.engine.dispose()
    click.echo(f"demo loaded into {_safe_url(settings.database_url)}:")
    click.echo(f"  {summary.organizations} Organizations, {summary.members} synthetic members")
    for line in (*summary.referrals, *summary.authorizations):
        click.echo(f"  {line}")
    click.echo(f"  try: GET /fhir/$ecm-activity?month={summary.month}")


from adapters.hl7v2.cli import mllp  # noqa: E402  (the adapter's commands; imports only click and settings)

main.add_command(mllp)

from adapters.smart.cli import clients, users  # noqa: E402  (SMART registry commands; imports only click)

main.add_command(clients)
main.add_command(users)

from adapters.files.cli import files  # noqa: E402  (the file exchange's commands; imports only click and settings)

main.add_command(files)

from gateway.outbox_cli import outbox  # noqa: E402  (outbox stats, dead letters, retention; imports only click)

main.add_command(outbox)

if __name__ == "__main__":
    main()
