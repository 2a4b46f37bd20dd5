"""The FHIR route table (gateway/fhir/router.py): the route remembered per path shape is the one a scan
of the whole table finds, for every pattern and for the paths around them."""

from __future__ import annotations

import itertools

import pytest

from gateway.errors import FhirError
from gateway.fhir.request import FhirRequest
from gateway.fhir.router import RouteTable
from gateway.fhir.routes import ROUTE_TABLE

VALUES = ("Patient", "Observation", "Foo", "123", "_history", "_search", "$validate", "$", "metadata", "3")
METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD")


def _outcome(table: RouteTable, method: str, path: str, *, scan: bool) -> object:
    request = FhirRequest(method=method, path=path)
    try:
        if scan:
            route, params, _ = table._scan(request, tuple(s for s in path.split("/") if s))
        else:
            route, params = table.match(request)
    except FhirError as error:
        return (type(error).__name__, error.status, tuple(sorted(error.headers.items())))
    return (route.name, tuple(sorted(params.items())))


def _paths() -> list[str]:
    paths = [""]
    for length in (1, 2, 3, 4):
        paths += ["/".join(p) for p in itertools.product(VALUES, repeat=length) if len(set(p)) > length - 2]
    return paths


@pytest.mark.parametrize("method", METHODS)
def test_remembered_routes_equal_a_full_scan(method: str) -> None:
    table = RouteTable(ROUTE_TABLE.routes)
    for path in _paths():
        expected = _outcome(table, method, path, scan=True)
        assert _outcome(table, method, path, scan=False) == expected, path
        assert _outcome(table, method, path, scan=False) == expected, path  # from the memo
