"""Alembic environment: migrations run on the connection the gateway hands over (no alembic.ini).

``gateway.store.migrate.upgrade`` calls Alembic with ``config.attributes["connection"]`` set.
"""

from __future__ import annotations

from alembic import context

from gateway.store.schema import metadata

connection = context.config.attributes["connection"]
# transactional_ddl: SQLite's DDL is transactional, but Alembic assumes otherwise and would commit after
# each migration, letting a second process that starts at the same moment in between (it then reruns a
# migration the first one already applied). In one transaction, the upgrade holds the write lock
# (``BEGIN IMMEDIATE``) from the version check to the end, and is all or nothing.
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    transactional_ddl=True,
)
with context.begin_transaction():
    context.run_migrations()
