"""Extended operations (https://hl7.org/fhir/R4/operations.html): a registry keyed by name.

``$validate`` is registered here; later modules (the CalAIM workflow) register theirs the same way,
and the CapabilityStatement lists whatever is registered.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from gateway import jsonutil
from gateway.errors import BadRequest, MethodNotAllowed, NotFound
from gateway.fhir.context import Context
from gateway.fhir.request import FhirRequest, FhirResponse
from gateway.fhir.validate_op import validate_operation
from gateway.store.repository import current_version
from gateway.types import JSONObject

OperationHandler = Callable[[Context, FhirRequest, dict[str, str]], FhirResponse]


@dataclass(frozen=True, slots=True)
class Operation:
    """One operation: where it may be invoked and the function that performs it."""

    name: str
    handler: OperationHandler
    definition: str
    """Canonical URL of its OperationDefinition."""
    system: bool = False
    types: tuple[str, ...] = ()
    """Resource types it applies to (empty: all served types)."""
    type_level: bool = False
    instance_level: bool = False
    methods: tuple[str, ...] = ("POST",)
    documentation: str = ""


class OperationRegistry:
    """Operations by name."""

    def __init__(self) -> None:
        self._by_name: dict[str, Operation] = {}

    def register(self, operation: Operation) -> None:
        self._by_name[operation.name] = operation

    def all(self) -> list[Operation]:
        return sorted(self._by_name.values(), key=lambda op: op.name)

    def resolve(self, request: FhirRequest, params: dict[str, str]) -> Operation:
        """The operation a request invokes at its level; 404 unknown, 405 wrong method."""
        operation = self._by_name.get(params["op"])
        level_ok = operation is not None and (
            ("id" in params and operation.instance_level)
            or ("type" in params and "id" not in params and operation.type_level)
            or ("type" not in params and operation.system)
        )
        if (
            operation is None
            or not level_ok
            or ("type" in params and operation.types and params["type"] not in operation.types)
        ):
            raise NotFound(f"Unknown operation ${params['op'][:64]} at this level")
        if request.method not in operation.methods:
            raise MethodNotAllowed(f"${operation.name} accepts {', '.join(operation.methods)}")
        return operation


def operation_body(ctx: Context, request: FhirRequest, *, missing: str) -> JSONObject:
    """The JSON object an operation was sent: the parsed resource of a Bundle entry, or the HTTP body
    (bounded depth); ``missing`` is the 400 message when there is none."""
    if request.resource is not None:
        return request.resource
    if request.body:
        return jsonutil.loads_resource(request.body, max_depth=ctx.settings.max_json_depth)
    raise BadRequest(missing)


def invoke(ctx: Context, request: FhirRequest, params: dict[str, str]) -> FhirResponse:
    """Route an ``$operation`` request to its registered handler."""
    operation = ctx.operations.resolve(request, params)
    return operation.handler(ctx, request, params)


def validate(ctx: Context, request: FhirRequest, params: dict[str, str]) -> FhirResponse:
    """$validate: https://hl7.org/fhir/R4/resource-operation-validate.html (the outcome is always 200)."""
    res_type = params["type"]
    query = dict(request.query)
    if request.method == "GET":
        if "id" not in params:
            raise BadRequest("GET $validate needs an instance: [type]/[id]/$validate")
        with ctx.reading() as conn:
            stored = current_version(conn, res_type, params["id"])
        if stored is None or stored.body is None:
            raise NotFound(f"{res_type}/{params['id']} is not known")
        body = jsonutil.loads_resource(stored.body, max_depth=ctx.settings.max_json_depth)
    else:
        body = operation_body(ctx, request, missing="$validate needs a resource or Parameters body")
    outcome = validate_operation(
        body, resource_type=res_type, mode=query.get("mode"), profile=query.get("profile"), resource_id=params.get("id")
    )
    return FhirResponse(200, jsonutil.dumps(outcome))


def default_operations() -> OperationRegistry:
    """The registry with the core's own operations."""
    registry = OperationRegistry()
    registry.register(
        Operation(
            name="validate",
            handler=validate,
            definition="http://hl7.org/fhir/OperationDefinition/Resource-validate",
            type_level=True,
            instance_level=True,
            methods=("GET", "POST"),
            documentation="Validate a resource against the R4 base definitions (and a profile, when given).",
        )
    )
    return registry
