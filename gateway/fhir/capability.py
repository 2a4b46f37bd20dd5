"""The CapabilityStatement, generated from what is really implemented: the routing table, the
search parameter registry and the operation registry (https://hl7.org/fhir/R4/capabilitystatement.html,
https://hl7.org/fhir/R4/http.html#capabilities)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from gateway import jsonutil
from gateway.fhir.context import Context
from gateway.fhir.profiles import default_profiles
from gateway.fhir.request import FhirRequest, FhirResponse
from gateway.fhir.resource_types import SERVED_TYPES

TYPE_INTERACTIONS = {
    "read": "read",
    "vread": "vread",
    "update": "update",
    "patch": "patch",
    "delete": "delete",
    "history-instance": "history-instance",
    "history-type": "history-type",
    "create": "create",
    "search-type": "search-type",
}
SYSTEM_INTERACTIONS = {
    "batch-transaction": ("transaction", "batch"),
    "search-system": ("search-system",),
    "history-system": ("history-system",),
}
RELEASE_DATE = "2026-11-23"


def software_version() -> str:
    """The installed version of the calaim-gateway distribution."""
    try:
        return version("calaim-gateway")
    except PackageNotFoundError:  # running from a source tree without installation
        return "0+unknown"


def capability_statement(ctx: Context, base_url: str) -> dict[str, Any]:
    """The CapabilityStatement of this server as a JSON object."""
    from gateway.fhir.routes import ROUTES  # routes import this module for the metadata route

    route_names = {route.name for route in ROUTES}
    type_codes = [code for name, code in TYPE_INTERACTIONS.items() if name in route_names]
    system_codes = [code for name, codes in SYSTEM_INTERACTIONS.items() if name in route_names for code in codes]
    operations = ctx.operations.all()
    profiles = default_profiles()
    resources = []
    for res_type in SERVED_TYPES:
        params = ctx.registry.for_type(res_type)
        references = sorted(p.code for p in params.values() if p.type == "reference")
        # The CalAIM profiles of the type, which writes claiming them and $validate?profile= check
        # (https://hl7.org/fhir/R4/capabilitystatement-definitions.html#CapabilityStatement.rest.resource.supportedProfile).
        supported = profiles.profiles_for(res_type)
        resources.append(
            {
                "type": res_type,
                "profile": f"http://hl7.org/fhir/StructureDefinition/{res_type}",
                **({"supportedProfile": supported} if supported else {}),
                "interaction": [{"code": code} for code in type_codes],
                "versioning": "versioned-update",
                "readHistory": True,
                "updateCreate": True,
                "conditionalCreate": True,
                "conditionalRead": "not-match",
                "conditionalUpdate": True,
                "conditionalDelete": "single",
                "referencePolicy": ["literal", "logical"],
                "searchInclude": ["*", *(f"{res_type}:{code}" for code in references)],
                "searchRevInclude": sorted(
                    f"{other}:{p.code}"
                    for other in SERVED_TYPES
                    for p in ctx.registry.for_type(other).values()
                    if p.type == "reference" and (not p.targets or res_type in p.targets)
                ),
                "searchParam": [
                    {
                        "name": p.code,
                        "definition": p.url,
                        "type": p.type,
                        "documentation": p.description[:200],
                    }
                    for p in sorted(params.values(), key=lambda p: p.code)
                    if p.type != "composite" and p.url
                ],
                "operation": [
                    {"name": op.name, "definition": op.definition}
                    for op in operations
                    if (op.type_level or op.instance_level) and (not op.types or res_type in op.types)
                ],
            }
        )
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": RELEASE_DATE,
        "publisher": "CalAIM gateway project",
        "kind": "instance",
        "software": {"name": "calaim-gateway", "version": software_version()},
        "implementation": {"description": "CalAIM ECM/CS FHIR gateway", "url": base_url},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "patchFormat": ["application/json-patch+json"],
        "rest": [
            {
                "mode": "server",
                "resource": resources,
                "interaction": [{"code": code} for code in system_codes],
                "searchParam": [
                    {
                        "name": "_type",
                        "type": "token",
                        "definition": "http://hl7.org/fhir/SearchParameter/type",
                    },
                    {
                        "name": "_id",
                        "type": "token",
                        "definition": "http://hl7.org/fhir/SearchParameter/Resource-id",
                    },
                    {
                        "name": "_lastUpdated",
                        "type": "date",
                        "definition": "http://hl7.org/fhir/SearchParameter/Resource-lastUpdated",
                    },
                ],
                "operation": [{"name": op.name, "definition": op.definition} for op in operations if op.system],
                **({"security": ctx.security(base_url)} if ctx.security is not None else {}),
            }
        ],
    }


def capabilities(ctx: Context, request: FhirRequest, params: dict[str, str]) -> FhirResponse:
    """capabilities: ``GET [base]/metadata`` (https://hl7.org/fhir/R4/http.html#capabilities)."""
    return FhirResponse(200, jsonutil.dumps(capability_statement(ctx, request.base_url)))
