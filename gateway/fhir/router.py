"""The routing table of the FHIR REST API (https://hl7.org/fhir/R4/http.html#summary).

One table maps (method, path pattern) to an interaction; the web layer registers an HTTP route per
entry (so the OpenAPI document lists them), and batch/transaction entries are dispatched through the
same table. Patterns are segment lists; ``{type}``, ``{id}``, ``{vid}`` and ``{op}`` are variables.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import repeat
from typing import TYPE_CHECKING

from gateway.errors import MethodNotAllowed, NotFound
from gateway.fhir.request import FhirRequest, FhirResponse
from gateway.fhir.resource_types import SERVED_TYPE_SET

if TYPE_CHECKING:
    from gateway.fhir.context import Context

Handler = Callable[["Context", FhirRequest, dict[str, str]], FhirResponse]


@dataclass(frozen=True, slots=True)
class Route:
    """One interaction: ``methods`` on ``pattern`` handled by ``handler``."""

    name: str
    methods: tuple[str, ...]
    pattern: str
    handler: Handler
    summary: str

    @property
    def segments(self) -> tuple[str, ...]:
        return _segments(self.pattern)


def _segments(pattern: str) -> tuple[str, ...]:
    return tuple(pattern.split("/")) if pattern else ()


def _segment_matches(pattern: str, segment: str, params: dict[str, str]) -> bool:
    if pattern.startswith("{") and pattern.endswith("}"):
        name = pattern[1:-1]
        if name == "op":
            if not segment.startswith("$") or len(segment) < 2:
                return False
            params["op"] = segment[1:]
            return True
        if segment.startswith(("$", "_")) and name in ("type", "id"):
            return False
        params[name] = segment
        return True
    return pattern == segment


class RouteTable:
    """Matches request paths to routes; unknown paths are 404, known paths with other methods 405."""

    def __init__(self, routes: list[Route]) -> None:
        self.routes = routes
        self._by_length: dict[int, list[tuple[Route, tuple[str, ...]]]] = {}
        for route in routes:
            segments = _segments(route.pattern)
            self._by_length.setdefault(len(segments), []).append((route, segments))
        self._literals = frozenset(p for r in routes for p in _segments(r.pattern) if not p.startswith("{"))
        self._found: dict[tuple[str, tuple[str, ...]], tuple[Route, tuple[str, ...]]] = {}

    def _shape(self, segments: tuple[str, ...]) -> tuple[str, ...]:
        """What decides which pattern a path matches: each segment as a literal of the table, or its kind
        (an ``$operation``, a ``_name``, anything else); a bare ``$`` matches no variable."""
        return tuple(
            s if s in self._literals else "$" if s.startswith("$") and len(s) > 1 else "_" if s[0] in "_$" else "*"
            for s in segments
        )

    def match(self, request: FhirRequest) -> tuple[Route, dict[str, str]]:
        """The route and path variables for ``request`` (raises NotFound / MethodNotAllowed).

        The route found for a (method, shape) is remembered, so a path is matched once per shape; the
        table is scanned again only for a type the server does not serve (another route may take it)."""
        segments = tuple(s for s in request.path.split("/") if s) if request.path else ()
        key = (request.method, self._shape(segments))
        found = self._found.get(key)
        if found is not None:
            route, pattern = found
            params: dict[str, str] = {}
            if all(map(_segment_matches, pattern, segments, repeat(params))) and (
                params.get("type", "Patient") in SERVED_TYPE_SET
            ):
                return route, params
        route, params, skipped = self._scan(request, segments)
        if not skipped:  # the first route of the shape: the same for every path of this shape
            self._found[key] = (route, _segments(route.pattern))
        return route, params

    def _scan(self, request: FhirRequest, segments: tuple[str, ...]) -> tuple[Route, dict[str, str], bool]:
        """The first route matching ``request``, its variables, and whether a route of an unserved type
        was passed over on the way."""
        allowed: set[str] = set()
        unknown_type: str | None = None
        for route, pattern in self._by_length.get(len(segments), ()):
            params: dict[str, str] = {}
            if all(map(_segment_matches, pattern, segments, repeat(params))):
                if "type" in params and params["type"] not in SERVED_TYPE_SET:
                    unknown_type = params["type"]
                    continue
                if request.method in route.methods:
                    return route, params, unknown_type is not None
                allowed.update(route.methods)
        if allowed:
            raise MethodNotAllowed(
                f"{request.method} is not allowed on /{request.path[:200]}",
                headers={"Allow": ", ".join(sorted(allowed))},
            )
        if unknown_type is not None:
            raise NotFound(f"Unknown or unsupported resource type: {unknown_type[:64]}")
        raise NotFound(f"No FHIR interaction at /{request.path[:200]}")
