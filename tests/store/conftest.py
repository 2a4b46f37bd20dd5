"""Fixtures of the store tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from gateway.store.database import make_engine


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """A migrated engine on the test's fresh database (SQLite and PostgreSQL)."""
    eng = make_engine(database_url)
    yield eng
    eng.dispose()


@pytest.fixture
def empty_database_url(database_url: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A database without any schema (the shared fixture's PostgreSQL databases come migrated)."""
    if database_url.startswith("sqlite"):
        yield database_url
        return
    cluster, _template = request.getfixturevalue("pg_cluster")
    name = cluster.create_database()
    yield cluster.url(name)
    cluster.drop_database(name)
