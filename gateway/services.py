"""Background services that run beside the HTTP server in the same process (``calaim-gateway serve``):
the MLLP listener, the HN file schedule, outbox delivery.

Each entry of ``SERVICE_FACTORIES`` names a factory ``module:function`` taking ``(ctx, settings)`` and
returning a ``BackgroundService`` or ``None`` when the settings leave that service off. The web app's
lifespan starts them after the store is ready and stops them (in reverse order) at shutdown.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from typing import Protocol

from gateway.fhir.context import Context
from gateway.settings import Settings

log = logging.getLogger("gateway.services")


class BackgroundService(Protocol):
    """A long-running part of the gateway started with the HTTP server."""

    name: str

    async def start(self) -> None:
        """Start serving (return once started; run in background tasks or threads)."""

    async def stop(self) -> None:
        """Stop serving and release resources; finish or hand back work in progress."""


ServiceFactory = Callable[[Context, Settings], BackgroundService | None]

SERVICE_FACTORIES: tuple[str, ...] = (
    "adapters.hl7v2.service:hl7v2_service",
    "adapters.files.service:factory",
    "gateway.outbox_service:retention_service",
)
"""``module:function`` factories, in start order."""


def enabled_services(ctx: Context, settings: Settings) -> list[BackgroundService]:
    """The services the settings turn on."""
    services: list[BackgroundService] = []
    for spec in SERVICE_FACTORIES:
        module_name, _, function = spec.partition(":")
        factory: ServiceFactory = getattr(importlib.import_module(module_name), function)
        service = factory(ctx, settings)
        if service is not None:
            services.append(service)
    return services


async def start_all(services: list[BackgroundService]) -> None:
    """Start ``services`` in order."""
    for service in services:
        await service.start()
        log.info("started %s", service.name)


async def stop_all(services: list[BackgroundService]) -> None:
    """Stop ``services`` in reverse order; one failing to stop does not keep the others running."""
    for service in reversed(services):
        try:
            await service.stop()
        except Exception:
            log.exception("stopping %s failed", service.name)
        else:
            log.info("stopped %s", service.name)
