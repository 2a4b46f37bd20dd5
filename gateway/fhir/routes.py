"""The one routing table of the FHIR REST API (https://hl7.org/fhir/R4/http.html#summary)."""

from __future__ import annotations

from gateway.fhir import bundles, capability, history, interactions, operations, searching
from gateway.fhir.router import Route, RouteTable

ROUTES: list[Route] = [
    Route("capabilities", ("GET",), "metadata", capability.capabilities, "CapabilityStatement of this server"),
    Route(
        "batch-transaction",
        ("POST",),
        "",
        bundles.batch_or_transaction,
        "Process a batch or transaction Bundle",
    ),
    Route("search-system", ("GET",), "", searching.search_system, "Search across resource types"),
    Route("search-system-post", ("POST",), "_search", searching.search_system, "Search across types (form body)"),
    Route("history-system", ("GET",), "_history", history.system_history, "History of all resources"),
    Route("operation-system", ("GET", "POST"), "{op}", operations.invoke, "Invoke a system-level operation"),
    Route("search-type", ("GET",), "{type}", searching.search_type, "Search resources of a type"),
    Route("create", ("POST",), "{type}", interactions.create, "Create (If-None-Exist: conditional create)"),
    Route("conditional-update", ("PUT",), "{type}", interactions.conditional_update, "Conditional update"),
    Route(
        "conditional-patch",
        ("PATCH",),
        "{type}",
        interactions.conditional_patch,
        "Conditional patch (JSON Patch)",
    ),
    Route("conditional-delete", ("DELETE",), "{type}", interactions.conditional_delete, "Conditional delete"),
    Route("search-type-post", ("POST",), "{type}/_search", searching.search_type, "Search a type (form body)"),
    Route("history-type", ("GET",), "{type}/_history", history.type_history, "History of a resource type"),
    Route("operation-type", ("GET", "POST"), "{type}/{op}", operations.invoke, "Invoke a type-level operation"),
    Route("read", ("GET",), "{type}/{id}", interactions.read, "Read the current version"),
    Route("update", ("PUT",), "{type}/{id}", interactions.update, "Update (or create with a client id)"),
    Route("patch", ("PATCH",), "{type}/{id}", interactions.patch, "Patch with JSON Patch"),
    Route("delete", ("DELETE",), "{type}/{id}", interactions.delete, "Delete"),
    Route(
        "history-instance",
        ("GET",),
        "{type}/{id}/_history",
        history.instance_history,
        "History of a resource",
    ),
    Route(
        "operation-instance",
        ("GET", "POST"),
        "{type}/{id}/{op}",
        operations.invoke,
        "Invoke an instance operation",
    ),
    Route("vread", ("GET",), "{type}/{id}/_history/{vid}", interactions.vread, "Read a version"),
]

ROUTE_TABLE = RouteTable(ROUTES)
