"""The HL7 v2 background service of ``calaim-gateway serve`` and ``calaim-gateway mllp`` (docs/hl7v2.md
"Running it").

- The MLLP listener runs in exactly one process, whatever the number of processes or instances: each
  process asks for the lease ``mllp-listener`` (gateway/store/leases.py); the holder binds the port and
  renews the lease, the others ask again every few seconds and one of them takes over (binds) when the
  holder dies. With ``serve --workers N`` every worker process contends, so one listens.
- The RRI sender runs in every process that has ``hl7v2_county_endpoint``: the outbox's claim with a lease
  already makes N senders safe (no event is delivered by two at once; see gateway/store/outbox.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading

from adapters.hl7v2.config import mapping_config
from adapters.hl7v2.outbound import RriSender
from adapters.hl7v2.processor import InboundProcessor
from adapters.hl7v2.server import MllpServer
from gateway.calaim.policy import Policy
from gateway.fhir.context import Context
from gateway.services import BackgroundService
from gateway.settings import Settings
from gateway.store.leases import Lease

log = logging.getLogger("adapters.hl7v2")

LEASE_NAME = "mllp-listener"
LEASE_TTL_SECONDS = 15.0
RENEW_EVERY_SECONDS = 5.0
IDLE_SLEEP_SECONDS = 1.0


def hl7v2_service(ctx: Context, settings: Settings) -> BackgroundService | None:
    """The service, or None when neither ``mllp_port`` nor ``hl7v2_county_endpoint`` is set."""
    if not settings.mllp_port and not settings.hl7v2_county_endpoint:
        return None
    return Hl7v2Service(ctx, settings)


class Hl7v2Service:
    """Listener under a lease + RRI sender thread (module docstring)."""

    name = "hl7v2"

    def __init__(self, ctx: Context, settings: Settings) -> None:
        self.ctx = ctx
        self.settings = settings
        self.policy = Policy.load(settings.calaim_plan_dir)
        self.config = mapping_config(settings, self.policy)
        self.processor = InboundProcessor(ctx, settings, self.policy, self.config)
        self.server: MllpServer | None = None
        self.listening = asyncio.Event()
        self._stop = threading.Event()
        self._lease_task: asyncio.Task[None] | None = None
        self._sender_thread: threading.Thread | None = None
        self.sender: RriSender | None = None

    async def start(self) -> None:
        """Start contending for the listener lease and start the sender thread."""
        if self.settings.mllp_port:
            self._lease_task = asyncio.create_task(self._hold_listener())
        if self.settings.hl7v2_county_endpoint:
            self.sender = RriSender(self.ctx, self.settings, self.policy, self.config)
            self._sender_thread = threading.Thread(target=self._send_forever, name="hl7v2-rri", daemon=True)
            self._sender_thread.start()

    async def stop(self) -> None:
        """Stop listening, release the lease, stop the sender (an RRI in flight finishes or times out)."""
        self._stop.set()
        if self._lease_task is not None:
            self._lease_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._lease_task
        if self._sender_thread is not None:
            await asyncio.to_thread(self._sender_thread.join, self.settings.hl7v2_ack_timeout_s + 5)
        if self.sender is not None:
            self.sender.client.close()

    async def _hold_listener(self) -> None:
        lease = Lease(self.ctx.repo.engine, LEASE_NAME, ttl_seconds=LEASE_TTL_SECONDS)
        try:
            while True:
                if self.server is None:
                    held = await asyncio.to_thread(lease.acquire)
                elif self.ctx.repo.sqlite:  # a write: between two groups, never in their way (``MllpServer``)
                    held = await self.server.between_groups(lease.renew)
                else:  # PostgreSQL: the session of an advisory lock, checked (``gateway.store.leases``)
                    held = await asyncio.to_thread(lease.renew)
                if held and self.server is None:
                    await self._listen()
                elif not held and self.server is not None:
                    log.warning("hl7v2: listener lease lost; stopping the MLLP listener")
                    await self._unlisten()
                await asyncio.sleep(RENEW_EVERY_SECONDS if self.server else RENEW_EVERY_SECONDS / 2)
        finally:
            await self._unlisten()
            await asyncio.to_thread(lease.release)

    async def _listen(self) -> None:
        server = MllpServer(
            self.processor,
            max_message_bytes=self.settings.mllp_max_message_bytes,
            max_connections=self.settings.mllp_max_connections,
            idle_timeout_s=self.settings.mllp_idle_timeout_s,
        )
        await server.start(self.settings.mllp_host or self.settings.host, self.settings.mllp_port)
        self.server = server
        self.listening.set()

    async def _unlisten(self) -> None:
        if self.server is not None:
            server, self.server = self.server, None
            self.listening.clear()
            await server.stop()

    def _send_forever(self) -> None:
        assert self.sender is not None
        workers = self.sender.workers()
        while not self._stop.is_set():
            delivered = 0
            for worker in workers:
                try:
                    delivered += worker.run_once()
                except Exception as exc:  # database down: try again after the idle sleep
                    log.warning("hl7v2: RRI sender round failed (%s)", type(exc).__name__)
            if delivered == 0:
                self._stop.wait(IDLE_SLEEP_SECONDS)
