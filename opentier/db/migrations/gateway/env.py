"""Alembic environment of the gateway side: schema ``gateway`` and nothing else."""

from __future__ import annotations

from opentier.db.migrations.environment import run_migrations
from opentier.db.models.gateway import SCHEMA, GatewayBase

run_migrations(SCHEMA, GatewayBase.metadata)
