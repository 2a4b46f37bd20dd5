"""The OpenAPI document of the HTTP API, as committed in ``openapi/openapi.json``."""

from __future__ import annotations

from typing import Any

from gateway.settings import Settings
from gateway.web.app import create_app


def openapi_document(settings: Settings) -> dict[str, Any]:
    """The app's OpenAPI document (no database is opened to produce it)."""
    return create_app(settings).openapi()
