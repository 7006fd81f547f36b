"""Schema intelligence: collections, documents, chunks (pgvector, HNSW for 384 dims), jobs.

Revision ID: 0001
Revises:
Create Date: 2025-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from pgvector.sqlalchemy import Vector
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "intelligence"
EMPTY_JSON = sa.text("'{}'::jsonb")


def _id() -> sa.Column[object]:
    return sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False)


def _timestamp(name: str) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False)


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS vector SCHEMA public")
    op.create_table(
        "collections",
        _id(),
        sa.Column("tenant_id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("embedder", sa.Text(), nullable=False),
        sa.Column("embedding_dims", sa.Integer(), nullable=False),
        sa.Column("language", sa.Text(), server_default="english", nullable=False),
        sa.Column("settings", postgresql.JSONB(), server_default=EMPTY_JSON, nullable=False),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_collections"),
        sa.UniqueConstraint("tenant_id", "name", name="uq_collections_tenant_id_name"),
        schema=SCHEMA,
    )
    op.create_table(
        "documents",
        _id(),
        sa.Column("tenant_id", sa.Text(), nullable=False),
        sa.Column("collection_id", sa.Uuid(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("title", sa.Text(), nullable=True),
        sa.Column("media_type", sa.Text(), nullable=True),
        sa.Column("content_hash", sa.Text(), nullable=True),
        sa.Column("version", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("status", sa.Text(), server_default="pending", nullable=False),
        sa.Column("error_stage", sa.Text(), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("metadata", postgresql.JSONB(), server_default=EMPTY_JSON, nullable=False),
        sa.Column("chunk_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        sa.CheckConstraint(
            "status IN ('pending', 'processing', 'ready', 'failed', 'skipped', 'deleted')",
            name="ck_documents_status",
        ),
        sa.ForeignKeyConstraint(
            ["collection_id"],
            [f"{SCHEMA}.collections.id"],
            name="fk_documents_collection_id_collections",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_documents"),
        sa.UniqueConstraint("collection_id", "source", name="uq_documents_collection_id_source"),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_documents_tenant_id_collection_id_status",
        "documents",
        ["tenant_id", "collection_id", "status"],
        schema=SCHEMA,
    )
    op.create_table(
        "chunks",
        _id(),
        sa.Column("tenant_id", sa.Text(), nullable=False),
        sa.Column("collection_id", sa.Uuid(), nullable=False),
        sa.Column("document_id", sa.Uuid(), nullable=False),
        sa.Column("ordinal", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("token_count", sa.Integer(), nullable=False),
        sa.Column(
            "heading_path",
            postgresql.ARRAY(sa.Text()),
            server_default=sa.text("'{}'::text[]"),
            nullable=False,
        ),
        sa.Column("page", sa.Integer(), nullable=True),
        sa.Column("char_start", sa.Integer(), nullable=True),
        sa.Column("char_end", sa.Integer(), nullable=True),
        sa.Column("metadata", postgresql.JSONB(), server_default=EMPTY_JSON, nullable=False),
        sa.Column("tsv", postgresql.TSVECTOR(), nullable=True),
        sa.Column("embedding", Vector(), nullable=True),
        sa.Column("embedding_dims", sa.SmallInteger(), nullable=True),
        sa.CheckConstraint(
            "(embedding IS NULL AND embedding_dims IS NULL) OR "
            "(embedding IS NOT NULL AND embedding_dims = vector_dims(embedding))",
            name="ck_chunks_embedding_dims",
        ),
        sa.ForeignKeyConstraint(
            ["document_id"],
            [f"{SCHEMA}.documents.id"],
            name="fk_chunks_document_id_documents",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_chunks"),
        sa.UniqueConstraint("document_id", "ordinal", name="uq_chunks_document_id_ordinal"),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_chunks_tenant_id_collection_id",
        "chunks",
        ["tenant_id", "collection_id"],
        schema=SCHEMA,
    )
    op.create_index("ix_chunks_tsv", "chunks", ["tsv"], schema=SCHEMA, postgresql_using="gin")
    op.create_index(
        "ix_chunks_metadata",
        "chunks",
        ["metadata"],
        schema=SCHEMA,
        postgresql_using="gin",
        postgresql_ops={"metadata": "jsonb_path_ops"},
    )
    # The default embedder's dimension; other dimensions get theirs from opentier.db.vector_index.
    op.execute(
        f"CREATE INDEX chunks_embedding_hnsw_384 ON {SCHEMA}.chunks "
        "USING hnsw ((embedding::vector(384)) vector_cosine_ops) WHERE embedding_dims = 384"
    )
    op.create_table(
        "ingestion_jobs",
        _id(),
        sa.Column("tenant_id", sa.Text(), nullable=False),
        sa.Column("collection_id", sa.Uuid(), nullable=False),
        sa.Column("status", sa.Text(), server_default="queued", nullable=False),
        sa.Column("source", postgresql.JSONB(), server_default=EMPTY_JSON, nullable=False),
        sa.Column("total", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("done", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("failed", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("claimed_by", sa.Text(), nullable=True),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        sa.CheckConstraint(
            "status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')",
            name="ck_ingestion_jobs_status",
        ),
        sa.ForeignKeyConstraint(
            ["collection_id"],
            [f"{SCHEMA}.collections.id"],
            name="fk_ingestion_jobs_collection_id_collections",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_ingestion_jobs"),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_ingestion_jobs_status_created_at",
        "ingestion_jobs",
        ["status", "created_at"],
        schema=SCHEMA,
    )


def downgrade() -> None:
    # Also drops the per-dimension HNSW indexes with the table; the vector extension stays.
    op.drop_table("ingestion_jobs", schema=SCHEMA)
    op.drop_table("chunks", schema=SCHEMA)
    op.drop_table("documents", schema=SCHEMA)
    op.drop_table("collections", schema=SCHEMA)
