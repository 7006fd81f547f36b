"""The SQLAlchemy async engine (asyncpg) shared by one process."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from opentier.db.tenancy import enforce_tenancy
from opentier.db.url import database_url

if TYPE_CHECKING:
    from opentier.config import Settings

APPLICATION_NAME = "opentier"


def create_engine(settings: Settings, *, tenancy: bool = False, **options: Any) -> AsyncEngine:
    """An engine for the configured database: pool size and connect timeout from ``settings``.

    ``tenancy``: every transaction carries the current tenant scope, which the row-level security of
    schema ``intelligence`` enforces (see :mod:`opentier.db.tenancy`); the host's engines set it.
    ``options`` go to :func:`sqlalchemy.ext.asyncio.create_async_engine` and win over the defaults.
    The caller owns the engine and calls ``await engine.dispose()`` when done.
    """
    db = settings.database
    defaults: dict[str, Any] = {
        "pool_size": db.pool_size,
        "max_overflow": db.pool_size,
        "pool_timeout": db.connect_timeout_seconds,
        "pool_pre_ping": True,
        "connect_args": {
            "timeout": db.connect_timeout_seconds,
            "server_settings": {"application_name": APPLICATION_NAME},
        },
    }
    engine = create_async_engine(database_url(settings), **(defaults | options))
    if tenancy:
        enforce_tenancy(engine)
    return engine
