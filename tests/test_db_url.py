"""The database URL: the configured server (driver forced to asyncpg) or the embedded one."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from opentier.config import DatabaseSettings, Settings
from opentier.db.embedded import EmbeddedPostgres
from opentier.db.engine import create_engine
from opentier.db.url import asyncpg_url, database_url, display_url
from opentier.errors import ConfigError


@pytest.mark.parametrize(
    "given",
    [
        "postgres://app@db.example:5433/rag",
        "postgresql://app@db.example:5433/rag",
        "postgresql+psycopg://app@db.example:5433/rag",
    ],
)
def test_external_url_gets_the_asyncpg_driver_and_the_secret_password(given: str) -> None:
    settings = Settings(database=DatabaseSettings(url=given, password=SecretStr("s3cret")))

    url = database_url(settings)

    assert url.drivername == "postgresql+asyncpg"
    assert (url.username, url.password, url.host, url.port, url.database) == (
        "app",
        "s3cret",
        "db.example",
        5433,
        "rag",
    )
    assert "s3cret" not in display_url(url)


def test_libpq_options_are_translated_for_asyncpg() -> None:
    url = asyncpg_url("postgresql://app@db/rag?sslmode=require&connect_timeout=3")
    assert dict(url.query) == {"ssl": "require"}


def test_a_url_of_another_database_is_refused() -> None:
    with pytest.raises(ConfigError, match="must point at PostgreSQL"):
        asyncpg_url("mysql://app@db/rag")


def test_without_url_the_embedded_server_is_used(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, database=DatabaseSettings(name="mydb"))

    url = database_url(settings)

    assert url == EmbeddedPostgres.from_settings(settings).url()
    assert url.drivername == "postgresql+asyncpg"
    assert url.database == "mydb"
    assert url.query["host"] == str(tmp_path.resolve() / "postgres" / "socket")


def test_engine_takes_pool_size_from_settings_and_overrides(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, database=DatabaseSettings(pool_size=7))
    assert create_engine(settings).pool.size() == 7  # type: ignore[attr-defined]
    assert create_engine(settings, pool_size=1).pool.size() == 1  # type: ignore[attr-defined]
