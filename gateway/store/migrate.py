"""Schema migrations (Alembic) for both dialects: the store is brought to the newest revision at start.

Several processes may start at once against one PostgreSQL database: an advisory lock serializes them,
so exactly one runs the migrations and the others find the schema current. On SQLite the migration
runs under ``BEGIN IMMEDIATE`` (one writer). ``calaim-gateway db upgrade`` runs the same code.
"""

from __future__ import annotations

import threading
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, text

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
MIGRATION_LOCK_KEY = 0x43414C41494D  # pg_advisory_lock key ("CALAIM"), shared by every process
_IN_PROCESS = threading.Lock()  # Alembic's context is process-global: one migration per process at a time


def _config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str | None:
    """The newest revision shipped with this code."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return ScriptDirectory.from_config(config).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (None: empty database)."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine) -> None:
    """Bring the database to the head revision (a no-op when it is there already)."""
    if current_revision(engine) == head_revision():
        return
    with _IN_PROCESS, engine.connect() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
            connection.commit()
            try:
                command.upgrade(_config(connection), "head")
                connection.commit()
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK_KEY})
                connection.commit()
        else:
            connection = connection.execution_options(sqlite_begin="IMMEDIATE")
            command.upgrade(_config(connection), "head")
            connection.commit()
