"""Type aliases shared across the gateway."""

from __future__ import annotations

from typing import Any, TypeAlias

JSON: TypeAlias = Any
"""Any JSON value as produced by ``orjson.loads``."""

JSONObject: TypeAlias = dict[str, Any]
"""A JSON object, e.g. a FHIR resource."""

QueryParams: TypeAlias = list[tuple[str, str]]
"""URL query parameters in order, repeated names kept (FHIR AND semantics depend on repetition)."""
