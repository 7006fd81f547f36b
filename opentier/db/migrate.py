"""Bring the database up to date: schemas, the pgvector extension, then each side's migrations.

Everything runs in one transaction under a PostgreSQL advisory lock, so concurrent callers (several
hosts starting at once) are safe: the first migrates, the others wait and find nothing to do, and a
failure leaves the database as it was.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING

import sqlalchemy as sa
from alembic import command
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy.engine import URL, Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from sqlalchemy.pool import NullPool

from opentier.db.migrations import SIDES, alembic_config
from opentier.db.url import asyncpg_url, database_url, display_url
from opentier.errors import DatabaseError, MigrationError, OpenTierError

if TYPE_CHECKING:
    from opentier.config import Settings

log = logging.getLogger(__name__)

#: Key of the advisory lock that serialises migrations ("opentier" as a 64-bit integer).
MIGRATION_LOCK_KEY = int.from_bytes(b"opentier", "big")
DEFAULT_CONNECT_TIMEOUT = 10.0
INSUFFICIENT_PRIVILEGE = "42501"


async def migrate(target: Settings | URL | str, sides: Iterable[str] = SIDES) -> dict[str, str | None]:
    """Migrate ``sides`` of the database that ``target`` (settings or URL) names to their heads.

    Creates the missing schemas first, and the ``vector`` extension (in schema ``public``) when the
    intelligence side is migrated. Returns the revision of each side afterwards.
    """
    chosen = _check_sides(sides)
    async with _connect(target) as (connection, url):
        step = "preparing the schemas"
        try:
            async with connection.begin():
                await connection.execute(
                    sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
                )
                await _create_schemas(connection, chosen, url)
                if "intelligence" in chosen:
                    step = "installing the vector extension"
                    await _create_vector_extension(connection, url)
                for side in chosen:
                    step = f"migrating schema {side!r}"
                    await connection.run_sync(_upgrade, side)
        except OpenTierError:
            raise
        except CommandError as err:
            if "Can't locate revision" in str(err):
                raise MigrationError(
                    f"schema {step.split()[-1]} of {display_url(url)} was migrated by a newer "
                    f"OpenTier ({err}); upgrade OpenTier to use this database"
                ) from err
            raise MigrationError(f"{step} in {display_url(url)} failed: {err}") from err
        except SQLAlchemyError as err:
            raise MigrationError(
                f"{step} in {display_url(url)} failed, nothing was changed: {_reason(err)}"
            ) from err
        revisions = await connection.run_sync(_current, chosen)
    log.info("database schemas at %s", ", ".join(f"{s} {r}" for s, r in revisions.items()))
    return revisions


async def current_revisions(
    target: Settings | URL | str, sides: Iterable[str] = SIDES
) -> dict[str, str | None]:
    """The applied revision of each side (None when that side was never migrated)."""
    chosen = _check_sides(sides)
    async with _connect(target) as (connection, _url):
        return await connection.run_sync(_current, chosen)


def head_revisions(sides: Iterable[str] = SIDES) -> dict[str, str | None]:
    """The newest revision each side's migration tree ships with."""
    return {
        side: ScriptDirectory.from_config(alembic_config(side)).get_current_head()
        for side in _check_sides(sides)
    }


def _check_sides(sides: Iterable[str]) -> tuple[str, ...]:
    chosen = tuple(dict.fromkeys(sides))
    unknown = [side for side in chosen if side not in SIDES]
    if unknown or not chosen:
        raise MigrationError(
            f"unknown side(s) {', '.join(map(repr, unknown)) or '(none given)'}; choose from "
            f"{', '.join(SIDES)}"
        )
    return tuple(side for side in SIDES if side in chosen)


@contextlib.asynccontextmanager
async def _connect(target: Settings | URL | str) -> AsyncIterator[tuple[AsyncConnection, URL]]:
    hint = "check the URL, and that the server runs and accepts this user"
    if isinstance(target, (str, URL)):
        url, timeout = asyncpg_url(target), DEFAULT_CONNECT_TIMEOUT
    else:
        url, timeout = database_url(target), target.database.connect_timeout_seconds
        if target.database.url is None:
            hint = "start the embedded server with `opentier db start`"
        else:
            hint = "check database.url, OPENTIER_DATABASE__PASSWORD and that the server runs"
    engine = create_async_engine(url, poolclass=NullPool, connect_args={"timeout": timeout})
    try:
        try:
            connection = await engine.connect()
        except (SQLAlchemyError, OSError, TimeoutError) as err:
            raise DatabaseError(
                f"cannot connect to PostgreSQL at {display_url(url)}: {_reason(err)}; {hint}"
            ) from err
        try:
            yield connection, url
        finally:
            await connection.close()
    finally:
        await engine.dispose()


async def _create_schemas(connection: AsyncConnection, sides: tuple[str, ...], url: URL) -> None:
    for schema in sides:
        exists = await connection.scalar(
            sa.text("SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = :name)"),
            {"name": schema},
        )
        if exists:
            continue
        try:
            async with connection.begin_nested():
                await connection.execute(sa.schema.CreateSchema(schema))
        except SQLAlchemyError as err:
            if _sqlstate(err) == INSUFFICIENT_PRIVILEGE:
                raise MigrationError(
                    f"user {url.username!r} may not create schema {schema!r} in database "
                    f"{url.database!r}; ask an administrator to run: CREATE SCHEMA {schema} "
                    f"AUTHORIZATION {url.username};"
                ) from err
            raise
        log.info("created schema %s", schema)


async def _create_vector_extension(connection: AsyncConnection, url: URL) -> None:
    installed = await connection.scalar(
        sa.text("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
    )
    if installed is not None:
        return
    available = await connection.scalar(
        sa.text("SELECT default_version FROM pg_available_extensions WHERE name = 'vector'")
    )
    if available is None:
        raise MigrationError(
            f"the PostgreSQL server at {display_url(url)} has no pgvector extension; install "
            "pgvector 0.5 or newer on it (https://github.com/pgvector/pgvector#installation), "
            "or unset database.url to use the embedded server, which includes it"
        )
    try:
        async with connection.begin_nested():
            await connection.execute(sa.text("CREATE EXTENSION IF NOT EXISTS vector SCHEMA public"))
    except SQLAlchemyError as err:
        if _sqlstate(err) == INSUFFICIENT_PRIVILEGE:
            raise MigrationError(
                f"user {url.username!r} may not install the pgvector extension in database "
                f"{url.database!r}; ask a superuser to run once: CREATE EXTENSION vector SCHEMA "
                "public;"
            ) from err
        raise
    log.info("installed the vector extension %s", available)


def _upgrade(connection: Connection, side: str) -> None:
    command.upgrade(alembic_config(side, connection), "head")


def _current(connection: Connection, sides: tuple[str, ...]) -> dict[str, str | None]:
    return {
        side: MigrationContext.configure(
            connection, opts={"version_table_schema": side}
        ).get_current_revision()
        for side in sides
    }


def _sqlstate(err: SQLAlchemyError) -> str | None:
    original = getattr(err, "orig", None)
    return getattr(original, "sqlstate", None) or getattr(original, "pgcode", None)


def _reason(err: BaseException) -> str:
    original = getattr(err, "orig", None)
    text = str(original if original is not None else err).strip()
    return text.splitlines()[0] if text else type(err).__name__
