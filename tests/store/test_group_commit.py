"""Group commit of SQLite writers (gateway/store/group_commit.py): writers queued for the lock share one
commit, each returns only once its work is committed, a failing writer fails alone, and a failed commit
fails every writer of the group with nothing stored."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from gateway.errors import ServiceUnavailable
from gateway.search.extract import extract_values
from gateway.search.registry import default_registry
from gateway.store.database import make_engine
from gateway.store.repository import Repository, WriteConflict

REGISTRY = default_registry()


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'store.db'}")
    yield engine
    engine.dispose()


def _repo(engine: Engine, group_commit: int = 32) -> Repository:
    return Repository(engine, indexer=lambda resource: extract_values(resource, REGISTRY), group_commit=group_commit)


def _patient(family: str) -> dict[str, object]:
    return {"resourceType": "Patient", "name": [{"family": family}]}


def _committed(engine: Engine, res_id: str) -> bool:
    """Whether a fresh connection (another snapshot) sees the resource: it is committed."""
    with engine.connect() as conn:
        return conn.execute(text("SELECT 1 FROM resource WHERE res_id = :i"), {"i": res_id}).first() is not None


def _wait_for(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.001)


class Writers:
    """Threads writing through one repository: the first holds the lock until released, the others queue."""

    def __init__(self, repo: Repository, engine: Engine) -> None:
        self.repo, self.engine = repo, engine
        self.release_first = threading.Event()
        self.results: dict[str, object] = {}
        self.seen_at_return: dict[str, bool] = {}
        self.threads: list[threading.Thread] = []

    def start(self, name: str, *, hold: bool = False, fail: bool = False, poison: bool = False) -> None:
        def run() -> None:
            try:
                with self.repo.write() as tx:
                    stored = tx.create(_patient(name), res_id=name)
                    if hold:
                        self.release_first.wait(10)
                    if poison:  # a deferred foreign-key violation: the statement passes, the COMMIT fails
                        tx.flush()
                        tx.conn.execute(text("PRAGMA defer_foreign_keys = ON"))
                        tx.conn.execute(
                            text(
                                "INSERT INTO file_row_error (file_id, row_no, column_name, code, reason)"
                                " VALUES (999999, 1, '', 'X', 'a row of no file')"
                            )
                        )
                    if fail:
                        raise RuntimeError("this writer's own failure")
                self.results[name] = stored.res_id
                self.seen_at_return[name] = _committed(self.engine, name)
            except Exception as exc:
                self.results[name] = exc

        thread = threading.Thread(target=run)
        thread.start()
        self.threads.append(thread)

    def queue(self, names: list[str], **kwargs: bool) -> None:
        """Start writers that queue behind the holder; returns once all of them wait for the lock."""
        writer = self.repo.group_writer
        assert writer is not None
        for name in names:
            self.start(name, **kwargs)
        _wait_for(lambda: writer.waiting >= len(names))

    def finish(self) -> None:
        self.release_first.set()
        for thread in self.threads:
            thread.join(20)


def test_queued_writers_share_one_commit_and_return_only_once_committed(sqlite_engine: Engine) -> None:
    repo = _repo(sqlite_engine)
    writers = Writers(repo, sqlite_engine)
    assert repo.group_writer is not None
    before = repo.group_writer.stats.commits
    writers.start("first", hold=True)
    _wait_for(lambda: repo.group_writer is not None and repo.group_writer._group is not None)
    writers.queue(["second", "third"])
    writers.finish()
    assert writers.results == {"first": "first", "second": "second", "third": "third"}
    assert writers.seen_at_return == {"first": True, "second": True, "third": True}
    assert repo.group_writer.stats.commits - before == 1, "three writers, one commit"


def test_a_failing_writer_fails_alone(sqlite_engine: Engine) -> None:
    repo = _repo(sqlite_engine)
    writers = Writers(repo, sqlite_engine)
    writers.start("first", hold=True)
    _wait_for(lambda: repo.group_writer is not None and repo.group_writer._group is not None)
    writers.queue(["broken"], fail=True)
    writers.queue(["last"])
    writers.finish()
    assert isinstance(writers.results["broken"], RuntimeError)
    assert writers.results["first"] == "first" and writers.results["last"] == "last"
    assert _committed(sqlite_engine, "first") and _committed(sqlite_engine, "last")
    assert not _committed(sqlite_engine, "broken"), "its savepoint was rolled back"


def test_a_failed_commit_fails_every_writer_of_the_group(sqlite_engine: Engine) -> None:
    repo = _repo(sqlite_engine)
    writers = Writers(repo, sqlite_engine)
    writers.start("first", hold=True)
    _wait_for(lambda: repo.group_writer is not None and repo.group_writer._group is not None)
    writers.queue(["second"])
    writers.queue(["poison"], poison=True)
    writers.finish()
    for name in ("first", "second", "poison"):
        assert isinstance(writers.results[name], WriteConflict), name  # rerunnable: nothing of it is stored
        assert not _committed(sqlite_engine, name)
    with repo.write() as tx:  # the store goes on
        tx.create(_patient("after"), res_id="after")
    assert _committed(sqlite_engine, "after")


def test_many_concurrent_writers_all_land_and_are_counted(sqlite_engine: Engine) -> None:
    repo = _repo(sqlite_engine)
    assert repo.group_writer is not None
    before = repo.group_writer.stats
    commits, writers = before.commits, before.writers
    names = [f"p{n}" for n in range(200)]
    errors: list[BaseException] = []

    def write(chunk: list[str]) -> None:
        for name in chunk:
            try:
                with repo.write() as tx:
                    tx.create(_patient(name), res_id=name)
            except BaseException as exc:
                errors.append(exc)

    threads = [threading.Thread(target=write, args=(names[i::8],)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    with sqlite_engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM resource WHERE res_type = 'Patient'")).scalar() == 200
    stats = repo.group_writer.stats
    assert stats.writers - writers == 200
    assert stats.commits - commits <= 200


def test_group_commit_can_be_turned_off_and_is_off_in_memory(sqlite_engine: Engine) -> None:
    assert _repo(sqlite_engine, group_commit=1).group_writer is None
    memory = make_engine("sqlite://")
    try:
        assert _repo(memory).group_writer is None
    finally:
        memory.dispose()


def test_a_writer_that_cannot_get_the_lock_gets_503(sqlite_engine: Engine) -> None:
    repo = Repository(
        sqlite_engine, indexer=lambda resource: extract_values(resource, REGISTRY), lock_timeout_s=0.2, group_commit=32
    )
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with repo.write() as tx:
            tx.create(_patient("holder"), res_id="holder")
            holding.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    holding.wait(10)
    try:
        with pytest.raises(ServiceUnavailable), repo.write() as tx:
            tx.create(_patient("late"), res_id="late")
    finally:
        release.set()
        holder.join(10)
    assert _committed(sqlite_engine, "holder") and not _committed(sqlite_engine, "late")


def test_a_failing_first_writer_leaves_the_queued_ones_to_a_new_group(sqlite_engine: Engine) -> None:
    repo = _repo(sqlite_engine)
    writers = Writers(repo, sqlite_engine)
    writers.start("first", hold=True, fail=True)
    _wait_for(lambda: repo.group_writer is not None and repo.group_writer._group is not None)
    writers.queue(["second", "third"])
    writers.finish()
    assert isinstance(writers.results["first"], RuntimeError)
    assert writers.results["second"] == "second" and writers.results["third"] == "third"
    assert not _committed(sqlite_engine, "first")
    assert _committed(sqlite_engine, "second") and _committed(sqlite_engine, "third")
