"""Shared fixtures: a real store per test, on SQLite and on PostgreSQL (a cluster started by the test
run, one fresh database per test), the ASGI app over HTTP (Starlette's TestClient, which drives the app
through httpx), and small helpers for FHIR requests.

Without PostgreSQL installed, the PostgreSQL half is skipped with a message saying so, unless
``CALAIM_TEST_REQUIRE_POSTGRES=1`` (set by ``.ci/run``), which turns the skip into a failure."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gateway.fhir.context import Context
from gateway.fhir.core import build_context
from gateway.settings import Settings
from gateway.store.database import make_engine
from gateway.web.app import create_app
from tests.support.postgres import PostgresCluster, find_pg_bin

FHIR_JSON = "application/fhir+json"


PG_REQUIRED = os.environ.get("CALAIM_TEST_REQUIRE_POSTGRES") == "1"


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[tuple[PostgresCluster, str] | None]:
    """The session's PostgreSQL cluster and the name of a template database holding the schema."""
    bin_dir = find_pg_bin()
    if bin_dir is None:
        yield None
        return
    cluster = PostgresCluster(bin_dir).start()
    try:
        template = cluster.create_database()
        make_engine(cluster.url(template)).dispose()
        yield cluster, template
    finally:
        cluster.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh store for the test: a SQLite file, or a new database on the test cluster."""
    yield from _fresh_database(request, tmp_path)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def module_database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A store shared by the tests of one module (for expensive fixtures such as server processes)."""
    yield from _fresh_database(request, tmp_path_factory.mktemp("db"))


def _fresh_database(request: pytest.FixtureRequest, directory: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{directory / 'gateway.db'}"
        return
    found: tuple[PostgresCluster, str] | None = request.getfixturevalue("pg_cluster")
    if found is None:
        if PG_REQUIRED:
            pytest.fail("CALAIM_TEST_REQUIRE_POSTGRES=1 but no PostgreSQL (initdb) was found")
        pytest.skip("PostgreSQL is not installed (no initdb): the PostgreSQL half of the suite is skipped")
    cluster, template = found
    name = cluster.create_database(template=template)
    yield cluster.url(name)
    cluster.drop_database(name)


@pytest.fixture
def settings(database_url: str) -> Settings:
    # The FHIR-core tests run without tokens; tests/access and tests/smart turn enforcement on.
    return Settings(
        database_url=database_url, sqlite_synchronous="NORMAL", max_body_bytes=2_000_000, auth_enabled=False
    )


@pytest.fixture
def ctx(settings: Settings) -> Iterator[Context]:
    context = build_context(settings)
    yield context
    context.repo.engine.dispose()


@pytest.fixture
def client(settings: Settings, ctx: Context) -> Iterator[TestClient]:
    app = create_app(settings, context=ctx)
    with TestClient(app, base_url="http://testserver", raise_server_exceptions=False) as test_client:
        test_client.headers.update({"Accept": FHIR_JSON})
        yield test_client


def patient(family: str = "Doe", given: str = "Jane", cin: str | None = "91000001A", **extra: Any) -> dict[str, Any]:
    """A synthetic Patient (never real member data)."""
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "name": [{"family": family, "given": [given]}],
        "gender": "female",
        "birthDate": "1980-02-03",
    }
    if cin is not None:
        resource["identifier"] = [{"system": "urn:oid:2.16.840.1.113883.4.1.99.1", "value": cin}]
    resource.update(extra)
    return resource


def post(client: TestClient, path: str, resource: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
    """POST a resource as FHIR JSON."""
    return client.post(f"/fhir/{path}", json=resource, headers={"Content-Type": FHIR_JSON, **(headers or {})})


def put(client: TestClient, path: str, resource: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
    """PUT a resource as FHIR JSON."""
    return client.put(f"/fhir/{path}", json=resource, headers={"Content-Type": FHIR_JSON, **(headers or {})})


def issue_codes(response: Any) -> list[str]:
    """The issue codes of an OperationOutcome response body."""
    body = response.json()
    assert body["resourceType"] == "OperationOutcome", body
    return [issue["code"] for issue in body["issue"]]
