"""Documents: what ingestion stored in a tenant's collections, listed, read and deleted.

Lists are ordered by source (then id), the order a person scans a folder in, with keyset
pagination, so a page never repeats or skips a document while others are added. Rows with status
``deleted`` are treated as gone everywhere.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from opentier.db.models.intelligence import Chunk, Collection, Document, DocumentStatus
from opentier.engine.collections import parse_id
from opentier.engine.pagination import Page, decode_token, encode_token
from opentier.errors import InvalidRequestError, NotFoundError

#: Metadata keys a paged-format loader may use for the number of pages (first found wins).
PAGE_COUNT_KEYS = ("page_count", "pages")
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
LISTED_STATUSES = frozenset(status.value for status in DocumentStatus) - {DocumentStatus.DELETED.value}


@dataclass(frozen=True, slots=True)
class DocumentInfo:
    id: uuid.UUID
    tenant_id: str
    collection_id: uuid.UUID
    source: str
    title: str | None
    media_type: str | None
    #: pending, processing, ready, failed or skipped (a cleaner dropped it).
    status: str
    #: load, clean, chunk, embed or store, when status is failed (clean when skipped).
    error_stage: str | None
    error_message: str | None
    content_hash: str | None
    version: int
    size_bytes: int | None
    chunk_count: int
    metadata: dict[str, Any]
    job_id: uuid.UUID | None
    created_at: datetime
    updated_at: datetime

    @property
    def page_count(self) -> int | None:
        """Pages of a paged format, when the loader recorded them in the metadata."""
        for key in PAGE_COUNT_KEYS:
            value = self.metadata.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
                return int(value)
        return None

    @property
    def indexed_at(self) -> datetime | None:
        """When the current version became searchable (only known while the document is ready).

        Only a successful write sets status ``ready`` and ``updated_at`` together; a later failure
        keeps the old chunks searchable but moves ``updated_at``, so it is unknown then.
        """
        return self.updated_at if self.status == DocumentStatus.READY else None


class Documents:
    """List, read and delete documents, always within one tenant."""

    def __init__(self, db: AsyncEngine) -> None:
        self.db = db

    async def list(
        self,
        tenant_id: str,
        *,
        collection_id: uuid.UUID | str | None = None,
        statuses: Sequence[str] = (),
        page_size: int = DEFAULT_PAGE_SIZE,
        page_token: str = "",
    ) -> Page[DocumentInfo]:
        """Documents ordered by source; ``collection_id`` empty means every collection of the tenant."""
        size = max(1, min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE))
        unknown = sorted(set(statuses) - LISTED_STATUSES)
        if unknown:
            known = ", ".join(sorted(LISTED_STATUSES))
            raise InvalidRequestError(f"unknown document status {', '.join(unknown)}; choose from {known}")
        query = sa.select(Document.__table__).where(
            _scope(tenant_id), Document.status.in_(sorted(set(statuses) or LISTED_STATUSES))
        )
        if collection_id:
            key = parse_id(collection_id, "collection")
            await self._check_collection(tenant_id, key)
            query = query.where(Document.collection_id == key)
        if page_token:
            after_source, after_id = decode_token(page_token, 2)
            query = query.where(sa.tuple_(Document.source, Document.id) > (after_source, _token_id(after_id)))
        query = query.order_by(Document.source, Document.id).limit(size + 1)
        async with self.db.connect() as conn:
            rows = (await conn.execute(query)).all()
        items = [_info(row) for row in rows[:size]]
        token = encode_token(items[-1].source, str(items[-1].id)) if len(rows) > size else ""
        return Page(items, token)

    async def get(self, tenant_id: str, document_id: uuid.UUID | str) -> DocumentInfo:
        key = parse_id(document_id, "document")
        async with self.db.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(Document.__table__).where(
                        _scope(tenant_id), Document.id == key, Document.status != DocumentStatus.DELETED
                    )
                )
            ).one_or_none()
        if row is None:
            raise NotFoundError(f"document {document_id} does not exist")
        return _info(row)

    async def delete(self, tenant_id: str, document_id: uuid.UUID | str) -> int:
        """Delete the document and (by cascade) its chunks at once; return how many chunks went."""
        key = parse_id(document_id, "document")
        async with self.db.begin() as conn:
            # The row lock waits for a worker that is rewriting the document right now.
            found = await conn.scalar(
                sa.select(Document.id)
                .where(_scope(tenant_id), Document.id == key, Document.status != DocumentStatus.DELETED)
                .with_for_update()
            )
            if found is None:
                raise NotFoundError(f"document {document_id} does not exist")
            chunks = await conn.scalar(
                sa.select(sa.func.count()).select_from(Chunk).where(Chunk.document_id == key)
            )
            await conn.execute(sa.delete(Document).where(Document.id == key))
        return int(chunks or 0)

    async def _check_collection(self, tenant_id: str, collection_id: uuid.UUID) -> None:
        async with self.db.connect() as conn:
            found = await conn.scalar(
                sa.select(Collection.id).where(
                    Collection.tenant_id == tenant_id, Collection.id == collection_id
                )
            )
        if found is None:
            raise NotFoundError(f"collection {collection_id} does not exist")


def _scope(tenant_id: str) -> sa.ColumnElement[bool]:
    if not tenant_id:
        raise InvalidRequestError("the caller has no tenant")
    return Document.tenant_id == tenant_id


def _token_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise InvalidRequestError("the page token is not one this server issued") from None


def _info(row: sa.Row[Any]) -> DocumentInfo:
    data = row._mapping
    return DocumentInfo(
        id=data["id"],
        tenant_id=data["tenant_id"],
        collection_id=data["collection_id"],
        source=data["source"],
        title=data["title"],
        media_type=data["media_type"],
        status=data["status"],
        error_stage=data["error_stage"],
        error_message=data["error_message"],
        content_hash=data["content_hash"],
        version=int(data["version"]),
        size_bytes=data["size_bytes"],
        chunk_count=int(data["chunk_count"] or 0),
        metadata=dict(data["metadata"] or {}),
        job_id=data["job_id"],
        created_at=data["created_at"],
        updated_at=data["updated_at"],
    )
