"""Schema intelligence: find a job's earlier items of the same source quickly (ordering of claims).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "intelligence"


def upgrade() -> None:
    op.create_index(
        "ix_ingestion_items_job_id_source_ordinal",
        "ingestion_items",
        ["job_id", "source", "ordinal"],
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_index("ix_ingestion_items_job_id_source_ordinal", "ingestion_items", schema=SCHEMA)
