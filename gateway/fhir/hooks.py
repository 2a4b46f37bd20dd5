"""Write hooks: business rules that run inside the transaction of a FHIR write.

The CalAIM workflow (a referral creates its Task, a decision writes an outbox event, ...) must commit
or roll back together with the write that triggers it (DESIGN.md choice 4), whichever channel the
write came from: REST, a transaction entry, an HL7 v2 message or a file row. So the core calls the
hooks registered for a resource type around every store write:

- ``before(ctx, event)`` runs before the write; it may change ``event.resource``, refuse the write by
  raising a ``FhirError``, or answer a create with an existing resource (returning it: the create
  becomes a 200 with that resource, as a conditional create would).
- ``after(ctx, event)`` runs after the write, with ``event.stored`` set; it may write more resources
  through ``gateway.fhir.core.dispatch(ctx, ...)`` (``ctx`` is bound to the same transaction) and
  outbox events through ``ctx.tx.conn``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from gateway.store.repository import StoredResource
from gateway.types import JSONObject

if TYPE_CHECKING:
    from gateway.fhir.context import Context


@dataclass
class WriteEvent:
    """One write about to happen (``stored`` is None) or done (``stored`` is the new version)."""

    interaction: str
    """create, update, patch or delete."""
    resource_type: str
    resource: JSONObject | None
    """The content being written (None for a delete)."""
    previous: StoredResource | None
    stored: StoredResource | None = None


class WriteHook(Protocol):
    """Business rules around the writes of one resource type."""

    def before(self, ctx: Context, event: WriteEvent) -> StoredResource | None: ...

    def after(self, ctx: Context, event: WriteEvent) -> None: ...


class HookRegistry:
    """Hooks by resource type, run in registration order."""

    def __init__(self) -> None:
        self._by_type: dict[str, list[WriteHook]] = {}

    def register(self, resource_type: str, hook: WriteHook) -> None:
        self._by_type.setdefault(resource_type, []).append(hook)

    def for_type(self, resource_type: str) -> list[WriteHook]:
        return self._by_type.get(resource_type, [])
