"""What both ``env.py`` files share: run one side's migrations inside its own schema.

:func:`opentier.db.migrate.migrate` hands over an open connection (``config.attributes``); the
``alembic`` command line (see ``alembic.ini`` at the repository root) gets its own async engine for
the configured database instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from alembic import context
from sqlalchemy import MetaData
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool
from sqlalchemy.schema import CreateSchema, SchemaItem

#: Indexes made per embedding dimension at run time (opentier.db.vector_index), not by models.
RUNTIME_INDEX_PREFIX = "chunks_embedding_hnsw_"


def run_migrations(schema: str, metadata: MetaData) -> None:
    """Entry point of a side's ``env.py``: migrate ``schema`` to the requested revision."""
    options: dict[str, Any] = {
        "target_metadata": metadata,
        "version_table_schema": schema,
        "include_schemas": True,
        "include_name": only_schema(schema),
        "include_object": include_object,
        "compare_type": True,
    }
    config = context.config
    if context.is_offline_mode():
        context.configure(url=_url(), literal_binds=True, **options)
        with context.begin_transaction():
            context.run_migrations()
        return
    connection = config.attributes.get("connection")
    if connection is None:
        asyncio.run(_run_with_own_engine(schema, options))
    else:
        _run(connection, schema, options)


def only_schema(schema: str) -> Callable[[str | None, str, Any], bool]:
    """An ``include_name`` hook that keeps autogenerate inside one schema."""

    def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
        if type_ == "schema":
            return name == schema
        return True

    return include_name


def include_object(obj: SchemaItem, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    """Leave the per-dimension HNSW indexes alone: they are not in the models on purpose."""
    return not (type_ == "index" and (name or "").startswith(RUNTIME_INDEX_PREFIX))


def _run(connection: Connection, schema: str, options: dict[str, Any]) -> None:
    if not connection.dialect.has_schema(connection, schema):
        connection.execute(CreateSchema(schema))
    context.configure(connection=connection, **options)
    with context.begin_transaction():
        context.run_migrations()


async def _run_with_own_engine(schema: str, options: dict[str, Any]) -> None:
    engine = create_async_engine(_url(), poolclass=NullPool)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_run, schema, options)
    finally:
        await engine.dispose()


def _url() -> str:
    from opentier.config import get_settings
    from opentier.db.url import asyncpg_url, database_url

    given = context.config.get_main_option("sqlalchemy.url")
    url = asyncpg_url(given) if given else database_url(get_settings())
    return url.render_as_string(hide_password=False)
