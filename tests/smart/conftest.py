"""Fixtures of the SMART tests: the gateway app over HTTPS (authlib refuses plain http except on
loopback addresses) on the test's real store, and its engine."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from gateway.fhir.context import Context
from gateway.settings import Settings
from gateway.web.app import create_app
from tests.smart.support import HTTPS_BASE


@pytest.fixture
def http(settings: Settings, ctx: Context) -> Iterator[TestClient]:
    """The gateway (authorization server and FHIR API) at https://testserver."""
    app = create_app(settings, context=ctx, background=False)
    with TestClient(app, base_url=HTTPS_BASE, raise_server_exceptions=True, follow_redirects=False) as client:
        yield client


@pytest.fixture
def engine(ctx: Context) -> Engine:
    return ctx.repo.engine
