"""Alembic environment: migrations run on the connection the gateway hands over (no alembic.ini).

``gateway.store.migrate.upgrade`` calls Alembic with ``config.attributes["connection"]`` set.
"""

from __future__ import annotations

from alembic import context

from gateway.store.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
