"""Schema intelligence: indexes that keep claims and near-duplicate checks cheap as tables grow.

1. The per-source ordering check of a claim reads pending items only (a partial index).

With the full index of 0003 and fresh statistics (a job just created), the planner preferred the
``(job_id, status, ordinal)`` index for the check and scanned every pending item of the job once per
candidate; an index that holds exactly the pending items, keyed by source, is the cheapest plan
whatever the statistics say.

2. Near-duplicate lookups by SimHash band. Two 64-bit SimHashes within 3 bits of each other agree
exactly on at least one of their four 16-bit bands (pigeonhole), so four expression indexes on the
bands find every candidate; before, each new document compared itself with every document of its
collection (quadratic in the collection's size).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "intelligence"
BANDS = 4


def band_expression(band: int) -> str:
    return f"((simhash >> {16 * band}) & 65535)"


def upgrade() -> None:
    op.drop_index("ix_ingestion_items_job_id_source_ordinal", "ingestion_items", schema=SCHEMA)
    op.create_index(
        "ix_ingestion_items_pending_source",
        "ingestion_items",
        ["job_id", "source", "ordinal"],
        schema=SCHEMA,
        postgresql_where=sa.text("status = 'pending'"),
    )
    for band in range(BANDS):
        op.create_index(
            f"ix_documents_simhash_band{band}",
            "documents",
            ["collection_id", sa.text(band_expression(band))],
            schema=SCHEMA,
            postgresql_where=sa.text("simhash IS NOT NULL"),
        )


def downgrade() -> None:
    for band in range(BANDS):
        op.drop_index(f"ix_documents_simhash_band{band}", "documents", schema=SCHEMA)
    op.drop_index("ix_ingestion_items_pending_source", "ingestion_items", schema=SCHEMA)
    op.create_index(
        "ix_ingestion_items_job_id_source_ordinal",
        "ingestion_items",
        ["job_id", "source", "ordinal"],
        schema=SCHEMA,
    )
