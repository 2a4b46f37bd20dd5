"""Install the CalAIM workflow on a FHIR core context: its write hooks and its operations.

``gateway.fhir.core.build_context`` calls ``install`` when ``settings.calaim_enabled`` (the default), so
every channel (REST, transaction Bundles, HL7 v2 and file adapters) writes through the same rules. Call it
once per context: hooks registered twice would run twice.

Operations take their name, levels and resource types from the IG's OperationDefinitions
(https://hl7.org/fhir/R4/operationdefinition.html); one that does not affect state also accepts GET
(https://hl7.org/fhir/R4/operations.html#request).
"""

from __future__ import annotations

from pathlib import Path

from gateway.calaim.activity import ServiceDocumentationHook, ecm_activity
from gateway.calaim.closed_loop import ClosedLoopHook
from gateway.calaim.config import organization_types
from gateway.calaim.decide import DecideOperation
from gateway.calaim.policy import Policy
from gateway.calaim.referrals import ReferralHook
from gateway.calaim.submit import SubmitOperation
from gateway.fhir.context import Context
from gateway.fhir.operations import Operation, OperationHandler
from gateway.types import JSONObject


def install(ctx: Context, *, plan_dir: Path | None = None) -> Policy:
    """Register the CalAIM hooks and operations on ``ctx`` for the plan configured in ``plan_dir``."""
    policy = Policy.load(plan_dir)
    roles = {org_id: frozenset(organization_types(org)) for org_id, org in policy.organizations.items()}
    ctx.organization_roles = lambda org_id: roles.get(org_id, frozenset())
    ctx.hooks.register("ServiceRequest", ReferralHook(policy))
    ctx.hooks.register("Task", ClosedLoopHook(policy))
    documentation = ServiceDocumentationHook(policy)
    ctx.hooks.register("Procedure", documentation)
    ctx.hooks.register("Encounter", documentation)
    for url, definition in policy.ig.of_type("OperationDefinition").items():
        handler = _handlers(policy).get(str(definition["code"]))
        if handler is not None:
            ctx.operations.register(_operation(url, definition, handler))
    return policy


def _handlers(policy: Policy) -> dict[str, OperationHandler]:
    return {
        "decide": DecideOperation(policy),
        "submit": SubmitOperation(policy),
        "ecm-activity": lambda ctx, request, params: ecm_activity(ctx, request, policy=policy),
    }


def _operation(url: str, definition: JSONObject, handler: OperationHandler) -> Operation:
    return Operation(
        name=str(definition["code"]),
        handler=handler,
        definition=url,
        system=bool(definition.get("system")),
        types=tuple(definition.get("resource") or ()),
        type_level=bool(definition.get("type")),
        instance_level=bool(definition.get("instance")),
        methods=("POST",) if definition.get("affectsState") else ("GET", "POST"),
        documentation=str(definition.get("description", "")),
    )
