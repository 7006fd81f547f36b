"""Alembic migrations: one independent tree per side, each with its version table in its schema.

``gateway/`` migrates schema ``gateway`` (version table ``gateway.alembic_version``) and
``intelligence/`` migrates schema ``intelligence``; neither touches the other's schema. Run them
with :func:`opentier.db.migrate.migrate` (or ``opentier db migrate``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic.config import Config

#: The sides, in the order they are migrated; each is also its schema's and tree's name.
SIDES = ("gateway", "intelligence")


def script_location(side: str) -> Path:
    """The folder of one side's migration tree (it ships inside the package)."""
    if side not in SIDES:
        raise ValueError(f"unknown side {side!r}; choose from {', '.join(SIDES)}")
    return Path(__file__).parent / side


def alembic_config(side: str, connection: Any = None) -> Config:
    """An Alembic config for one side, without an ini file; ``connection`` is a sync Connection."""
    config = Config()
    config.set_main_option("script_location", str(script_location(side)))
    config.set_main_option("path_separator", "os")
    if connection is not None:
        config.attributes["connection"] = connection
    return config
