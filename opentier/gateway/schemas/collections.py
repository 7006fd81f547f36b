"""Collections: named sets of documents searched together."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from opentier.gateway.schemas.common import dict_of, time_of
from opentier.generated.intelligence.v1 import collections_pb2


class CollectionCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200, description="Unique within your tenant.")
    description: str | None = Field(default=None, max_length=10_000)
    metadata: dict[str, Any] | None = Field(default=None, description="Free-form JSON object.")
    embedder: str | None = Field(
        default=None,
        max_length=200,
        description="Embedder component that indexes it (fixed for good); default: the configured one.",
    )


class CollectionUpdate(BaseModel):
    """Only the fields present change; `metadata` replaces the whole object."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=10_000)
    metadata: dict[str, Any] | None = None


class Collection(BaseModel):
    id: str
    name: str
    description: str
    metadata: dict[str, Any]
    embedder: str = Field(description="Embedder component that indexed the collection.")
    dimensions: int = Field(description="Size of the collection's vectors.")
    document_count: int
    chunk_count: int
    created_at: datetime | None
    updated_at: datetime | None

    @classmethod
    def from_pb(cls, message: collections_pb2.Collection) -> Collection:
        return cls(
            id=message.id,
            name=message.name,
            description=message.description,
            metadata=dict_of(message.metadata),
            embedder=message.embedder,
            dimensions=message.dimensions,
            document_count=message.document_count,
            chunk_count=message.chunk_count,
            created_at=time_of(message, "created_at"),
            updated_at=time_of(message, "updated_at"),
        )


class CollectionList(BaseModel):
    collections: list[Collection] = Field(description="Ordered by name.")
    next_page_token: str | None = Field(
        description="Pass as `page_token` for the next page; null on the last."
    )


class CollectionDeleted(BaseModel):
    documents_deleted: int
    chunks_deleted: int
