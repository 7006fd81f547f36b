"""Schema intelligence: the ingestion ledger (job items, source hashes, embedder versions).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "intelligence"
EMPTY_JSON = sa.text("'{}'::jsonb")


def upgrade() -> None:
    op.add_column(
        "collections",
        sa.Column("embedder_version", sa.Text(), server_default="1", nullable=False),
        schema=SCHEMA,
    )
    op.add_column("documents", sa.Column("source_hash", sa.Text(), nullable=True), schema=SCHEMA)
    op.add_column("documents", sa.Column("simhash", sa.BigInteger(), nullable=True), schema=SCHEMA)
    op.add_column("documents", sa.Column("size_bytes", sa.BigInteger(), nullable=True), schema=SCHEMA)
    op.add_column("documents", sa.Column("job_id", sa.Uuid(), nullable=True), schema=SCHEMA)
    for column in ("total", "done", "failed"):
        op.drop_column("ingestion_jobs", column, schema=SCHEMA)
    op.add_column(
        "ingestion_jobs",
        sa.Column("options", postgresql.JSONB(), server_default=EMPTY_JSON, nullable=False),
        schema=SCHEMA,
    )
    op.add_column("ingestion_jobs", sa.Column("created_by", sa.Text(), nullable=True), schema=SCHEMA)
    op.add_column("ingestion_jobs", sa.Column("error_code", sa.Text(), nullable=True), schema=SCHEMA)
    op.add_column(
        "ingestion_jobs",
        sa.Column("input_complete", sa.Boolean(), server_default=sa.true(), nullable=False),
        schema=SCHEMA,
    )
    for column in ("started_at", "finished_at"):
        op.add_column(
            "ingestion_jobs", sa.Column(column, sa.DateTime(timezone=True), nullable=True), schema=SCHEMA
        )
    op.create_table(
        "ingestion_items",
        sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Text(), nullable=False),
        sa.Column("ordinal", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=True),
        sa.Column("details", postgresql.JSONB(), server_default=EMPTY_JSON, nullable=False),
        sa.Column("status", sa.Text(), server_default="pending", nullable=False),
        sa.Column("stage", sa.Text(), nullable=True),
        sa.Column("error_code", sa.Text(), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("document_id", sa.Uuid(), nullable=True),
        sa.Column("created", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("updated", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("unchanged", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("deleted", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("dropped", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("failed", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("chunks", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'done', 'failed', 'cancelled')", name="ck_ingestion_items_status"
        ),
        sa.CheckConstraint(
            "kind IN ('file', 'path', 'url', 'text', 'remove')", name="ck_ingestion_items_kind"
        ),
        sa.ForeignKeyConstraint(
            ["job_id"],
            [f"{SCHEMA}.ingestion_jobs.id"],
            name="fk_ingestion_items_job_id_ingestion_jobs",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_ingestion_items"),
        sa.UniqueConstraint("job_id", "ordinal", name="uq_ingestion_items_job_id_ordinal"),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_ingestion_items_job_id_status_ordinal",
        "ingestion_items",
        ["job_id", "status", "ordinal"],
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_table("ingestion_items", schema=SCHEMA)
    for column in ("finished_at", "started_at", "input_complete", "error_code", "created_by", "options"):
        op.drop_column("ingestion_jobs", column, schema=SCHEMA)
    for column in ("total", "done", "failed"):
        op.add_column(
            "ingestion_jobs",
            sa.Column(column, sa.Integer(), server_default=sa.text("0"), nullable=False),
            schema=SCHEMA,
        )
    for column in ("job_id", "size_bytes", "simhash", "source_hash"):
        op.drop_column("documents", column, schema=SCHEMA)
    op.drop_column("collections", "embedder_version", schema=SCHEMA)
