"""Tables of schema ``intelligence``: collections, documents, chunks, BM25 statistics, jobs (host only).

Every table carries ``tenant_id`` so that every query can be scoped by tenant. ``chunks.embedding``
has no fixed dimension: each collection picks its embedder, and an HNSW index per dimension is a
partial expression index (see :mod:`opentier.db.vector_index`).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from pgvector.sqlalchemy import Vector
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, TSVECTOR
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from opentier.db.models import NAMING_CONVENTION

SCHEMA = "intelligence"


#: Near-duplicate lookups use four 16-bit bands of the 64-bit SimHash, each indexed (migration 0004).
SIMHASH_BANDS = 4


def simhash_band(band: int) -> str:
    """SQL for band ``band`` (0 = least significant 16 bits) of ``documents.simhash``."""
    return f"((simhash >> {16 * band}) & 65535)"


class DocumentStatus(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    READY = "ready"
    FAILED = "failed"
    SKIPPED = "skipped"
    DELETED = "deleted"


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


def _one_of(column: str, values: type[StrEnum]) -> str:
    return f"{column} IN ({', '.join(repr(str(v)) for v in values)})"


class IntelligenceBase(DeclarativeBase):
    """Declarative base of the host side; its metadata holds schema ``intelligence`` only."""

    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {  # noqa: RUF012 (SQLAlchemy reads it once)
        str: sa.Text(),
        datetime: sa.DateTime(timezone=True),
        uuid.UUID: sa.Uuid(),
        dict[str, Any]: JSONB(),
    }


class _Timestamps:
    created_at: Mapped[datetime] = mapped_column(server_default=sa.func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=sa.func.now(), onupdate=sa.func.now())


_EMPTY_JSON = sa.text("'{}'::jsonb")


class Collection(_Timestamps, IntelligenceBase):
    """A named set of documents of one tenant, embedded by one embedder."""

    __tablename__ = "collections"
    __table_args__ = (sa.UniqueConstraint("tenant_id", "name"), {"schema": SCHEMA})

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, server_default=sa.func.gen_random_uuid())
    tenant_id: Mapped[str]
    name: Mapped[str]
    description: Mapped[str | None]
    embedder: Mapped[str]
    embedder_version: Mapped[str] = mapped_column(server_default="1")
    embedding_dims: Mapped[int]
    language: Mapped[str] = mapped_column(server_default="english")
    settings: Mapped[dict[str, Any]] = mapped_column(server_default=_EMPTY_JSON)


class Document(_Timestamps, IntelligenceBase):
    """One source (file, URL...) in a collection, versioned by content hash, with its status."""

    __tablename__ = "documents"
    __table_args__ = (
        sa.UniqueConstraint("collection_id", "source"),
        sa.CheckConstraint(_one_of("status", DocumentStatus), name="status"),
        sa.Index(None, "tenant_id", "collection_id", "status"),
        *(
            sa.Index(
                f"ix_documents_simhash_band{band}",
                "collection_id",
                sa.text(simhash_band(band)),
                postgresql_where=sa.text("simhash IS NOT NULL"),
            )
            for band in range(SIMHASH_BANDS)
        ),
        {"schema": SCHEMA},
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, server_default=sa.func.gen_random_uuid())
    tenant_id: Mapped[str]
    collection_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey(f"{SCHEMA}.collections.id", ondelete="CASCADE")
    )
    source: Mapped[str]
    title: Mapped[str | None]
    media_type: Mapped[str | None]
    content_hash: Mapped[str | None]
    version: Mapped[int] = mapped_column(server_default=sa.text("1"))
    status: Mapped[str] = mapped_column(server_default=DocumentStatus.PENDING.value)
    error_stage: Mapped[str | None]
    error_message: Mapped[str | None]
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", server_default=_EMPTY_JSON)
    chunk_count: Mapped[int] = mapped_column(server_default=sa.text("0"))
    #: Hash of the raw source and the pipeline that read it: equal means nothing to do.
    source_hash: Mapped[str | None]
    #: 64-bit SimHash of the cleaned text, for near-duplicate detection within a collection.
    simhash: Mapped[int | None] = mapped_column(sa.BigInteger())
    size_bytes: Mapped[int | None] = mapped_column(sa.BigInteger())
    #: The job that last wrote this document.
    job_id: Mapped[uuid.UUID | None]


class Chunk(IntelligenceBase):
    """A piece of a document: its text, full-text vector and embedding."""

    __tablename__ = "chunks"
    __table_args__ = (
        sa.UniqueConstraint("document_id", "ordinal"),
        sa.CheckConstraint(
            "(embedding IS NULL AND embedding_dims IS NULL) OR "
            "(embedding IS NOT NULL AND embedding_dims = vector_dims(embedding))",
            name="embedding_dims",
        ),
        sa.Index(None, "tenant_id", "collection_id"),
        sa.Index("ix_chunks_tsv", "tsv", postgresql_using="gin"),
        # Lexemes occurring more than once in the chunk (migration 0005): see the fulltext retriever.
        sa.Index("ix_chunks_tsv_repeats", sa.text(f"{SCHEMA}.fulltext_repeats(tsv)"), postgresql_using="gin"),
        sa.Index(
            "ix_chunks_metadata",
            "metadata",
            postgresql_using="gin",
            postgresql_ops={"metadata": "jsonb_path_ops"},
        ),
        {"schema": SCHEMA},
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, server_default=sa.func.gen_random_uuid())
    tenant_id: Mapped[str]
    collection_id: Mapped[uuid.UUID]
    document_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey(f"{SCHEMA}.documents.id", ondelete="CASCADE")
    )
    ordinal: Mapped[int]
    text: Mapped[str]
    token_count: Mapped[int]
    heading_path: Mapped[list[str]] = mapped_column(ARRAY(sa.Text()), server_default=sa.text("'{}'::text[]"))
    page: Mapped[int | None]
    char_start: Mapped[int | None]
    char_end: Mapped[int | None]
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", server_default=_EMPTY_JSON)
    tsv: Mapped[str | None] = mapped_column(TSVECTOR())
    #: Any dimension; ``embedding_dims`` says which, and selects the matching HNSW index.
    embedding: Mapped[list[float] | None] = mapped_column(Vector())
    embedding_dims: Mapped[int | None] = mapped_column(sa.SmallInteger())


class IngestionJob(_Timestamps, IntelligenceBase):
    """A batch of sources to ingest; any host claims it with ``FOR UPDATE SKIP LOCKED``."""

    __tablename__ = "ingestion_jobs"
    __table_args__ = (
        sa.CheckConstraint(_one_of("status", JobStatus), name="status"),
        sa.Index(None, "status", "created_at"),
        {"schema": SCHEMA},
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, server_default=sa.func.gen_random_uuid())
    tenant_id: Mapped[str]
    collection_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey(f"{SCHEMA}.collections.id", ondelete="CASCADE")
    )
    status: Mapped[str] = mapped_column(server_default=JobStatus.QUEUED.value)
    source: Mapped[dict[str, Any]] = mapped_column(server_default=_EMPTY_JSON)
    options: Mapped[dict[str, Any]] = mapped_column(server_default=_EMPTY_JSON)
    created_by: Mapped[str | None]
    error: Mapped[str | None]
    error_code: Mapped[str | None]
    #: False while a streaming client may still add items.
    input_complete: Mapped[bool] = mapped_column(server_default=sa.true())
    claimed_by: Mapped[str | None]
    claimed_at: Mapped[datetime | None]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class ItemStatus(StrEnum):
    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


class ItemKind(StrEnum):
    FILE = "file"  # uploaded bytes, in ``payload``
    PATH = "path"  # a file on the host's disk
    URL = "url"  # fetched by the host
    TEXT = "text"  # a streamed record's text, in ``payload``
    REMOVE = "remove"  # delete the document with this source


class IngestionItem(IntelligenceBase):
    """One unit of a job's work (a file, a URL, a streamed record).

    A worker holds the row locked (``FOR UPDATE SKIP LOCKED``) in the transaction that writes the
    item's documents and chunks, so a host that dies leaves the item pending and nothing half-written.
    """

    __tablename__ = "ingestion_items"
    __table_args__ = (
        sa.UniqueConstraint("job_id", "ordinal"),
        sa.CheckConstraint(_one_of("status", ItemStatus), name="status"),
        sa.CheckConstraint(_one_of("kind", ItemKind), name="kind"),
        sa.Index(None, "job_id", "status", "ordinal"),
        sa.Index(
            "ix_ingestion_items_pending_source",
            "job_id",
            "source",
            "ordinal",
            postgresql_where=sa.text("status = 'pending'"),
        ),
        {"schema": SCHEMA},
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, server_default=sa.func.gen_random_uuid())
    job_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey(f"{SCHEMA}.ingestion_jobs.id", ondelete="CASCADE")
    )
    tenant_id: Mapped[str]
    ordinal: Mapped[int] = mapped_column(sa.BigInteger())
    kind: Mapped[str]
    source: Mapped[str]
    payload: Mapped[bytes | None] = mapped_column(sa.LargeBinary())
    #: Filename, media type, title and metadata that came with the item.
    details: Mapped[dict[str, Any]] = mapped_column(server_default=_EMPTY_JSON)
    status: Mapped[str] = mapped_column(server_default=ItemStatus.PENDING.value)
    stage: Mapped[str | None]
    error_code: Mapped[str | None]
    error_message: Mapped[str | None]
    document_id: Mapped[uuid.UUID | None]
    created: Mapped[int] = mapped_column(server_default=sa.text("0"))
    updated: Mapped[int] = mapped_column(server_default=sa.text("0"))
    unchanged: Mapped[int] = mapped_column(server_default=sa.text("0"))
    deleted: Mapped[int] = mapped_column(server_default=sa.text("0"))
    dropped: Mapped[int] = mapped_column(server_default=sa.text("0"))
    failed: Mapped[int] = mapped_column(server_default=sa.text("0"))
    chunks: Mapped[int] = mapped_column(server_default=sa.text("0"))
    size_bytes: Mapped[int | None] = mapped_column(sa.BigInteger())
    finished_at: Mapped[datetime | None]


class FulltextTerm(IntelligenceBase):
    """How many chunks of a collection hold a lexeme (BM25's document frequency), per writer slot.

    Kept by statement-level triggers on ``chunks`` (migration 0005), in the writing transaction: each
    writer adds signed deltas to the rows of the one slot it holds (an advisory lock), so concurrent
    writers of a collection never update the same row. The frequency is the sum over slots.
    """

    __tablename__ = "fulltext_terms"
    __table_args__ = {"schema": SCHEMA, "postgresql_with": {"fillfactor": 80}}  # noqa: RUF012

    collection_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    lexeme: Mapped[str] = mapped_column(primary_key=True)
    slot: Mapped[int] = mapped_column(sa.SmallInteger(), primary_key=True)
    tenant_id: Mapped[str]
    #: Signed change of this slot's writers to the number of chunks holding the lexeme.
    chunks: Mapped[int]
    #: Upper bound of the lexeme's frequency in one chunk (never lowered), for pruning.
    max_tf: Mapped[int]


class FulltextTotal(IntelligenceBase):
    """A collection's chunk count and total length in tokens (BM25's N and average length), per slot."""

    __tablename__ = "fulltext_totals"
    __table_args__ = {"schema": SCHEMA}  # noqa: RUF012

    collection_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    slot: Mapped[int] = mapped_column(sa.SmallInteger(), primary_key=True)
    tenant_id: Mapped[str]
    chunks: Mapped[int] = mapped_column(sa.BigInteger())
    tokens: Mapped[int] = mapped_column(sa.BigInteger())
    #: Lower bound of a chunk's length (never raised), for pruning.
    min_tokens: Mapped[int]


class FulltextPending(IntelligenceBase):
    """Chunks inserted one row per statement, counted together when their transaction commits.

    Unlogged: a row lives only inside the transaction that wrote it (a deferred trigger counts and
    deletes it at commit), so after a crash the table is rightly empty.
    """

    __tablename__ = "fulltext_pending"
    __table_args__ = {"schema": SCHEMA, "prefixes": ["UNLOGGED"]}  # noqa: RUF012

    #: The writing transaction (``pg_current_xact_id()``).
    xact: Mapped[int] = mapped_column(sa.BigInteger(), primary_key=True)
    chunk_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)


# --- chat (migration 0006) ---------------------------------------------------------------------


class MessageRole(StrEnum):
    USER = "user"
    ASSISTANT = "assistant"
    SYSTEM = "system"


class MessageStatus(StrEnum):
    IN_PROGRESS = "in_progress"
    COMPLETE = "complete"
    CANCELLED = "cancelled"
    FAILED = "failed"


_EMPTY_LIST = sa.text("'[]'::jsonb")


class Conversation(_Timestamps, IntelligenceBase):
    """A chat of one tenant (and one user, when the caller named one); ``updated_at`` moves with
    every message."""

    __tablename__ = "conversations"
    __table_args__ = (sa.Index(None, "tenant_id", "user_id", "updated_at", "id"), {"schema": SCHEMA})

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, server_default=sa.func.gen_random_uuid())
    tenant_id: Mapped[str]
    user_id: Mapped[str | None]
    title: Mapped[str] = mapped_column(server_default="")
    #: Searched when a chat turn names no collection.
    collection_ids: Mapped[list[uuid.UUID]] = mapped_column(
        ARRAY(sa.Uuid()), server_default=sa.text("'{}'::uuid[]")
    )
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", server_default=_EMPTY_JSON)


class Message(IntelligenceBase):
    """One message of a conversation; an answer also keeps its sources, citations, usage and timings."""

    __tablename__ = "messages"
    __table_args__ = (
        sa.UniqueConstraint("conversation_id", "ordinal"),
        sa.CheckConstraint(_one_of("role", MessageRole), name="role"),
        sa.CheckConstraint(_one_of("status", MessageStatus), name="status"),
        sa.Index(
            "ix_messages_in_progress",
            "created_at",
            postgresql_where=sa.text("status = 'in_progress'"),
        ),
        {"schema": SCHEMA},
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, server_default=sa.func.gen_random_uuid())
    conversation_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey(f"{SCHEMA}.conversations.id", ondelete="CASCADE")
    )
    tenant_id: Mapped[str]
    #: Position in the conversation, from 1.
    ordinal: Mapped[int]
    role: Mapped[str]
    content: Mapped[str] = mapped_column(server_default="")
    status: Mapped[str]
    finish_reason: Mapped[str | None]
    #: Every source given to the model (``NumberedSource`` as JSON), by number.
    sources: Mapped[list[dict[str, Any]]] = mapped_column(JSONB(), server_default=_EMPTY_LIST)
    #: Numbers of the sources the answer cites, in order of first citation.
    citations: Mapped[list[int]] = mapped_column(JSONB(), server_default=_EMPTY_LIST)
    llm: Mapped[str | None]
    input_tokens: Mapped[int | None]
    output_tokens: Mapped[int | None]
    error_code: Mapped[str | None]
    error_message: Mapped[str | None]
    time_to_first_token_ms: Mapped[int | None]
    total_ms: Mapped[int | None]
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", server_default=_EMPTY_JSON)
    created_at: Mapped[datetime] = mapped_column(server_default=sa.func.now())
    completed_at: Mapped[datetime | None]
