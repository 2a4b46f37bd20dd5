"""An unexpected exception is a 500 OperationOutcome that names an error id and reveals nothing else,
and the log line carries no resource content (https://hl7.org/fhir/R4/http.html#Status-Codes)."""

from __future__ import annotations

import logging

import pytest
from fastapi.testclient import TestClient

from gateway.fhir.context import Context
from gateway.fhir.operations import Operation
from gateway.fhir.request import FhirRequest, FhirResponse


def _explode(_ctx: Context, request: FhirRequest, _params: dict[str, str]) -> FhirResponse:
    raise RuntimeError(f"secret member data {request.body!r}")


def test_500_reveals_nothing(client: TestClient, ctx: Context, caplog: pytest.LogCaptureFixture) -> None:
    ctx.operations.register(Operation(name="explode", handler=_explode, definition="urn:test", system=True))
    with caplog.at_level(logging.INFO, logger="gateway.http"):
        response = client.post(
            "/fhir/$explode", content=b'{"name":"Jane Secret"}', headers={"Content-Type": "application/fhir+json"}
        )
    assert response.status_code == 500
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    text = response.text
    assert "Secret" not in text and "RuntimeError" not in text and "Traceback" not in text
    assert "error id" in outcome["issue"][0]["diagnostics"]
    assert "Secret" not in caplog.text
    assert "RuntimeError" in caplog.text  # the type and location are logged for operators
