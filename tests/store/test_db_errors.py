"""Which driver errors are a busy database (503, retry) and which are bugs (gateway/store/repository.py
``translate_db_errors``): SQLite raises OperationalError for both."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine
from sqlalchemy.exc import OperationalError

from gateway.errors import ServiceUnavailable
from gateway.store.repository import translate_db_errors


def test_a_sql_error_is_not_a_busy_database(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with pytest.raises(OperationalError), translate_db_errors(), engine.connect() as conn:
        conn.exec_driver_sql("SELECT no_such_column FROM sqlite_master")
    engine.dispose()


def test_a_lock_timeout_is_a_busy_database(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    holder = create_engine(f"sqlite:///{path}")
    waiter = create_engine(f"sqlite:///{path}", connect_args={"timeout": 0.05})
    with holder.connect() as held:
        held.exec_driver_sql("CREATE TABLE t (x INTEGER)")
        held.commit()
        held.exec_driver_sql("BEGIN IMMEDIATE")
        held.exec_driver_sql("INSERT INTO t VALUES (1)")
        with pytest.raises(ServiceUnavailable), translate_db_errors(), waiter.connect() as conn:
            conn.exec_driver_sql("INSERT INTO t VALUES (2)")
        held.rollback()
    holder.dispose()
    waiter.dispose()
