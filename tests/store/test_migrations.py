"""Schema migrations: the migrations build exactly the schema of gateway/store/schema.py, on both
dialects, and processes starting at once migrate the database once."""

from __future__ import annotations

import subprocess
import sys

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from gateway.store.database import make_engine
from gateway.store.migrate import current_revision, head_revision
from gateway.store.schema import metadata


def test_migrations_match_schema(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        assert current_revision(engine) == head_revision()
        with engine.connect() as connection:
            diff = compare_metadata(MigrationContext.configure(connection), metadata)
        assert diff == [], f"schema.py and the migrations disagree: add a migration for {diff}"
        assert "outbox" in inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_concurrent_starts_migrate_once(empty_database_url: str) -> None:
    """Four processes start on one empty database at once; all end at head, none fails."""
    database_url = empty_database_url
    assert current_revision(create_engine(database_url)) is None
    script = "import sys; from gateway.store.database import make_engine; make_engine(sys.argv[1]).dispose()"
    starts = [subprocess.Popen([sys.executable, "-c", script, database_url], stderr=subprocess.PIPE) for _ in range(4)]
    errors = [p.communicate()[1].decode() for p in starts if p.wait() != 0]
    assert not errors, errors[0]
    engine = make_engine(database_url)
    try:
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()


def test_cli_db_upgrade_and_current(database_url: str) -> None:
    cli = [sys.executable, "-m", "gateway.cli"]
    upgraded = subprocess.run([*cli, "db", "upgrade", "--database-url", database_url], capture_output=True, text=True)
    assert upgraded.returncode == 0, upgraded.stderr
    current = subprocess.run([*cli, "db", "current", "--database-url", database_url], capture_output=True, text=True)
    assert current.stdout.strip() == head_revision()
