"""Which PostgreSQL OpenTier talks to: the configured server, or the embedded one."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from opentier.errors import ConfigError

if TYPE_CHECKING:
    from opentier.config import Settings

log = logging.getLogger(__name__)

DRIVER = "postgresql+asyncpg"
#: libpq URL options that asyncpg does not take as they are.
_RENAMED_OPTIONS = {"sslmode": "ssl"}
_DROPPED_OPTIONS = frozenset({"connect_timeout"})  # database.connect_timeout_seconds applies


def database_url(settings: Settings) -> URL:
    """The SQLAlchemy URL (asyncpg driver) of the database ``settings`` point at.

    ``database.url`` with the password from ``database.password`` when set; otherwise the embedded
    server in ``settings.embedded_dir`` (whether it runs or not).
    """
    if settings.database.url is None:
        from opentier.db.embedded import EmbeddedPostgres

        return EmbeddedPostgres.from_settings(settings).url()
    url = asyncpg_url(settings.database.url)
    if settings.database.password is not None:
        url = url.set(password=settings.database.password.get_secret_value())
    return url


def asyncpg_url(url: str | URL) -> URL:
    """Any PostgreSQL URL (``postgres://``, ``postgresql+psycopg://``...), driver set to asyncpg."""
    try:
        parsed = make_url(url)
    except ArgumentError as err:
        raise ConfigError(f"database.url {str(url)!r} is not a database URL: {err}") from None
    if parsed.get_backend_name() not in ("postgresql", "postgres"):
        raise ConfigError(
            f"database.url must point at PostgreSQL (postgresql://user@host:port/db), not "
            f"{parsed.get_backend_name()!r}"
        )
    query: dict[str, str | tuple[str, ...]] = {}
    for key, value in parsed.query.items():
        if key in _DROPPED_OPTIONS:
            log.info("ignoring %s=%s in database.url; OpenTier sets it from the config", key, value)
            continue
        query[_RENAMED_OPTIONS.get(key, key)] = value
    return parsed.set(drivername=DRIVER, query=query)


def display_url(url: URL) -> str:
    """The URL as text for people: the password, if any, is masked."""
    return url.render_as_string(hide_password=True)
