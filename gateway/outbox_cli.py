"""``calaim-gateway outbox ...``: the outbox's queues, dead letters and retention for operators (docs/outbox.md).

- ``outbox stats``: per queue, events pending, claimed, retrying, dead and delivered, and the oldest pending.
- ``outbox dead [--topic T]``: dead events (id, queue, change, attempts, last error): never payloads.
- ``outbox requeue ID...`` or ``outbox requeue --all --topic T``: make dead events due again.
- ``outbox purge``: run the retention purge now (under the same lease as the background service).

Imports are cheap at module level (click and the settings only): the commands import the store when they run.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

import click

from gateway.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy import Engine

_DATABASE_URL = click.option("--database-url", default=None, help="Store URL (env CALAIM_DATABASE_URL).")


def _engine(database_url: str | None) -> Engine:
    from gateway.store.database import make_engine

    return make_engine(database_url or Settings().database_url)


def _time(micros: int | None) -> str:
    if micros is None:
        return "-"
    return datetime.fromtimestamp(micros / 1e6, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@click.group("outbox")
def outbox() -> None:
    """The transactional outbox: queue counts, dead letters, retention."""


@outbox.command("stats")
@_DATABASE_URL
def stats_command(database_url: str | None) -> None:
    """Counts per queue (one scan of the outbox)."""
    from gateway.store.outbox import stats

    engine = _engine(database_url)
    try:
        by_topic = stats(engine)
    finally:
        engine.dispose()
    click.echo(
        f"{'queue':<40} {'pending':>8} {'claimed':>8} {'retrying':>8} {'dead':>6} {'delivered':>10}  oldest pending"
    )
    for topic, s in sorted(by_topic.items()):
        click.echo(
            f"{topic:<40} {s.pending:>8} {s.claimed:>8} {s.retrying:>8} {s.dead:>6} {s.delivered:>10}"
            f"  {_time(s.oldest_pending_at)}"
        )


@outbox.command("dead")
@click.option("--topic", default=None, help="Only this queue, e.g. calaim.authorization>hl7v2.")
@click.option("--limit", type=int, default=100, show_default=True, help="Most events listed.")
@click.option("--after", "after_id", type=int, default=0, help="List events with ids above this (paging).")
@_DATABASE_URL
def dead_command(topic: str | None, limit: int, after_id: int, database_url: str | None) -> None:
    """List dead events (never their payloads)."""
    from gateway.store.dead_letters import dead_count, list_dead

    engine = _engine(database_url)
    try:
        events = list_dead(engine, topic=topic, after_id=after_id, limit=limit)
        total = dead_count(engine, topic=topic)
    finally:
        engine.dispose()
    for e in events:
        click.echo(
            f"{e.id}\t{e.topic}\t{e.dedupe_key or '-'}\tattempts={e.attempts}\tdead={_time(e.dead_at)}"
            f"\tcreated={_time(e.created_at)}\terror={e.last_error or '-'}"
        )
    click.echo(f"{total} dead event(s){f' in {topic}' if topic else ''}", err=True)


@outbox.command("requeue")
@click.argument("ids", nargs=-1, type=int)
@click.option("--all", "every", is_flag=True, help="Every dead event of --topic.")
@click.option("--topic", default=None, help="The queue whose dead events --all requeues.")
@_DATABASE_URL
def requeue_command(ids: tuple[int, ...], every: bool, topic: str | None, database_url: str | None) -> None:
    """Make dead events due again (fresh attempts); ids that are not dead are left alone."""
    from gateway.store.dead_letters import requeue, requeue_topic

    if every == bool(ids):
        raise click.UsageError("give event ids, or --all with --topic")
    if every and not topic:
        raise click.UsageError("--all needs --topic (one queue at a time)")
    if topic and not every:
        raise click.UsageError("--topic goes with --all")
    engine = _engine(database_url)
    try:
        count = requeue_topic(engine, str(topic)) if every else requeue(engine, list(ids))
    finally:
        engine.dispose()
    click.echo(f"requeued {count} dead event(s)")
    if ids and count < len(set(ids)):
        click.echo(f"{len(set(ids)) - count} id(s) were not dead (unknown, pending, delivered or requeued)", err=True)


@outbox.command("purge")
@click.option("--older-than-days", type=float, default=None, help="Default: CALAIM_OUTBOX_RETENTION_DAYS.")
@click.option("--batch", type=int, default=500, show_default=True, help="Events deleted per transaction.")
@_DATABASE_URL
def purge_command(older_than_days: float | None, batch: int, database_url: str | None) -> None:
    """Purge delivered events older than the retention now (waits for no one: exits if another purge runs)."""
    from gateway.store.outbox_retention import RetentionJob

    settings = Settings()
    days = settings.outbox_retention_days if older_than_days is None else older_than_days
    if days <= 0 and older_than_days is None:
        raise click.UsageError("CALAIM_OUTBOX_RETENTION_DAYS is 0 (keep forever): pass --older-than-days")
    engine = _engine(database_url)
    try:
        result = RetentionJob(engine, retention_days=days, batch=batch).run_once()
    finally:
        engine.dispose()
    if result is None:
        raise click.ClickException("another instance is purging now (lease outbox-retention)")
    click.echo(f"purged {result.deleted} delivered event(s) older than {days:g} days in {result.batches} batch(es)")
