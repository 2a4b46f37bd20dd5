"""A busy database answers 503 + Retry-After with an OperationOutcome, never a hang or a 500:
an exhausted connection pool, and a write waiting too long for a lock held elsewhere."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from gateway.fhir.core import build_context
from gateway.settings import Settings
from gateway.web.app import create_app
from tests.conftest import FHIR_JSON, issue_codes, patient, post, put


@pytest.fixture
def tight_client(database_url: str) -> Iterator[tuple[TestClient, Settings]]:
    settings = Settings(
        database_url=database_url,
        db_pool_size=1,
        db_max_overflow=0,
        db_pool_timeout_s=0.3,
        db_lock_timeout_ms=300,
        sqlite_synchronous="NORMAL",
        auth_enabled=False,
    )
    ctx = build_context(settings)
    with TestClient(create_app(settings, context=ctx), raise_server_exceptions=False) as client:
        client.headers.update({"Accept": FHIR_JSON})
        yield client, settings
    ctx.repo.engine.dispose()


def test_pool_exhaustion_is_503(tight_client: tuple[TestClient, Settings]) -> None:
    client, _settings = tight_client
    pid = post(client, "Patient", patient()).json()["id"]
    engine = client.app.state.ctx.repo.engine  # type: ignore[attr-defined]
    with engine.connect():  # the only connection of the pool is now taken
        # (a search: SQLite point reads run on a connection of their own, outside the pool)
        response = client.get("/fhir/Patient", params={"_id": pid})
    assert response.status_code == 503
    assert response.headers["Retry-After"]
    assert issue_codes(response) == ["transient"]
    assert client.get(f"/fhir/Patient/{pid}").status_code == 200  # and it recovers


def test_lock_wait_is_bounded_503(tight_client: tuple[TestClient, Settings], database_url: str) -> None:
    client, _settings = tight_client
    pid = post(client, "Patient", patient()).json()["id"]
    from sqlalchemy import create_engine

    other = create_engine(database_url.replace("postgresql://", "postgresql+psycopg://"))
    with other.connect() as holder:
        if database_url.startswith("sqlite"):
            holder.exec_driver_sql("BEGIN IMMEDIATE")  # the database write lock
        else:
            holder.execute(text("SELECT 1 FROM resource WHERE res_id = :i FOR UPDATE"), {"i": pid})
        response = put(client, f"Patient/{pid}", {**patient(family="Blocked"), "id": pid})
        holder.rollback()
    other.dispose()
    assert response.status_code == 503
    assert response.headers["Retry-After"]
    assert put(client, f"Patient/{pid}", {**patient(family="Later"), "id": pid}).status_code == 200
