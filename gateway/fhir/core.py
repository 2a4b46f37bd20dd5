"""The FHIR core facade: build the context once, dispatch plain requests through the route table.

Used by the web layer for every HTTP request, by ``bundles`` for each entry, and by the adapters
(HL7 v2, files) that need FHIR interactions without HTTP.
"""

from __future__ import annotations

from gateway.fhir import guard
from gateway.fhir.audit import AuditTrail
from gateway.fhir.context import Context
from gateway.fhir.operations import OperationRegistry, default_operations
from gateway.fhir.request import FhirRequest, FhirResponse
from gateway.fhir.routes import ROUTE_TABLE
from gateway.search.engine import SearchEngine
from gateway.search.extract import extract_values
from gateway.search.registry import Registry, default_registry
from gateway.settings import Settings
from gateway.store.database import EngineOptions, make_engine
from gateway.store.repository import Repository


def dispatch(ctx: Context, request: FhirRequest) -> FhirResponse:
    """Run ``request`` through the routing table in ``ctx`` (raises FhirError on failure)."""
    route, params = ROUTE_TABLE.match(request)
    return guard.run(ctx, route, request, params)


def engine_options(settings: Settings) -> EngineOptions:
    """The store's pool and timeout options from the settings."""
    return EngineOptions(
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout_s=settings.db_pool_timeout_s,
        lock_timeout_ms=settings.db_lock_timeout_ms,
        statement_timeout_ms=settings.db_statement_timeout_ms,
        sqlite_synchronous=settings.sqlite_synchronous,
        sqlite_wal_autocheckpoint=settings.sqlite_wal_autocheckpoint,
    )


def build_context(
    settings: Settings, *, registry: Registry | None = None, operations: OperationRegistry | None = None
) -> Context:
    """Connect to the store named by ``settings.database_url`` and wire the core together; with
    ``settings.calaim_enabled``, install the CalAIM workflow's hooks and operations (``gateway.calaim.setup``)."""
    registry = registry or default_registry()
    engine = make_engine(settings.database_url, engine_options(settings))
    repo = Repository(
        engine,
        indexer=lambda resource: extract_values(resource, registry),
        lock_timeout_s=settings.db_lock_timeout_ms / 1000,
        group_commit=settings.sqlite_group_commit,
    )
    search = SearchEngine(
        registry,
        default_count=settings.default_page_size,
        max_count=settings.max_page_size,
        max_includes=settings.max_include_results,
    )
    ctx = Context(repo, search, registry, settings, operations or default_operations())
    ctx.audit = AuditTrail.from_settings(repo, settings)
    if settings.calaim_enabled:
        # The CalAIM layer builds on the core (it dispatches through it), so it is imported here, not above.
        from gateway.calaim.setup import install

        install(ctx, plan_dir=settings.calaim_plan_dir)
    return ctx
