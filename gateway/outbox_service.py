"""The outbox retention service of ``calaim-gateway serve`` (docs/outbox.md "Retention").

Every process runs it (``SERVICE_FACTORIES`` in gateway/services.py); every ``CALAIM_OUTBOX_PURGE_INTERVAL_S``
(with jitter, so processes started together do not contend in step) it asks for the lease
``outbox-retention`` and, when it gets it, purges delivered events older than
``CALAIM_OUTBOX_RETENTION_DAYS`` (gateway/store/outbox_retention.py). ``CALAIM_OUTBOX_RETENTION_DAYS=0``
keeps delivered events forever and turns the service off.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading

from gateway.fhir.context import Context
from gateway.services import BackgroundService
from gateway.settings import Settings
from gateway.store.outbox_retention import RetentionJob

log = logging.getLogger("gateway.outbox")

FIRST_RUN_AFTER_SECONDS = 60.0
"""Let a starting process serve first; the purge is never urgent."""
_jitter = random.SystemRandom()


def retention_service(ctx: Context, settings: Settings) -> BackgroundService | None:
    """The service, or None when ``outbox_retention_days`` is 0 (keep everything)."""
    if not settings.outbox_retention_days:
        return None
    return RetentionService(ctx, settings)


class RetentionService:
    """A daemon thread that runs ``RetentionJob`` every interval until stopped."""

    name = "outbox-retention"

    def __init__(self, ctx: Context, settings: Settings, *, first_run_after: float = FIRST_RUN_AFTER_SECONDS) -> None:
        self.job = RetentionJob(ctx.repo.engine, retention_days=settings.outbox_retention_days)
        self.interval = settings.outbox_purge_interval_s
        self.first_run_after = first_run_after
        self.runs = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    async def start(self) -> None:
        """Start the purge thread."""
        self._thread = threading.Thread(target=self._run, name="outbox-retention", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        """Stop after the batch in progress (the lease is released by the job)."""
        self._stop.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 30.0)

    def _run(self) -> None:
        wait = self.first_run_after
        while not self._stop.wait(wait):
            try:
                self.job.run_once(keep_going=lambda: not self._stop.is_set())
            except Exception as exc:  # the database is down or busy: try again next interval
                log.warning("outbox retention: purge failed (%s); retrying next interval", type(exc).__name__)
            self.runs += 1
            wait = self.interval * _jitter.uniform(0.9, 1.1)
