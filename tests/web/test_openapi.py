"""The committed OpenAPI document (openapi/openapi.json) matches the app; regenerate it with
``calaim-gateway openapi --output openapi/openapi.json`` after changing routes."""

from __future__ import annotations

import json
from pathlib import Path

from gateway.settings import Settings
from gateway.web.openapi import openapi_document

COMMITTED = Path(__file__).resolve().parents[2] / "openapi" / "openapi.json"


def test_openapi_document_has_not_drifted() -> None:
    current = openapi_document(Settings(database_url="sqlite://"))
    committed = json.loads(COMMITTED.read_text(encoding="utf-8"))
    assert current == committed, (
        "openapi/openapi.json is stale: run `calaim-gateway openapi --output openapi/openapi.json`"
    )


def test_openapi_lists_fhir_interactions() -> None:
    paths = json.loads(COMMITTED.read_text(encoding="utf-8"))["paths"]
    assert "/fhir/{type}/{id}" in paths
    assert set(paths["/fhir/{type}/{id}"]) == {"get", "put", "patch", "delete"}
    assert "/fhir/{type}/${operation}" in paths
    assert "/fhir/metadata" in paths
