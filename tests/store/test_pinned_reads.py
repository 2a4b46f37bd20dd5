"""SQLite point reads on connections pinned by the reading threads (gateway/store/repository.py
``PinnedConnections``): no pool check-out per read, a bounded number of pinned threads, fresh data."""

from __future__ import annotations

import gc
import threading
from pathlib import Path

from gateway.fhir.context import Context
from gateway.fhir.core import build_context
from gateway.settings import Settings
from tests.conftest import patient


def _context(tmp_path: Path, pool_size: int = 1) -> Context:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'store.db'}",
        db_pool_size=pool_size,
        db_max_overflow=0,
        db_pool_timeout_s=0.2,
        auth_enabled=False,
    )
    return build_context(settings)


def test_reads_need_no_pool_connection_and_see_each_commit(tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    repo = ctx.repo
    with repo.write() as tx:
        stored = tx.create(patient(), method="POST")
    assert repo.read("Patient", stored.res_id) is not None  # pins this thread's connection
    with repo.engine.connect():  # the pool's only connection is taken
        again = repo.read("Patient", stored.res_id)
    assert again is not None and again.version_id == 1
    with repo.write() as tx:
        tx.update(patient(family="Changed"), stored, method="PUT")
    newer = repo.read("Patient", stored.res_id)
    assert newer is not None and newer.version_id == 2, "a pinned connection keeps no stale snapshot"
    repo.engine.dispose()


def test_only_a_few_threads_pin_and_ended_threads_give_theirs_back(tmp_path: Path) -> None:
    ctx = _context(tmp_path, pool_size=4)
    repo = ctx.repo
    pinned = repo._point_read._pinned
    assert pinned is not None
    with repo.write() as tx:
        stored = tx.create(patient(), method="POST")
    results: list[bool] = []

    def read() -> None:
        results.append(repo.read("Patient", stored.res_id) is not None)

    threads = [threading.Thread(target=read) for _ in range(pinned.LIMIT + 2)]
    for thread in threads:
        thread.start()
        thread.join()
    assert results == [True] * len(threads)
    assert pinned._count <= pinned.LIMIT
    del threads, thread
    gc.collect()
    assert pinned._count == 0, "the connections of ended threads are closed"
    repo.engine.dispose()
