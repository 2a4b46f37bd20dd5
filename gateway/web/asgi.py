"""ASGI entry point for uvicorn workers: ``gateway.web.asgi:app`` built from the environment."""

from __future__ import annotations

from gateway.settings import get_settings
from gateway.web.app import create_app

app = create_app(get_settings())
