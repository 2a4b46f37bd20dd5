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
    """Refuse JSON nested deeper than ``max_depth``: level by level (no recursion, so deep input cannot
    blow the stack; one comprehension per level, so a large Bundle costs a few ms, not tens)."""
    level = [value] if type(value) in _CONTAINERS else []
    depth = 1
    while level:
        if depth > max_depth:
            raise BadRequest(f"JSON nesting deeper than {max_depth} levels")
        level = [
            child
            for node in level
            for child in (node.values() if type(node) is dict else node)
            if type(child) in _CONTAINERS
        ]
        depth += 1


_CONTAINERS = (dict, list)
