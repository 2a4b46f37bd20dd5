"""Migration 0014 (gateway/store/migrations/versions/0014_resource_row_foreign_keys.py) drops the foreign
keys from a resource's own rows to ``resource.rid`` and keeps every row and index, on both dialects (on
SQLite by rebuilding the tables); its downgrade puts the keys back."""

from __future__ import annotations

from typing import Any

from alembic import command
from sqlalchemy import Engine, create_engine, inspect, text

from gateway.store.migrate import _config

TABLES = ("resource_version", "idx_token", "idx_date", "idx_member", "conditional_key")
ROWS = {
    "resource": "INSERT INTO resource (rid, res_type, res_id, version_id, last_updated, deleted, body) "
    "VALUES (7, 'Patient', 'p1', 2, 5, false, :body)",
    "resource_version": "INSERT INTO resource_version (rid, res_type, res_id, version_id, last_updated, method, "
    "deleted, body) VALUES (7, 'Patient', 'p1', 1, 4, 'POST', false, :body), "
    "(7, 'Patient', 'p1', 2, 5, 'PUT', false, :body)",
    "idx_token": "INSERT INTO idx_token (rid, res_type, param, system, code, text) "
    "VALUES (7, 'Patient', 'identifier', 'urn:mrn', '1', NULL)",
    "idx_date": "INSERT INTO idx_date (rid, res_type, param, low, high) "
    "VALUES (7, 'Patient', 'birthdate', 0, 86399999999)",
    "idx_member": "INSERT INTO idx_member (rid, res_type, organization, patient) VALUES (7, 'Coverage', 'hn-1', 'p1')",
    "conditional_key": "INSERT INTO conditional_key (res_type, key_hash, rid) VALUES ('Patient', 'k', 7)",
}


def _snapshot(engine: Engine) -> dict[str, Any]:
    with engine.connect() as conn:
        found: dict[str, Any] = {
            table: sorted(tuple(row) for row in conn.execute(text(f"SELECT * FROM {table}")))
            for table in ("resource", *TABLES)
        }
    look = inspect(engine)
    found["indexes"] = {t: sorted(i["name"] or "" for i in look.get_indexes(t)) for t in TABLES}
    return found


def _foreign_keys(engine: Engine) -> dict[str, list[str]]:
    look = inspect(engine)
    return {t: [fk["referred_table"] for fk in look.get_foreign_keys(t)] for t in TABLES}


def test_the_keys_go_and_every_row_and_index_stays(empty_database_url: str) -> None:
    engine = create_engine(empty_database_url)
    try:
        with engine.begin() as conn:
            command.upgrade(_config(conn), "0013")
        with engine.begin() as conn:
            for sql in ROWS.values():
                conn.execute(text(sql), {"body": b'{"resourceType":"Patient"}'})
        before = _snapshot(engine)
        assert _foreign_keys(engine) == {t: ["resource"] for t in TABLES}
        with engine.begin() as conn:
            command.upgrade(_config(conn), "0014")
        assert _foreign_keys(engine) == {t: [] for t in TABLES}
        assert _snapshot(engine) == before, "rows (the generated span_class included) and indexes kept"
        _orphan_row(engine)  # what the constraint refused is now the orphan test's to find
        with engine.begin() as conn:
            command.downgrade(_config(conn), "0013")
        assert _foreign_keys(engine) == {t: ["resource"] for t in TABLES}
        assert _snapshot(engine) == before
    finally:
        engine.dispose()


def _orphan_row(engine: Engine) -> None:
    """Insert (and remove) an index row of no resource, with SQLite enforcing foreign keys as the gateway's
    connections do: it raises while a constraint stands."""
    with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("PRAGMA foreign_keys=ON")  # outside a transaction, or SQLite ignores it
            conn.commit()
        with conn.begin():
            conn.execute(text("INSERT INTO idx_token (rid, res_type, param, code) VALUES (999, 'Patient', 'x', 'y')"))
            conn.execute(text("DELETE FROM idx_token WHERE rid = 999"))
