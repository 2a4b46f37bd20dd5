"""The execution context of interactions: the store, the search engine, limits, and the ambient
transaction when an interaction runs as an entry of a transaction Bundle.

``writing()`` gives the ambient transaction if there is one (the Bundle commits or rolls back as a
whole), or a fresh one that commits when the block ends. ``reading()`` reads through the ambient
transaction (so a transaction's GET entries see its own writes) or a fresh snapshot.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from sqlalchemy import Connection

from gateway.auth.access import Access, OrganizationRoles
from gateway.auth.grant import Grant
from gateway.errors import Conflict
from gateway.fhir.hooks import HookRegistry, WriteEvent
from gateway.search.engine import SearchEngine
from gateway.search.registry import Registry
from gateway.search.sql import Narrowing
from gateway.settings import Settings
from gateway.store.repository import Repository, StoredResource, WriteConflict, WriteTransaction
from gateway.types import JSONObject

if TYPE_CHECKING:
    from gateway.fhir.audit import AuditTrail
    from gateway.fhir.model_pool import Judgement
    from gateway.fhir.operations import OperationRegistry

T = TypeVar("T")

WRITE_ATTEMPTS = 4


@dataclass
class Context:
    """What an interaction needs; cheap to copy for a transaction (``in_transaction``)."""

    repo: Repository
    search: SearchEngine
    registry: Registry
    settings: Settings
    operations: OperationRegistry
    tx: WriteTransaction | None = None
    hooks: HookRegistry = field(default_factory=HookRegistry)
    organization_roles: OrganizationRoles | None = None
    """Roles of an Organization id (plan, health-network, ...), installed by the CalAIM layer."""
    audit: AuditTrail | None = None
    """Where the guard records every access of a caller (``gateway.fhir.audit``)."""
    access_cache: dict[Grant, Access] = field(default_factory=dict)
    """``Access`` per grant, shared by the copies of this context (``gateway.fhir.guard.access_for``)."""
    security: Callable[[str], JSONObject] | None = None
    """``CapabilityStatement.rest.security`` for a FHIR base URL, installed when tokens are enforced."""
    access: Access | None = None
    """The caller's access for this one interaction (``gateway.fhir.guard``); ``None``: unrestricted.
    Hooks and workflow steps run on ``in_transaction`` copies, which act for the gateway itself."""

    def narrowing(self, resource_types: Sequence[str], permission: str) -> Narrowing | None:
        """The caller's visibility condition over ``resource_types`` (``None``: sees every row)."""
        if self.access is None:
            return None
        return self.access.narrowing(resource_types, permission, dialect=self.repo.engine.dialect.name)

    @contextmanager
    def writing(self) -> Iterator[WriteTransaction]:
        """The ambient write transaction, or a new one committed at the end of the block."""
        if self.tx is not None:
            yield self.tx
            return
        with self.repo.write() as tx:
            yield tx

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """A connection that sees everything this context has written so far."""
        if self.tx is not None:
            self.tx.flush()
            yield self.tx.conn
            return
        with self.repo.connect() as conn:
            yield conn

    def in_transaction(self, tx: WriteTransaction) -> Context:
        """A copy of this context whose interactions all run in ``tx``."""
        inner = self._copy()
        inner.tx, inner.access = tx, None
        return inner

    def with_access(self, access: Access | None) -> Context:
        """A copy of this context acting for the caller ``access`` describes (a shallow copy: the store,
        hooks and caches stay shared; ``dataclasses.replace`` would cost more than a point read)."""
        scoped = self._copy()
        scoped.access = access
        return scoped

    def _copy(self) -> Context:
        """A shallow copy (``copy.copy`` goes through ``__reduce_ex__``, several times slower)."""
        twin = object.__new__(Context)
        twin.__dict__ = self.__dict__.copy()  # a third cheaper than update(): every guarded request copies
        return twin

    # --- store writes with their hooks -------------------------------------------------------

    def store_create(
        self,
        tx: WriteTransaction,
        resource: JSONObject,
        *,
        res_id: str | None,
        method: str,
        judgement: Judgement | None = None,
    ) -> tuple[StoredResource, bool]:
        """Create through the hooks; ``(stored, True)``, or ``(existing, False)`` when a hook answered
        with an existing resource instead. ``judgement``: index rows computed elsewhere, used if the hooks
        left the resource as it was judged (``gateway.fhir.model_pool``)."""
        event = WriteEvent("create", resource["resourceType"], resource, None)
        hooks = self.hooks.for_type(event.resource_type)
        inner = self.in_transaction(tx)
        for hook in hooks:
            existing = hook.before(inner, event)
            if existing is not None:
                return existing, False
        index = judgement.rows_for(resource) if judgement is not None else None
        event.stored = tx.create(dict(resource), res_id=res_id, method=method, index=index)
        for hook in hooks:
            hook.after(inner, event)
        return event.stored, True

    def store_update(
        self, tx: WriteTransaction, resource: JSONObject, previous: StoredResource, *, method: str
    ) -> StoredResource:
        """Write the next version of ``previous`` through the hooks."""
        event = WriteEvent("patch" if method == "PATCH" else "update", previous.res_type, resource, previous)
        hooks = self.hooks.for_type(event.resource_type)
        inner = self.in_transaction(tx)
        for hook in hooks:
            hook.before(inner, event)
        event.stored = tx.update(dict(resource), previous, method=method)
        for hook in hooks:
            hook.after(inner, event)
        return event.stored

    def store_delete(self, tx: WriteTransaction, previous: StoredResource) -> StoredResource:
        """Delete ``previous`` through the hooks."""
        event = WriteEvent("delete", previous.res_type, None, previous)
        hooks = self.hooks.for_type(event.resource_type)
        inner = self.in_transaction(tx)
        for hook in hooks:
            hook.before(inner, event)
        event.stored = tx.delete(previous)
        for hook in hooks:
            hook.after(inner, event)
        return event.stored

    def run_write(self, unit: Callable[[], T]) -> T:
        """Run ``unit`` and run it again if it lost a uniqueness race (only outside a transaction;
        inside one, the Bundle as a whole is retried)."""
        if self.tx is not None:
            return unit()
        for _ in range(WRITE_ATTEMPTS - 1):
            try:
                return unit()
            except WriteConflict:
                continue
        try:
            return unit()
        except WriteConflict:
            raise Conflict("Concurrent writes kept conflicting; retry the request") from None
