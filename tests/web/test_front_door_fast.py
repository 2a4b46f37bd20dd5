"""The FHIR front door's shortcuts (docs/performance.md, issue 2) change nothing a client sees: the read
route found without the table is the table's own answer, FHIR requests skip FastAPI's middleware but
still answer unexpected errors with a 500 OperationOutcome (and raise them on to the server), other paths
still go through FastAPI, and a remembered Accept header is never a way around a 406."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from gateway.errors import FhirError
from gateway.fhir.context import Context
from gateway.fhir.operations import Operation
from gateway.fhir.request import FhirRequest, FhirResponse
from gateway.fhir.routes import ROUTE_TABLE
from gateway.settings import Settings
from gateway.web import fhir_asgi
from gateway.web.app import GatewayApp, create_app
from tests.conftest import FHIR_JSON, patient, post

SEGMENTS = ["Patient", "Condition", "Nope", "metadata", "_history", "_search", "$validate", "$", "_x", "x", "1-2.3", ""]


def _table(method: str, path: str) -> tuple[str, dict[str, str]] | str:
    try:
        route, params = ROUTE_TABLE.match(FhirRequest(method=method, path=path))
    except FhirError as error:
        return f"{error.status}"
    return route.name, params


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE"])
def test_read_shortcut_agrees_with_the_table(method: str) -> None:
    paths = ["/".join(p) for n in (1, 2, 3) for p in itertools.product(SEGMENTS, repeat=n)]
    shortcuts = 0
    for path in paths:
        found = fhir_asgi._read_route(method, path)
        if found is None:
            continue
        shortcuts += 1
        route, params = found
        assert _table(method, path) == (route.name, params), path
    assert (shortcuts > 0) == (method == "GET")


def test_fhir_requests_skip_fastapi_but_other_paths_do_not(client: TestClient) -> None:
    app = client.app
    assert isinstance(app, GatewayApp) and app.front_door is not None
    created = post(client, "Patient", patient())
    assert created.status_code == 201
    read = client.get(f"/fhir/Patient/{created.json()['id']}")
    assert read.status_code == 200 and read.headers["content-type"].startswith(FHIR_JSON)
    assert read.headers["etag"] == 'W/"1"' and read.headers["last-modified"].endswith(" GMT")
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/openapi.json").status_code == 200
    assert client.get("/fhirx").status_code == 404  # not below /fhir: FastAPI's own 404
    assert client.get("/fhir/.well-known/smart-configuration").status_code in (200, 404)  # FastAPI's route


@pytest.fixture
def raising_client(settings: Settings, ctx: Context) -> Iterator[TestClient]:
    with TestClient(create_app(settings, context=ctx), raise_server_exceptions=True) as test_client:
        yield test_client


def _explode(_ctx: Context, _request: FhirRequest, _params: dict[str, str]) -> FhirResponse:
    raise RuntimeError("secret member data")


def test_unexpected_errors_are_raised_on_to_the_server(raising_client: TestClient, ctx: Context) -> None:
    ctx.operations.register(Operation(name="explode", handler=_explode, definition="urn:test", system=True))
    with pytest.raises(RuntimeError, match="secret member data"):
        raising_client.post("/fhir/$explode", content=b"{}", headers={"Content-Type": FHIR_JSON})


def test_unexpected_errors_answer_500(client: TestClient, ctx: Context) -> None:
    ctx.operations.register(Operation(name="explode", handler=_explode, definition="urn:test", system=True))
    response = client.post("/fhir/$explode", content=b"{}", headers={"Content-Type": FHIR_JSON})
    assert response.status_code == 500
    assert "error id" in response.json()["issue"][0]["diagnostics"]
    assert "secret" not in response.text


def test_remembered_accept_headers_never_skip_a_406(client: TestClient) -> None:
    for _ in range(3):
        assert client.get("/fhir/Patient/x", headers={"Accept": "application/fhir+json"}).status_code == 404
        assert client.get("/fhir/Patient/x", headers={"Accept": "application/xml"}).status_code == 406
        assert client.get("/fhir/Patient/x?_format=xml", headers={"Accept": "application/fhir+json"}).status_code == 406
