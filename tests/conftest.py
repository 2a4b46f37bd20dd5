"""Shared fixtures: a real SQLite file store per test, the ASGI app over HTTP (Starlette's TestClient,
which drives the app through httpx), and small helpers for FHIR requests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gateway.fhir.context import Context
from gateway.fhir.core import build_context
from gateway.settings import Settings
from gateway.web.app import create_app

FHIR_JSON = "application/fhir+json"


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """A fresh SQLite file for the test."""
    return f"sqlite:///{tmp_path / 'gateway.db'}"


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(database_url=database_url, sqlite_synchronous="NORMAL", max_body_bytes=2_000_000)


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
