"""Alembic environment: migrations run on the connection the server hands over at start-up."""

from __future__ import annotations

from typing import TYPE_CHECKING

from alembic import context

if TYPE_CHECKING:
    # mypy checks src/ as the package `src` (the `autobots` name exists only through the
    # editable install's import hook, which mypy cannot follow), so it reads the tables
    # relatively. Alembic loads this file by path, outside any package: at run time the
    # import has to be absolute.
    from ..tables import Base
else:
    from autobots.storage.tables import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("autobots runs its migrations through autobots.storage.database.migrate()")
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things in place; batch mode copies the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise RuntimeError("offline (SQL script) migrations are not supported")
run_migrations_online()
