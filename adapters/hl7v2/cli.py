"""``calaim-gateway mllp``: run the county HL7 v2 interface alone, and search, show and replay the
message log (docs/hl7v2.md "Operations").

- ``calaim-gateway mllp [--port P] [--county host:port]``: the listener and the RRI sender without the
  HTTP server (same lease and outbox rules as ``serve --mllp-port``);
- ``mllp log [--direction in|out] [--status AE] [--type REF^I12] [--control-id X] [--limit N]``: ids,
  keys, outcomes and PHI-free error summaries;
- ``mllp show ID``: one message and its ACK, raw (PHI: for the operator's terminal, never for logs);
- ``mllp replay ID``: run a logged inbound message through the processor again: an applied one (AA)
  answers its stored ACK and changes nothing; an AE/AR one is processed anew (after a fix of the plan's
  configuration, or of the member data it lacked).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from datetime import UTC, datetime

import click

from gateway.settings import Settings


@click.group("mllp", invoke_without_command=True)
@click.option("--host", default=None, help="Interface to bind (env CALAIM_MLLP_HOST, default CALAIM_HOST).")
@click.option("--port", type=int, default=None, help="MLLP port (env CALAIM_MLLP_PORT; default 2575 here).")
@click.option(
    "--county", default=None, help="host:port of the county listener for RRI^I12 (env CALAIM_HL7V2_COUNTY_ENDPOINT)."
)
@click.option("--database-url", default=None, help="Store URL (env CALAIM_DATABASE_URL).")
@click.pass_context
def mllp(
    click_ctx: click.Context, host: str | None, port: int | None, county: str | None, database_url: str | None
) -> None:
    """County HL7 v2 over MLLP: run the listener and RRI sender alone, or work with the message log."""
    overrides = {"mllp_host": host, "mllp_port": port, "hl7v2_county_endpoint": county, "database_url": database_url}
    for key, value in overrides.items():
        if value is not None:
            os.environ[f"CALAIM_{key.upper()}"] = str(value)
    if click_ctx.invoked_subcommand is not None:
        return
    settings = Settings()
    if not settings.mllp_port:
        settings = settings.model_copy(update={"mllp_port": 2575})
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(_run(settings))


async def _run(settings: Settings) -> None:
    from adapters.hl7v2.service import Hl7v2Service
    from gateway import runtime
    from gateway.fhir.core import build_context

    ctx = build_context(settings)
    service = Hl7v2Service(ctx, settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await service.start()
    runtime.settle()  # the long-lived heap out of the collector's way (gateway/runtime.py)
    click.echo(f"calaim-gateway mllp: port {settings.mllp_port} (listens while it holds the lease)")
    try:
        await stop.wait()
    finally:
        await service.stop()
        ctx.repo.engine.dispose()


@mllp.command("log")
@click.option("--direction", type=click.Choice(["in", "out"]), default=None)
@click.option("--status", default=None, help="AA, AE, AR (out: also pending, error).")
@click.option("--type", "message_type", default=None, help="e.g. REF^I12, ADT^A01, RRI^I12.")
@click.option("--control-id", default=None, help="MSH-10.")
@click.option("--limit", type=int, default=50, show_default=True)
def log_command(
    direction: str | None, status: str | None, message_type: str | None, control_id: str | None, limit: int
) -> None:
    """List logged messages, newest first (no message content)."""
    from adapters.hl7v2 import messagelog
    from gateway.store.database import make_engine

    engine = make_engine(Settings().database_url)
    try:
        rows = messagelog.search(
            engine, direction=direction, status=status, message_type=message_type, control_id=control_id, limit=limit
        )
    finally:
        engine.dispose()
    for row in rows:
        when = datetime.fromtimestamp(row.received_at / 1e6, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        click.echo(
            f"{row.id}\t{row.direction}\t{when}\t{row.message_type}\t{row.sender}\t{row.control_id or '-'}\t"
            f"{row.status}\tattempts={row.attempts}\t{row.error or ''}"
        )


@mllp.command("show")
@click.argument("row_id", type=int)
def show_command(row_id: int) -> None:
    """Print one logged message and its ACK (segments on lines)."""
    from adapters.hl7v2 import messagelog
    from gateway.store.database import make_engine

    engine = make_engine(Settings().database_url)
    try:
        row = messagelog.get(engine, row_id)
    finally:
        engine.dispose()
    if row is None:
        raise click.ClickException(f"no message {row_id}")
    click.echo(f"# {row.direction} {row.message_type} {row.control_id} {row.status} {row.resources}")
    click.echo((row.raw or b"").decode("latin-1").replace("\r", "\n"))
    click.echo("# ACK")
    click.echo((row.ack or b"").decode("latin-1").replace("\r", "\n"))


@mllp.command("replay")
@click.argument("row_ids", type=int, nargs=-1, required=True)
def replay_command(row_ids: tuple[int, ...]) -> None:
    """Process logged inbound messages again (applied ones answer their stored ACK)."""
    from adapters.hl7v2 import messagelog
    from adapters.hl7v2.config import mapping_config
    from adapters.hl7v2.processor import InboundProcessor
    from gateway.calaim.policy import Policy
    from gateway.fhir.core import build_context

    settings = Settings()
    ctx = build_context(settings)
    try:
        policy = Policy.load(settings.calaim_plan_dir)
        processor = InboundProcessor(ctx, settings, policy, mapping_config(settings, policy))
        for row_id in row_ids:
            row = messagelog.get(ctx.repo.engine, row_id)
            if row is None or row.direction != messagelog.IN or row.raw is None:
                click.echo(f"{row_id}\tnot an inbound message")
                continue
            prepared = processor.prepare(row.raw)
            outcome = processor.commit([prepared])[0]
            state = "unchanged (already applied)" if outcome.duplicate else f"{len(outcome.resources)} resources"
            click.echo(f"{row_id}\t{outcome.code}\t{state}")
    finally:
        ctx.repo.engine.dispose()
