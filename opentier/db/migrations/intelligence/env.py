"""Alembic environment of the intelligence side: schema ``intelligence`` and nothing else."""

from __future__ import annotations

from opentier.db.migrations.environment import run_migrations
from opentier.db.models.intelligence import SCHEMA, IntelligenceBase

run_migrations(SCHEMA, IntelligenceBase.metadata)
