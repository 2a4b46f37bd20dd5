"""``calaim-gateway files ...``: import, export and watch exchange files (docs/files.md).

Imports are cheap at module level (click and the settings only): the commands import the store and the
workflow when they run.

Exit status of ``files import``: 0 all rows applied or unchanged, 1 some rows rejected (see the error
report), 2 the file was rejected whole.
"""

from __future__ import annotations

import sys
import time
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import click

from gateway.settings import Settings

if TYPE_CHECKING:
    from gateway.fhir.context import Context

KINDS = {
    "reconciliation": "authorization-reconciliation",
    "eligibility": "pof-eligibility",
    "activity": "ecm-activity-log",
}


def _settings(database_url: str | None, root: str | None = None) -> Settings:
    overrides: dict[str, object] = {}
    if database_url:
        overrides["database_url"] = database_url
    if root:
        overrides["files_root"] = Path(root)
    return Settings().model_copy(update=overrides)


def _context(settings: Settings) -> Context:
    from gateway.fhir.core import build_context

    if not settings.calaim_enabled:
        raise click.UsageError("the file exchange needs the CalAIM workflow: CALAIM_CALAIM_ENABLED must not be false")
    return build_context(settings)


@click.group("files")
def files() -> None:
    """HN and ECM provider file exchange (layouts: docs/files.md)."""


@files.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--sender", default=None, help="Organization id the file came from (default: the header's sender).")
@click.option("--database-url", default=None, help="Store URL (env CALAIM_DATABASE_URL).")
@click.option("--report-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the error report goes (default: next to the file).")  # fmt: skip
@click.option("--chunk-rows", type=int, default=None, help="Rows per transaction (env CALAIM_FILES_CHUNK_ROWS).")
def import_command(
    path: Path, sender: str | None, database_url: str | None, report_dir: Path | None, chunk_rows: int | None
) -> None:
    """Import one inbound file (HN daily authorization file, RTF, OTF) into the store."""
    from adapters.files.handlers import INBOUND
    from adapters.files.importer import Importer
    from adapters.files.reader import prescan
    from gateway.calaim.policy import Policy

    settings = _settings(database_url)
    ctx = _context(settings)
    importer = Importer(
        ctx,
        Policy.load(settings.calaim_plan_dir),
        INBOUND,
        chunk_rows=chunk_rows or settings.files_chunk_rows,
        max_bytes=settings.files_max_bytes,
    )
    started = time.monotonic()
    try:
        if sys.stderr.isatty():
            lines = prescan(path).lines
            with click.progressbar(length=lines, label=path.name, file=sys.stderr) as bar:
                seen = [0]

                def progress(line: int) -> None:
                    if line - seen[0] >= 1000 or line >= lines:
                        bar.update(line - seen[0])
                        seen[0] = line

                result = importer.run(path, sender=sender, report_dir=report_dir or path.parent, progress=progress)
        else:
            result = importer.run(path, sender=sender, report_dir=report_dir or path.parent)
    finally:
        ctx.repo.engine.dispose()
    elapsed = time.monotonic() - started
    click.echo(result.summary())
    rate = result.counts.read / elapsed if elapsed > 0 else 0.0
    click.echo(f"  {elapsed:.1f} s, {rate:,.0f} rows/s")
    if result.report is not None:
        click.echo(f"  error report: {result.report}")
    if result.status == "rejected":
        sys.exit(2)
    if result.errors:
        sys.exit(1)


@files.command("export")
@click.argument("kind", type=click.Choice(sorted(KINDS)))
@click.option(
    "--hn", "recipient", required=True, help="Recipient Organization id (an HN; eligibility: or ECM provider)."
)
@click.option("--date", "day", default=None, help="YYYY-MM-DD: the day (reconciliation), the week's last day "
              "(activity) or a day of the month (eligibility); default today.")  # fmt: skip
@click.option("--database-url", default=None, help="Store URL (env CALAIM_DATABASE_URL).")
@click.option("--output-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the file goes (default: the outbox under CALAIM_FILES_ROOT, else here).")  # fmt: skip
def export_command(
    kind: str, recipient: str, day: str | None, database_url: str | None, output_dir: Path | None
) -> None:
    """Write one outbound file now (reconciliation: every change not sent yet; the ledger numbers it)."""
    from adapters.files.exports import Exporter
    from gateway.calaim.policy import Policy

    settings = _settings(database_url)
    policy = Policy.load(settings.calaim_plan_dir)
    if recipient not in policy.organizations:
        raise click.BadParameter(f"{recipient} is not an Organization of the plan", param_hint="--hn")
    when = date.fromisoformat(day) if day else date.today()
    folder = output_dir or (settings.files_root / recipient / "outbox" if settings.files_root else Path.cwd())
    ctx = _context(settings)
    try:
        exporter = Exporter(ctx, policy, lambda _party: folder)
        if kind == "reconciliation":
            written = exporter.reconciliation(when, networks=[recipient])
        elif kind == "eligibility":
            written = [exporter.eligibility(recipient, when)]
        else:
            written = [exporter.activity(recipient, when)]
    finally:
        ctx.repo.engine.dispose()
    for item in written:
        click.echo(f"{item.path}: {item.kind} sequence {item.sequence}, {item.rows} rows")


@files.command("watch")
@click.option("--root", default=None, help="Drop-directory root (env CALAIM_FILES_ROOT).")
@click.option("--database-url", default=None, help="Store URL (env CALAIM_DATABASE_URL).")
@click.option("--once", is_flag=True, help="One round, then exit.")
@click.option("--schedule/--no-schedule", default=True, show_default=True, help="Also produce the due outbound files.")
def watch_command(root: str | None, database_url: str | None, once: bool, schedule: bool) -> None:
    """Import files arriving in the inboxes (and produce the scheduled files) until interrupted."""
    import logging

    from adapters.files.service import FileExchange, keeper, lease_ttl, make_lease

    settings = _settings(database_url, root)
    if settings.files_root is None:
        raise click.UsageError("give --root or CALAIM_FILES_ROOT")
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    ctx = _context(settings)
    exchange = FileExchange(ctx, settings)
    lease = make_lease(ctx, settings)
    folder = settings.files_root
    click.echo(f"watching {folder} (Ctrl-C stops)" if not once else f"one round over {folder}")
    # --once waits for a lease left by a process that died (it expires within its ttl), not longer.
    give_up = time.monotonic() + lease_ttl(settings) + 1
    try:
        while True:
            if (lease.held and lease.renew()) or lease.acquire():
                handled = exchange.run_once(schedule=schedule, keepalive=keeper(lease))
                if once:
                    click.echo(f"{handled} file(s) handled")
                    return
            elif once and time.monotonic() > give_up:
                click.echo("another process holds the file-exchange lease: nothing done")
                sys.exit(3)
            time.sleep(settings.files_poll_s if not once else 0.5)
    except KeyboardInterrupt:
        pass
    finally:
        lease.release()
        ctx.repo.engine.dispose()
