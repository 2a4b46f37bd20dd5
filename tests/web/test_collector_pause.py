"""Large Bundles (by bytes) and file chunks run with the cyclic collector paused (gateway/runtime.py
``collector_paused``): paused while any such write runs, restored after it even when it fails, enabled
again when the last one ends, bounded when writers keep overlapping, and never enabled when someone else
had disabled it."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator

import orjson
import pytest
from fastapi.testclient import TestClient

from gateway import runtime
from gateway.fhir.bundles import PAUSE_COLLECTOR_BYTES
from gateway.fhir.context import Context
from gateway.fhir.hooks import WriteEvent
from gateway.store.repository import StoredResource
from tests.conftest import FHIR_JSON


@pytest.fixture(autouse=True)
def collector_enabled() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    yield
    (gc.enable if was else gc.disable)()  # as it was, whatever the test left


class SeesCollector:
    """Records, per write, whether the collector was enabled."""

    def __init__(self) -> None:
        self.seen: list[bool] = []

    def before(self, ctx: Context, event: WriteEvent) -> StoredResource | None:
        self.seen.append(gc.isenabled())
        return None

    def after(self, ctx: Context, event: WriteEvent) -> None:
        return None


def _bundle(kind: str, size: int) -> bytes:
    """A Bundle of Organization creates, ``size`` bytes long (padded with spaces, which JSON ignores)."""
    resource = {"resourceType": "Organization", "name": "Pause"}
    entry = {"resource": resource, "request": {"method": "POST", "url": "Organization"}}
    body = orjson.dumps({"resourceType": "Bundle", "type": kind, "entry": [entry] * ENTRIES})
    assert len(body) < size
    return body + b" " * (size - len(body))


ENTRIES = 3


@pytest.mark.parametrize("kind", ["transaction", "batch"])
def test_a_large_bundle_runs_with_the_collector_paused(client: TestClient, ctx: Context, kind: str) -> None:
    hook = SeesCollector()
    ctx.hooks.register("Organization", hook)
    for size, paused in ((PAUSE_COLLECTOR_BYTES - 1, False), (PAUSE_COLLECTOR_BYTES, True)):
        hook.seen.clear()
        answer = client.post("/fhir", content=_bundle(kind, size), headers={"Content-Type": FHIR_JSON})
        assert answer.status_code == 200, answer.text
        assert hook.seen == [not paused] * ENTRIES
        assert gc.isenabled(), "enabled again after the Bundle"


def test_paused_for_the_block_and_restored_after_even_on_error() -> None:
    with runtime.collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), runtime.collector_paused():
        raise RuntimeError("a chunk fails")
    assert gc.isenabled()


def test_paused_until_the_last_writer_ends() -> None:
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    seen: list[bool] = []

    def first() -> None:
        with runtime.collector_paused():
            first_in.set()
            second_in.wait(5)
        first_out.set()

    thread = threading.Thread(target=first)
    thread.start()
    first_in.wait(5)
    with runtime.collector_paused():
        second_in.set()
        first_out.wait(5)
        seen.append(gc.isenabled())  # the first writer has ended, this one has not
    thread.join(5)
    assert seen == [False]
    assert gc.isenabled()


def test_overlapping_writers_collect_after_the_longest_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "PAUSE_AT_MOST_S", 0.0)
    middle_before = gc.get_stats()[1]["collections"]
    with runtime.collector_paused():
        with runtime.collector_paused():
            pass  # ends while the outer one still runs, after more than PAUSE_AT_MOST_S
        assert gc.get_stats()[1]["collections"] == middle_before + 1
        assert not gc.isenabled()
    assert gc.isenabled()


def test_a_collector_disabled_by_someone_else_stays_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "PAUSE_AT_MOST_S", 0.0)
    gc.disable()
    middle_before = gc.get_stats()[1]["collections"]
    with runtime.collector_paused(), runtime.collector_paused():
        assert not gc.isenabled()
    assert not gc.isenabled()
    assert gc.get_stats()[1]["collections"] == middle_before, "no collection forced on it either"
