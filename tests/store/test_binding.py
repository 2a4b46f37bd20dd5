"""``gateway.store.database.bind_without_adaptation``: ``bytes`` and ``None`` bind as before, without the
adaptation look-up."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from gateway.search.extract import extract_values
from gateway.store.database import make_engine
from gateway.store.repository import Repository


def test_a_sqlite_engine_registers_identity_adapters(tmp_path: Path) -> None:
    make_engine(f"sqlite:///{tmp_path / 'g.db'}").dispose()
    for kind in (bytes, type(None)):
        adapter = sqlite3.adapters[(kind, sqlite3.PrepareProtocol)]
        value = b"\x00body" if kind is bytes else None
        assert adapter(value) is value


def test_bodies_and_nulls_are_stored_as_blob_and_null(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'g.db'}")
    repo = Repository(engine, indexer=extract_values)
    with repo.write() as tx:
        tx.create({"resourceType": "Patient", "id": "p1", "identifier": [{"value": "X1"}], "name": [{"family": "Doe"}]})
    conn = sqlite3.connect(tmp_path / "g.db")
    try:
        kinds = conn.execute("SELECT typeof(body) FROM resource").fetchall()
        nulls = conn.execute("SELECT typeof(system), typeof(text) FROM idx_token WHERE param = 'identifier'").fetchall()
        blob = conn.execute("SELECT body FROM resource").fetchone()[0]
    finally:
        conn.close()
        engine.dispose()
    assert kinds == [("blob",)]
    assert nulls == [("null", "null")]
    assert isinstance(blob, bytes) and b'"family":"Doe"' in blob
