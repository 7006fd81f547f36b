"""Search: a query within one tenant → the retriever → an optional reranker → complete, cited hits.

The host resolves the request into a :class:`SearchContext` (the tenant's collections, all bound
to one embedder, and the compiled metadata filter) before any plugin runs, so a retriever cannot
read outside the caller's tenant as long as it includes ``context.scope_sql(alias)``. Hits come
back from the retriever with a chunk id and a score; the text, document, source, title, heading
path, page and span a citation needs are filled in by one tenant-scoped query at the end.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from opentier.components import ComponentKind, Embedder, Reranker, Retriever, SearchHit, SearchQuery
from opentier.config import RetrievalSettings
from opentier.db.models.intelligence import Collection
from opentier.engine.coalesce import Coalescer
from opentier.engine.collections import CollectionInfo, Collections, parse_id
from opentier.engine.filters import compile_filter
from opentier.errors import InvalidRequestError, NotFoundError
from opentier.registry import Registry
from opentier.retrieval import RetrievalContext, ScopedCollection, SqlFragment

#: Longest query text, in characters: a search query, not a document.
MAX_QUERY_CHARS = 4096
_ALIAS = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


class SearchContext(RetrievalContext):
    """The resolved scope of one search: tenant, collections (one embedder), filter, query embedding."""

    def __init__(
        self,
        *,
        engine: AsyncEngine,
        settings: RetrievalSettings,
        registry: Registry,
        tenant_id: str,
        collections: Sequence[ScopedCollection],
        query: SearchQuery,
        embedder: Embedder,
        embed_query: Callable[[str], Awaitable[list[float]]],
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.tenant_id = tenant_id
        self.collections = tuple(collections)
        #: The query with its collections resolved (all of the tenant's when it named none).
        self.query = query
        self._registry = registry
        self._embedder = embedder
        #: The query embedding, made with the concurrent searches' queries (see engine/coalesce.py).
        self._embed_query = embed_query
        compile_filter(query.filters, "c")  # refuse a bad filter before any retriever runs
        self._embedding: list[float] | None = None
        # Concurrent parts of a fusion retriever wait for one embedding call instead of making two.
        self._embedding_lock = asyncio.Lock()

    def scope_sql(self, alias: str) -> SqlFragment:
        if not _ALIAS.fullmatch(alias):
            raise ValueError(f"{alias!r} is not an SQL alias (letters, digits and _)")
        condition = compile_filter(self.query.filters, alias, prefix=f"{alias.lower()}_flt")
        tenant, ids = f"{alias.lower()}_scope_tenant", f"{alias.lower()}_scope_collections"
        sql = f"{alias}.tenant_id = :{tenant} AND {alias}.collection_id = ANY(CAST(:{ids} AS uuid[]))"
        if condition.sql != "TRUE":
            sql = f"{sql} AND {condition.sql}"
        params = {tenant: self.tenant_id, ids: [uuid.UUID(c.id) for c in self.collections]}
        return SqlFragment(sql, {**params, **condition.params})

    async def query_embedding(self) -> Sequence[float]:
        async with self._embedding_lock:
            if self._embedding is None:
                self._embedding = await self._embed()
            return self._embedding

    async def _embed(self) -> list[float]:
        dims = self.collections[0].dimensions
        given = self.query.embedding
        if given is not None:
            if len(given) != dims:
                raise InvalidRequestError(
                    f"the query embedding has {len(given)} dimensions; the collections' embedder "
                    f"{self._embedder.name!r} makes {dims}"
                )
            return [float(v) for v in given]
        if not self.query.text.strip():
            raise InvalidRequestError("the query is empty")
        return [float(v) for v in await self._embed_query(self.query.text)]

    def retriever(self, name: str) -> Retriever:
        return _retriever(self._registry, name)


class Search:
    """Runs searches for the host: scoping, the chosen retriever and reranker, and hydration."""

    def __init__(
        self, engine: AsyncEngine, registry: Registry, settings: RetrievalSettings, collections: Collections
    ) -> None:
        self.engine = engine
        self.registry = registry
        self.settings = settings
        self.collections = collections
        #: Per embedder (by name): the query embeddings of concurrent searches, made in batches.
        self._coalescers: dict[str, Coalescer] = {}

    async def search(
        self, query: SearchQuery, *, retriever: str | None = None, reranker: str | None = None
    ) -> list[SearchHit]:
        """The best ``query.top_k`` hits (clamped to ``retrieval.max_top_k``), best first, complete."""
        top_k = self.top_k(query.top_k)
        finder = self.retriever(retriever)
        ranker = self.reranker(reranker)
        depth = max(top_k, self.settings.rerank_candidates) if ranker is not None else top_k
        context = await self.context(dataclasses.replace(query, top_k=depth))
        if context is None:
            return []
        hits = list(await finder.retrieve(context.query, context))[:depth]
        hits = await self.hydrate(context, hits)
        if ranker is not None:
            hits = list(await ranker.rerank(context.query, hits, context))
        return hits[:top_k]

    async def context(self, query: SearchQuery) -> SearchContext | None:
        """The resolved scope of ``query``, or None when the tenant has no collection to search.

        Checks the query, resolves the collections within the tenant, refuses a mix of embedders and
        compiles the filter, so every refusal happens before a retriever runs. The context's
        ``query`` names the resolved collection ids.
        """
        if len(query.text) > MAX_QUERY_CHARS:
            raise InvalidRequestError(f"the query has more than {MAX_QUERY_CHARS} characters")
        if not query.text.strip() and query.embedding is None:
            raise InvalidRequestError("the query is empty: give its text")
        compile_filter(query.filters, "c")  # a bad filter is refused even where nothing would match
        scope = await self.resolve(query.tenant_id, query.collection_ids)
        if not scope:
            return None
        embedder = self._embedder(scope)
        scoped = [_scoped(info) for info in scope]
        return SearchContext(
            engine=self.engine,
            settings=self.settings,
            registry=self.registry,
            tenant_id=query.tenant_id,
            collections=scoped,
            query=dataclasses.replace(query, collection_ids=[c.id for c in scoped]),
            embedder=embedder,
            embed_query=self._coalescer(embedder).embed_one,
        )

    def _coalescer(self, embedder: Embedder) -> Coalescer:
        """The query-embedding batcher of ``embedder`` (one per embedder, made at its first search)."""
        found = self._coalescers.get(embedder.name)
        if found is None:
            found = self._coalescers[embedder.name] = Coalescer(embedder.embed)
        return found

    def top_k(self, requested: int) -> int:
        """The number of hits to return: the default for 0, at most ``retrieval.max_top_k``."""
        if requested < 0:
            raise InvalidRequestError(f"top_k must be 0 (the default) or more, not {requested}")
        return min(requested or self.settings.top_k, self.settings.max_top_k)

    def retriever(self, name: str | None) -> Retriever:
        """The named retriever, else the configured one; unknown names list what is installed."""
        return _retriever(self.registry, name or self.settings.retriever)

    def reranker(self, name: str | None) -> Reranker | None:
        """The named reranker, else the configured one, else none."""
        chosen = name or self.settings.reranker
        if not chosen or chosen == "none":
            return None
        component = self.registry.get(ComponentKind.RERANKER, chosen)
        assert isinstance(component, Reranker)
        return component

    async def resolve(self, tenant_id: str, collection_ids: Sequence[str]) -> list[CollectionInfo]:
        """The tenant's collections the query names (all of them, by name, when it names none).

        An id that does not exist and one of another tenant give the same NotFoundError. One light
        query: the document and chunk counts of :meth:`Collections.get` are not computed (left 0).
        """
        if not tenant_id:
            raise InvalidRequestError("the caller has no tenant")
        keys = list(dict.fromkeys(parse_id(key, "collection") for key in collection_ids))
        query = sa.select(Collection.__table__).where(Collection.tenant_id == tenant_id)
        if keys:
            query = query.where(Collection.id.in_(keys))
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query.order_by(Collection.name, Collection.id))).all()
        found = {str(row.id): _collection_info(row) for row in rows}
        for key in keys:
            if str(key) not in found:
                raise NotFoundError(f"collection {key} does not exist")
        return list(found.values()) if not keys else [found[str(key)] for key in keys]

    def _embedder(self, scope: Sequence[CollectionInfo]) -> Embedder:
        bindings = {(c.embedder, c.embedder_version, c.dimensions) for c in scope}
        if len(bindings) > 1:
            described = "; ".join(
                f"{c.name!r}: {c.embedder} version {c.embedder_version} ({c.dimensions} dimensions)"
                for c in scope
            )
            raise InvalidRequestError(
                f"these collections are embedded by different embedders and cannot be searched "
                f"together ({described}); search them one embedder at a time"
            )
        return self.collections.embedder_for(scope[0])

    async def hydrate(self, context: SearchContext, hits: Sequence[SearchHit]) -> list[SearchHit]:
        """Fill what citations need into hits that lack it, with one query inside the search's scope.

        A hit whose chunk is no longer in scope (deleted meanwhile, or returned by a faulty plugin)
        is dropped.
        """
        missing = [hit.chunk_id for hit in hits if not _complete(hit)]
        rows: Mapping[str, Mapping[str, Any]] = {}
        if missing:
            scope = context.scope_sql("c")
            query = sa.text(
                "SELECT c.id, c.document_id, c.collection_id, c.text, c.heading_path, c.page, "
                "c.char_start, c.char_end, c.metadata, d.source, d.title "
                "FROM intelligence.chunks c JOIN intelligence.documents d ON d.id = c.document_id "
                f"WHERE c.id = ANY(CAST(:hydrate_ids AS uuid[])) AND {scope.sql}"
            )
            params = {**scope.params, "hydrate_ids": [_uuid(key) for key in missing]}
            async with self.engine.connect() as conn:
                result = await conn.execute(query, params)
                rows = {str(row.id): dict(row._mapping) for row in result}
        complete: list[SearchHit] = []
        seen: set[str] = set()
        for hit in hits:
            if hit.chunk_id in seen:
                continue
            seen.add(hit.chunk_id)
            if _complete(hit):
                complete.append(hit)
            elif (row := rows.get(hit.chunk_id)) is not None:
                complete.append(_filled(hit, row))
        return complete


def _retriever(registry: Registry, name: str) -> Retriever:
    component = registry.get(ComponentKind.RETRIEVER, name)
    assert isinstance(component, Retriever)
    return component


def _scoped(info: CollectionInfo) -> ScopedCollection:
    return ScopedCollection(
        id=str(info.id),
        name=info.name,
        language=info.language,
        embedder=info.embedder,
        embedder_version=info.embedder_version,
        dimensions=info.dimensions,
    )


def _collection_info(row: sa.Row[Any]) -> CollectionInfo:
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
        document_count=0,
        chunk_count=0,
        created_at=data["created_at"],
        updated_at=data["updated_at"],
    )


def _complete(hit: SearchHit) -> bool:
    return bool(hit.text and hit.document_id and hit.collection_id and hit.source)


def _uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def _filled(hit: SearchHit, row: Mapping[str, Any]) -> SearchHit:
    return dataclasses.replace(
        hit,
        chunk_id=str(row["id"]),
        document_id=str(row["document_id"]),
        collection_id=str(row["collection_id"]),
        text=row["text"],
        source=row["source"],
        title=row["title"],
        heading_path=tuple(row["heading_path"] or ()),
        page=row["page"],
        char_start=row["char_start"],
        char_end=row["char_end"],
        metadata=dict(row["metadata"] or {}),
    )
