"""The file exchange beside the HTTP server (``gateway/services.py`` ``SERVICE_FACTORIES``): when
``files_root`` is set, a thread that, under the lease ``file-exchange`` (one instance among N processes,
gateway/store/leases.py), imports what arrives in the inboxes and produces the outbound files when due
(``adapters.files.schedule``); and, when ``files_sftp_port`` is set, the SFTP endpoint over the same folders.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime

import asyncssh

from adapters.files.dropdir import DropDir, process_inboxes
from adapters.files.exports import Exporter
from adapters.files.handlers import INBOUND
from adapters.files.importer import Importer
from adapters.files.schedule import parse_time, run_due
from adapters.files.sftp import serve
from gateway.calaim.policy import Policy
from gateway.fhir.context import Context
from gateway.settings import Settings
from gateway.store.leases import Lease

log = logging.getLogger("adapters.files")

LEASE = "file-exchange"


def lease_ttl(settings: Settings) -> float:
    """The file-exchange lease's lifetime: three polls, at least 5 s (renewed while a file is imported)."""
    return max(5.0, 3 * settings.files_poll_s)


def make_lease(ctx: Context, settings: Settings) -> Lease:
    """The lease that makes one process among N run the file exchange."""
    return Lease(ctx.repo.engine, LEASE, ttl_seconds=lease_ttl(settings))


def keeper(lease: Lease) -> Callable[[int], None]:
    """A progress callback that renews ``lease`` every third of its lifetime while a file is imported."""
    every = lease.ttl_seconds / 3
    last = [time.monotonic()]

    def keep(_line: int) -> None:
        if time.monotonic() - last[0] >= every:
            last[0] = time.monotonic()
            if not lease.renew():
                log.warning("the file-exchange lease was lost during an import; the ledger keeps rows exactly once")

    return keep


def parties(policy: Policy) -> list[str]:
    """Who exchanges files with the plan: every configured Organization but the plan itself."""
    return sorted(o for o in policy.organizations if o != policy.plan_organization)


class FileExchange:
    """Inbox processing and the outbound schedule, one round at a time (``run_once``)."""

    def __init__(self, ctx: Context, settings: Settings, policy: Policy | None = None) -> None:
        if settings.files_root is None:
            raise ValueError("the file exchange needs files_root")
        self.ctx = ctx
        self.settings = settings
        self.policy = policy or Policy.load(settings.calaim_plan_dir)
        self.drop = DropDir(settings.files_root, parties(self.policy))
        self.drop.ensure()
        self.importer = Importer(
            ctx, self.policy, INBOUND, chunk_rows=settings.files_chunk_rows, max_bytes=settings.files_max_bytes
        )
        self.exporter = Exporter(ctx, self.policy, self.drop.outbox)

    def run_once(
        self, *, schedule: bool = True, now: datetime | None = None, keepalive: Callable[[int], None] | None = None
    ) -> int:
        """Import what is ready, then produce what is due; how many files were handled."""
        results = process_inboxes(self.drop, self.importer, settle_s=self.settings.files_settle_s, keepalive=keepalive)
        written = []
        if schedule:
            moment = now or datetime.now()
            daily_at = parse_time(self.settings.files_daily_at)
            written = run_due(
                self.exporter, self.policy, moment, daily_at=daily_at, weekly_day=self.settings.files_weekly_day
            )
        return len(results) + len(written)


class FileExchangeService:
    """``BackgroundService`` of the file exchange."""

    name = "file-exchange"

    def __init__(self, ctx: Context, settings: Settings) -> None:
        self.ctx = ctx
        self.settings = settings
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._acceptor: asyncssh.SSHAcceptor | None = None
        self.exchange: FileExchange | None = None

    async def start(self) -> None:
        """Start the watcher thread and, when configured, the SFTP endpoint."""
        self.exchange = FileExchange(self.ctx, self.settings)
        self._thread = threading.Thread(target=self._run, name="file-exchange", daemon=True)
        self._thread.start()
        s = self.settings
        if s.files_sftp_port is not None:
            if s.files_sftp_host_key is None or s.files_sftp_authorized_keys is None:
                log.error("files_sftp_port is set without files_sftp_host_key and files_sftp_authorized_keys: no SFTP")
                return
            self._acceptor = await serve(
                host=s.files_sftp_host,
                port=s.files_sftp_port,
                host_key=s.files_sftp_host_key,
                keys_dir=s.files_sftp_authorized_keys,
                drop=self.exchange.drop,
                max_bytes=s.files_max_bytes,
                plan=self.exchange.policy.plan_organization,
            )

    async def stop(self) -> None:
        """Stop the endpoint, then let the thread finish its round (a chunk commits or rolls back whole)."""
        if self._acceptor is not None:
            self._acceptor.close()
            await self._acceptor.wait_closed()
        self._stop.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 60)

    def _run(self) -> None:
        assert self.exchange is not None
        poll = self.settings.files_poll_s
        lease = Lease(self.ctx.repo.engine, LEASE, ttl_seconds=max(60.0, 3 * poll))
        try:
            while not self._stop.is_set():
                try:
                    if (lease.held and lease.renew()) or lease.acquire():
                        self.exchange.run_once()
                except Exception:  # a bad round must not end the service: log it, try again next round
                    log.exception("file exchange round failed")
                self._stop.wait(poll)
        finally:
            lease.release()


def factory(ctx: Context, settings: Settings) -> FileExchangeService | None:
    """The file exchange service when ``files_root`` is set (and the CalAIM workflow is on)."""
    if settings.files_root is None or not settings.calaim_enabled:
        return None
    return FileExchangeService(ctx, settings)
