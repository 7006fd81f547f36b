"""The document ledger in PostgreSQL: upsert a document with its chunks, record failures, delete.

Every write here runs inside the caller's transaction (a worker's batch, one savepoint per
document), so readers see a document's old chunks or its new ones, never a mixture.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from opentier.db.models.intelligence import SIMHASH_BANDS, simhash_band
from opentier.engine.chunker import Chunk

DOCUMENTS = "intelligence.documents"
CHUNKS = "intelligence.chunks"
#: Largest Hamming distance between SimHashes that counts as a near-duplicate.
NEAR_DUPLICATE_BITS = 3
assert NEAR_DUPLICATE_BITS < SIMHASH_BANDS, "the band index finds hashes within SIMHASH_BANDS - 1 bits"


@dataclass(frozen=True, slots=True)
class Existing:
    """What the ledger holds for a source already."""

    id: uuid.UUID
    status: str
    content_hash: str | None
    source_hash: str | None


@dataclass(frozen=True, slots=True)
class NewVersion:
    """A document ready to be written: its identity, hashes and metadata."""

    tenant_id: str
    collection_id: uuid.UUID
    source: str
    title: str | None
    media_type: str
    content_hash: str
    source_hash: str | None
    simhash: int
    size_bytes: int | None
    job_id: uuid.UUID
    metadata: dict[str, Any]


async def existing(conn: AsyncConnection, collection_id: uuid.UUID, source: str) -> Existing | None:
    row = (
        await conn.execute(
            sa.text(
                f"SELECT id, status, content_hash, source_hash FROM {DOCUMENTS} "
                "WHERE collection_id = :collection AND source = :source"
            ),
            {"collection": collection_id, "source": source},
        )
    ).one_or_none()
    return Existing(*row) if row is not None else None


async def existing_many(
    conn: AsyncConnection, collection_id: uuid.UUID, sources: Sequence[str]
) -> dict[str, Existing | None]:
    """:func:`existing` for many sources in one query (``None`` for a source not stored)."""
    found: dict[str, Existing | None] = dict.fromkeys(sources)
    rows = await conn.execute(
        sa.text(
            f"SELECT source, id, status, content_hash, source_hash FROM {DOCUMENTS} "
            "WHERE collection_id = :collection AND source = ANY(:sources)"
        ),
        {"collection": collection_id, "sources": list(sources)},
    )
    for source, *rest in rows:
        found[source] = Existing(*rest)
    return found


async def mark_unchanged(conn: AsyncConnection, document_id: uuid.UUID, source_hash: str | None) -> None:
    """Remember the raw hash of a source found unchanged, so next time it is not even parsed."""
    await conn.execute(
        sa.text(f"UPDATE {DOCUMENTS} SET source_hash = coalesce(:source_hash, source_hash) WHERE id = :id"),
        {"id": document_id, "source_hash": source_hash},
    )


async def write(
    conn: AsyncConnection,
    version: NewVersion,
    chunks: Sequence[Chunk],
    vectors: Sequence[Sequence[float]],
    language: str,
) -> tuple[uuid.UUID, bool]:
    """Insert or replace the document and all its chunks; return (id, created)."""
    [written] = await write_many(conn, [(version, chunks, vectors)], language)
    return written


async def write_many(
    conn: AsyncConnection,
    entries: Sequence[tuple[NewVersion, Sequence[Chunk], Sequence[Sequence[float]]]],
    language: str,
) -> list[tuple[uuid.UUID, bool]]:
    """Insert or replace documents of one collection and job with their chunks, in three statements.

    All or nothing: the caller runs it in a savepoint and falls back to :func:`write` per document
    when it fails, so that one bad document cannot fail the others. Sources must be distinct.
    Returns (id, created) per entry, in order.
    """
    if not entries:
        return []
    first = entries[0][0]
    rows = await conn.execute(
        sa.text(
            f"""
            INSERT INTO {DOCUMENTS} AS d (tenant_id, collection_id, source, title, media_type,
                content_hash, source_hash, simhash, size_bytes, job_id, status, metadata, chunk_count)
            SELECT :tenant_id, :collection_id, u.source, u.title, u.media_type, u.content_hash,
                u.source_hash, u.simhash, u.size_bytes, :job_id, 'ready', CAST(u.metadata AS jsonb),
                u.chunk_count
            FROM unnest(CAST(:sources AS text[]), CAST(:titles AS text[]), CAST(:media AS text[]),
                CAST(:content AS text[]), CAST(:source_hashes AS text[]), CAST(:simhashes AS bigint[]),
                CAST(:sizes AS bigint[]), CAST(:metadata AS text[]), CAST(:counts AS integer[]))
                AS u(source, title, media_type, content_hash, source_hash, simhash, size_bytes, metadata,
                     chunk_count)
            ON CONFLICT (collection_id, source) DO UPDATE SET
                title = excluded.title, media_type = excluded.media_type,
                content_hash = excluded.content_hash, source_hash = excluded.source_hash,
                simhash = excluded.simhash, size_bytes = excluded.size_bytes,
                job_id = excluded.job_id, status = 'ready', metadata = excluded.metadata,
                chunk_count = excluded.chunk_count, error_stage = NULL, error_message = NULL,
                version = d.version + 1, updated_at = now()
            RETURNING source, id, (xmax = 0) AS created
            """
        ),
        {
            "tenant_id": first.tenant_id,
            "collection_id": first.collection_id,
            "job_id": first.job_id,
            "sources": [v.source for v, _c, _e in entries],
            "titles": [v.title for v, _c, _e in entries],
            "media": [v.media_type for v, _c, _e in entries],
            "content": [v.content_hash for v, _c, _e in entries],
            "source_hashes": [v.source_hash for v, _c, _e in entries],
            "simhashes": [v.simhash for v, _c, _e in entries],
            "sizes": [v.size_bytes for v, _c, _e in entries],
            "metadata": [json.dumps(v.metadata, default=str) for v, _c, _e in entries],
            "counts": [len(c) for _v, c, _e in entries],
        },
    )
    written = {source: (document_id, bool(created)) for source, document_id, created in rows}
    replaced = [document_id for document_id, created in written.values() if not created]
    if replaced:
        await conn.execute(sa.text(f"DELETE FROM {CHUNKS} WHERE document_id = ANY(:ids)"), {"ids": replaced})
    chunk_rows = [
        row
        for version, chunks, vectors in entries
        for row in _chunk_rows(version, written[version.source][0], chunks, vectors)
    ]
    if chunk_rows:
        # One statement for the whole batch (not executemany, which is a statement per row): the
        # statement-level triggers that keep the BM25 statistics (migration 0005) then run once.
        # Every vector in one flat real[], sent in binary (no text to format here nor to parse in
        # PostgreSQL); each row takes its slice [start, start + dims).
        embeddings: list[float] = []
        for row, vector in zip(chunk_rows, (v for _v, _c, vs in entries for v in vs), strict=True):
            row["start"] = len(embeddings) + 1
            embeddings.extend(vector)
        columns = {name: [row[name] for row in chunk_rows] for name in _CHUNK_COLUMNS}
        await conn.execute(
            _INSERT_CHUNKS,
            {
                "tenant_id": first.tenant_id,
                "collection_id": first.collection_id,
                "language": language,
                "embeddings": embeddings,
                **columns,
            },
        )
    return [written[version.source] for version, _c, _e in entries]


_CHUNK_COLUMNS = (
    "document_id",
    "ordinal",
    "text",
    "token_count",
    "heading_path",
    "page",
    "char_start",
    "char_end",
    "metadata",
    "tsv_text",
    "start",
    "dims",
)


_INSERT_CHUNKS = sa.text(
    f"""
    INSERT INTO {CHUNKS} (tenant_id, collection_id, document_id, ordinal, text, token_count,
        heading_path, page, char_start, char_end, metadata, tsv, embedding, embedding_dims)
    SELECT :tenant_id, :collection_id, u.document_id, u.ordinal, u.text, u.token_count,
        ARRAY(SELECT jsonb_array_elements_text(CAST(u.heading_path AS jsonb))), u.page, u.char_start,
        u.char_end, CAST(u.metadata AS jsonb), to_tsvector(CAST(:language AS regconfig), u.tsv_text),
        CAST((CAST(:embeddings AS real[]))[u.start : u.start + u.dims - 1] AS vector), u.dims
    FROM unnest(CAST(:document_id AS uuid[]), CAST(:ordinal AS integer[]), CAST(:text AS text[]),
        CAST(:token_count AS integer[]), CAST(:heading_path AS text[]), CAST(:page AS integer[]),
        CAST(:char_start AS integer[]), CAST(:char_end AS integer[]), CAST(:metadata AS text[]),
        CAST(:tsv_text AS text[]), CAST(:start AS integer[]), CAST(:dims AS smallint[]))
        AS u(document_id, ordinal, text, token_count, heading_path, page, char_start, char_end, metadata,
             tsv_text, start, dims)
    """
)


def _chunk_rows(
    version: NewVersion,
    document_id: uuid.UUID,
    chunks: Sequence[Chunk],
    vectors: Sequence[Sequence[float]],
) -> list[dict[str, Any]]:
    metadata = json.dumps(version.metadata, default=str)
    return [
        {
            "document_id": document_id,
            "ordinal": chunk.ordinal,
            "text": chunk.text,
            "token_count": chunk.token_count,
            # A list per row: sent as JSON text (unnest would flatten a two-dimensional array).
            "heading_path": json.dumps(list(chunk.heading_path)),
            "page": chunk.page,
            "char_start": chunk.char_start,
            "char_end": chunk.char_end,
            "metadata": (
                json.dumps({**version.metadata, "page_end": chunk.page_end}, default=str)
                if chunk.page_end != chunk.page
                else metadata
            ),
            "tsv_text": chunk.embed_text,
            "dims": len(vector),
        }
        for chunk, vector in zip(chunks, vectors, strict=True)
    ]


async def record_failure(
    conn: AsyncConnection,
    *,
    tenant_id: str,
    collection_id: uuid.UUID,
    source: str,
    job_id: uuid.UUID,
    stage: str,
    message: str,
    status: str = "failed",
) -> uuid.UUID:
    """Give the source a document row saying what failed (or why it was dropped).

    A previous good version keeps its chunks, so search goes on finding it until a re-ingest works.
    """
    row = await conn.execute(
        sa.text(
            f"""
            INSERT INTO {DOCUMENTS} AS d (tenant_id, collection_id, source, status, error_stage,
                error_message, job_id)
            VALUES (:tenant_id, :collection_id, :source, :status, :stage, :message, :job_id)
            ON CONFLICT (collection_id, source) DO UPDATE SET status = excluded.status,
                error_stage = excluded.error_stage, error_message = excluded.error_message,
                job_id = excluded.job_id, updated_at = now()
            RETURNING id
            """
        ),
        {
            "tenant_id": tenant_id,
            "collection_id": collection_id,
            "source": source,
            "status": status,
            "stage": stage,
            "message": message[:2000],
            "job_id": job_id,
        },
    )
    document_id: uuid.UUID = row.scalar_one()
    return document_id


async def delete_source(conn: AsyncConnection, collection_id: uuid.UUID, source: str) -> int:
    """Delete the document of ``source`` (its chunks go with it); return how many chunks went."""
    row = (
        await conn.execute(
            sa.text(
                f"DELETE FROM {DOCUMENTS} WHERE collection_id = :collection AND source = :source "
                "RETURNING chunk_count"
            ),
            {"collection": collection_id, "source": source},
        )
    ).one_or_none()
    return -1 if row is None else int(row[0] or 0)


async def near_duplicates(
    conn: AsyncConnection, collection_id: uuid.UUID, probes: Sequence[tuple[str, int]]
) -> dict[str, str]:
    """For each (source, SimHash) of ``probes``, the source of the oldest ready document of the
    collection, other than itself, whose SimHash is within :data:`NEAR_DUPLICATE_BITS` bits; sources
    without one are left out. One statement for a whole batch.

    Hashes within :data:`NEAR_DUPLICATE_BITS` (< :data:`SIMHASH_BANDS`) bits agree exactly on at least
    one 16-bit band, so the indexed band lookups find every candidate.
    """
    if not probes:
        return {}
    bands = " OR ".join(
        f"{simhash_band(band)} = ((q.probe >> {16 * band}) & 65535)" for band in range(SIMHASH_BANDS)
    )
    rows = await conn.execute(
        sa.text(
            f"""
            SELECT q.source, twin.source
            FROM unnest(CAST(:sources AS text[]), CAST(:probes AS bigint[])) AS q(source, probe)
            CROSS JOIN LATERAL (
                SELECT d.source FROM {DOCUMENTS} d
                WHERE d.collection_id = :collection AND d.simhash IS NOT NULL AND ({bands})
                  AND d.source <> q.source AND d.status = 'ready'
                  AND bit_count(CAST(d.simhash # q.probe AS bit(64))) <= :bits
                ORDER BY d.created_at LIMIT 1
            ) AS twin
            """
        ),
        {
            "collection": collection_id,
            "sources": [source for source, _hash in probes],
            "probes": [simhash for _source, simhash in probes],
            "bits": NEAR_DUPLICATE_BITS,
        },
    )
    return {str(source): str(twin) for source, twin in rows}
