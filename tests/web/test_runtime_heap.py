"""The served app's start-up heap is frozen out of the cyclic collector while it runs, and given back
when it stops (gateway/runtime.py)."""

from __future__ import annotations

import gc

from fastapi.testclient import TestClient

from gateway.settings import Settings
from gateway.web.app import create_app


def test_the_started_app_freezes_its_heap_and_thaws_it_at_shutdown(database_url: str) -> None:
    gc.unfreeze()
    settings = Settings(database_url=database_url, auth_enabled=False, validation_workers=0)
    with TestClient(create_app(settings)) as client:
        assert gc.get_freeze_count() > 10_000, "the definitions, models and plans are frozen"
        assert client.get("/fhir/metadata").status_code == 200
    assert gc.get_freeze_count() == 0


def test_an_app_without_background_work_leaves_the_collector_alone(database_url: str) -> None:
    gc.unfreeze()
    settings = Settings(database_url=database_url, auth_enabled=False, validation_workers=0)
    with TestClient(create_app(settings, background=False)):
        assert gc.get_freeze_count() == 0
