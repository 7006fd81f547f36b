"""Shared fixtures: one real PostgreSQL with pgvector per test session, migrated once.

Session-scoped fixtures any test file can use (request the cheapest one that fits):

``embedded_postgres``
    The :class:`~opentier.db.embedded.EmbeddedPostgres` serving the session, started in a temporary
    folder and stopped (no process left) at the end; ``None`` when ``OPENTIER_TEST_DATABASE_URL``
    names an existing server instead.
``database_url``
    ``str``: SQLAlchemy URL (``postgresql+asyncpg://...``) of a database with both schemas
    migrated. ``OPENTIER_TEST_DATABASE_URL`` (any PostgreSQL URL; its database gets migrated) wins
    over the embedded server.
``db_engine``
    :class:`~sqlalchemy.ext.asyncio.AsyncEngine` on that database, disposed at the end. The data is
    shared by the whole session: use a unique tenant id per test, or roll back.
``db_settings``
    :class:`~opentier.config.Settings` whose ``database.url``/``database.password`` point at that
    database, for code that takes settings (``create_engine``, ``migrate``, the host).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from opentier.config import Settings
from opentier.db.embedded import EmbeddedPostgres
from opentier.db.migrate import migrate
from opentier.db.url import asyncpg_url

TEST_DATABASE_URL_ENV = "OPENTIER_TEST_DATABASE_URL"
TEST_DATABASE_NAME = "opentier_test"


@pytest.fixture(scope="session")
def embedded_postgres(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[EmbeddedPostgres | None]:
    if os.environ.get(TEST_DATABASE_URL_ENV):
        yield None
        return
    server = EmbeddedPostgres(tmp_path_factory.mktemp("postgres") / "data", database=TEST_DATABASE_NAME)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        assert_no_postgres_left(server)


@pytest_asyncio.fixture(scope="session")
async def database_url(embedded_postgres: EmbeddedPostgres | None) -> str:
    if embedded_postgres is None:
        url = asyncpg_url(os.environ[TEST_DATABASE_URL_ENV])
    else:
        url = embedded_postgres.url()
    await migrate(url)
    return url.render_as_string(hide_password=False)


@pytest_asyncio.fixture(scope="session")
async def db_engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(database_url, pool_size=5, pool_pre_ping=True)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
def db_settings(database_url: str) -> Settings:
    url = make_url(database_url)
    database: dict[str, object] = {"url": url._replace(password=None).render_as_string(hide_password=False)}
    if url.password:
        database["password"] = url.password
    return Settings(database=database)  # type: ignore[arg-type]


def assert_no_postgres_left(server: EmbeddedPostgres) -> None:
    left = server.processes()
    assert not left, f"PostgreSQL processes left for {server.data_dir}: {left}"
