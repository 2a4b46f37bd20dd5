"""JSON encoding and decoding (orjson), with the input bounds the gateway enforces."""

from __future__ import annotations

from typing import Any

import orjson

from gateway.errors import BadRequest
from gateway.types import JSONObject


def dumps(value: Any) -> bytes:
    """Serialize compactly to UTF-8 bytes."""
    return orjson.dumps(value)


def loads_any(body: bytes, *, max_depth: int) -> Any:
    """Parse any JSON document (e.g. a JSON Patch array) with bounded depth; 400 when malformed."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"Malformed JSON body: {exc}") from None
    check_depth(value, max_depth)
    return value


def loads_resource(body: bytes, *, max_depth: int) -> JSONObject:
    """Parse a request body that must hold one JSON object; bounded nesting depth.

    Raises ``BadRequest`` (400, OperationOutcome) for malformed JSON, non-objects, or nesting deeper
    than ``max_depth`` (https://hl7.org/fhir/R4/http.html#general: malformed content is a 400).
    """
    value = loads_any(body, max_depth=max_depth)
    if not isinstance(value, dict):
        raise BadRequest("The request body must be a JSON object (a FHIR resource)")
    return value


def check_depth(value: Any, max_depth: int) -> None:
    """Refuse JSON nested deeper than ``max_depth`` (iterative, so deep input cannot blow the stack)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            raise BadRequest(f"JSON nesting deeper than {max_depth} levels")
        if isinstance(node, dict):
            stack.extend((child, depth + 1) for child in node.values() if isinstance(child, dict | list))
        elif isinstance(node, list):
            stack.extend((child, depth + 1) for child in node if isinstance(child, dict | list))
