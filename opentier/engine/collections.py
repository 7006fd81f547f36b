"""Collections: a tenant's named sets of documents, each bound to one embedder for life.

The binding (embedder name, version, dimensions) is what keeps vectors of different embedders from
ever mixing: ingestion and search refuse a collection whose embedder is missing or has changed.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from opentier.components import ComponentKind, Embedder
from opentier.db.models.intelligence import Chunk, Collection, Document
from opentier.db.vector_index import ensure_vector_index
from opentier.engine.pagination import Page, decode_token, encode_token
from opentier.errors import AlreadyExistsError, InvalidRequestError, NotFoundError, OpenTierError
from opentier.registry import Registry

NAME_MAX = 200


class EmbedderChangedError(OpenTierError):
    """The collection's embedder is missing, or its vectors would differ from the stored ones."""

    code = "embedder_changed"
    grpc_status = "FAILED_PRECONDITION"


@dataclass(frozen=True, slots=True)
class CollectionInfo:
    id: uuid.UUID
    tenant_id: str
    name: str
    description: str | None
    metadata: dict[str, Any]
    embedder: str
    embedder_version: str
    dimensions: int
    language: str
    document_count: int
    chunk_count: int
    created_at: datetime
    updated_at: datetime


class Collections:
    """Create, read, list, rename and delete collections, always within one tenant."""

    def __init__(self, db: AsyncEngine, registry: Registry, default_embedder: str) -> None:
        self.db = db
        self.registry = registry
        self.default_embedder = default_embedder

    async def create(
        self,
        tenant_id: str,
        name: str,
        *,
        description: str | None = None,
        metadata: dict[str, Any] | None = None,
        embedder: str | None = None,
        language: str = "english",
    ) -> CollectionInfo:
        name = _check_name(name)
        component = self.registry.get(ComponentKind.EMBEDDER, embedder or self.default_embedder)
        assert isinstance(component, Embedder)
        async with self.db.begin() as conn:
            await _check_language(conn, language)
            await ensure_vector_index(conn, component.dimensions)
            try:
                async with conn.begin_nested():
                    row = await conn.execute(
                        sa.insert(Collection)
                        .values(
                            tenant_id=tenant_id,
                            name=name,
                            description=description,
                            settings=metadata or {},
                            embedder=component.name,
                            embedder_version=component.version,
                            embedding_dims=component.dimensions,
                            language=language,
                        )
                        .returning(Collection.id)
                    )
            except IntegrityError:
                raise AlreadyExistsError(f"a collection named {name!r} exists already") from None
            collection_id = row.scalar_one()
        return await self.get(tenant_id, collection_id)

    async def get(self, tenant_id: str, collection_id: uuid.UUID | str) -> CollectionInfo:
        key = parse_id(collection_id, "collection")
        async with self.db.connect() as conn:
            rows = await conn.execute(_select_with_counts().where(_scope(tenant_id), Collection.id == key))
            row = rows.one_or_none()
        if row is None:
            raise NotFoundError(f"collection {collection_id} does not exist")
        return _info(row)

    async def get_by_name(self, tenant_id: str, name: str) -> CollectionInfo:
        async with self.db.connect() as conn:
            rows = await conn.execute(_select_with_counts().where(_scope(tenant_id), Collection.name == name))
            row = rows.one_or_none()
        if row is None:
            raise NotFoundError(f"no collection named {name!r}")
        return _info(row)

    async def list(self, tenant_id: str, page_size: int = 50, page_token: str = "") -> Page[CollectionInfo]:
        size = max(1, min(page_size or 50, 500))
        query = _select_with_counts().where(_scope(tenant_id)).order_by(Collection.name, Collection.id)
        if page_token:
            after_name, after_id = decode_token(page_token, 2)
            query = query.where(sa.tuple_(Collection.name, Collection.id) > (after_name, uuid.UUID(after_id)))
        async with self.db.connect() as conn:
            rows = (await conn.execute(query.limit(size + 1))).all()
        items = [_info(row) for row in rows[:size]]
        token = encode_token(items[-1].name, str(items[-1].id)) if len(rows) > size else ""
        return Page(items, token)

    async def update(
        self,
        tenant_id: str,
        collection_id: uuid.UUID | str,
        *,
        name: str | None = None,
        description: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> CollectionInfo:
        key = parse_id(collection_id, "collection")
        values: dict[str, Any] = {}
        if name is not None:
            values["name"] = _check_name(name)
        if description is not None:
            values["description"] = description
        if metadata is not None:
            values["settings"] = metadata
        if values:
            async with self.db.begin() as conn:
                try:
                    result = await conn.execute(
                        sa.update(Collection)
                        .where(_scope(tenant_id), Collection.id == key)
                        .values(**values, updated_at=sa.func.now())
                    )
                except IntegrityError:
                    raise AlreadyExistsError(f"a collection named {name!r} exists already") from None
                if result.rowcount == 0:
                    raise NotFoundError(f"collection {collection_id} does not exist")
        return await self.get(tenant_id, key)

    async def delete(self, tenant_id: str, collection_id: uuid.UUID | str) -> tuple[int, int]:
        """Delete the collection with its documents, chunks and jobs; return (documents, chunks)."""
        key = parse_id(collection_id, "collection")
        async with self.db.begin() as conn:
            documents = await conn.scalar(
                sa.select(sa.func.count()).select_from(Document).where(Document.collection_id == key)
            )
            chunks = await conn.scalar(
                sa.select(sa.func.count()).select_from(Chunk).where(Chunk.collection_id == key)
            )
            result = await conn.execute(sa.delete(Collection).where(_scope(tenant_id), Collection.id == key))
            if result.rowcount == 0:
                raise NotFoundError(f"collection {collection_id} does not exist")
        return int(documents or 0), int(chunks or 0)

    def embedder_for(self, collection: CollectionInfo) -> Embedder:
        """The collection's embedder, refusing one whose vectors would not match the stored ones."""
        found = self.registry.names(ComponentKind.EMBEDDER)
        if collection.embedder not in found:
            raise EmbedderChangedError(
                f"collection {collection.name!r} is embedded by {collection.embedder!r}, which is not "
                f"installed (available: {', '.join(found) or 'none'})"
            )
        embedder = self.registry.get(ComponentKind.EMBEDDER, collection.embedder)
        assert isinstance(embedder, Embedder)
        if (embedder.version, embedder.dimensions) != (collection.embedder_version, collection.dimensions):
            raise EmbedderChangedError(
                f"collection {collection.name!r} was embedded by {collection.embedder} version "
                f"{collection.embedder_version} ({collection.dimensions} dimensions); the installed one "
                f"is version {embedder.version} ({embedder.dimensions} dimensions): create a new "
                f"collection and ingest again"
            )
        return embedder


def parse_id(value: uuid.UUID | str, what: str) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(value)
    except (ValueError, TypeError):
        raise InvalidRequestError(f"{what} id {value!r} is not a valid id") from None


def _scope(tenant_id: str) -> sa.ColumnElement[bool]:
    if not tenant_id:
        raise InvalidRequestError("the caller has no tenant")
    return Collection.tenant_id == tenant_id


def _check_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > NAME_MAX:
        raise InvalidRequestError(f"a collection name must have 1 to {NAME_MAX} characters")
    return name


async def _check_language(conn: AsyncConnection, language: str) -> None:
    known = await conn.scalar(
        sa.text("SELECT count(*) FROM pg_ts_config WHERE cfgname = :name"), {"name": language}
    )
    if not known:
        names = (await conn.execute(sa.text("SELECT cfgname FROM pg_ts_config ORDER BY 1"))).scalars()
        raise InvalidRequestError(f"unknown text-search language {language!r}; available: {', '.join(names)}")


def _select_with_counts() -> sa.Select[Any]:
    documents = (
        sa.select(sa.func.count())
        .where(Document.collection_id == Collection.id, Document.status == "ready")
        .scalar_subquery()
    )
    chunks = sa.select(sa.func.count()).where(Chunk.collection_id == Collection.id).scalar_subquery()
    table = Collection.__table__
    return sa.select(table, documents.label("document_count"), chunks.label("chunk_count"))


def _info(row: sa.Row[Any]) -> CollectionInfo:
    data = row._mapping
    return CollectionInfo(
        id=data["id"],
        tenant_id=data["tenant_id"],
        name=data["name"],
        description=data["description"],
        metadata=dict(data["settings"]),
        embedder=data["embedder"],
        embedder_version=data["embedder_version"],
        dimensions=data["embedding_dims"],
        language=data["language"],
        document_count=int(data["document_count"]),
        chunk_count=int(data["chunk_count"]),
        created_at=data["created_at"],
        updated_at=data["updated_at"],
    )
