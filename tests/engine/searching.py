"""A search test bench: real ingestion into the real PostgreSQL, then the real Search.

:class:`Bench` ingests records (text, title, metadata) through the ingestion engine with the test
embedder, so what search finds is what a user's ingest would have stored. Retrievers come from the
installed plugin distributions named in ``RETRIEVER_PLUGINS``; :class:`Keyword` is a stand-in
second retriever (substring match) for fusion tests.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from opentier import hookimpl
from opentier.components import Embedder, Reranker, Retriever, SearchHit, SearchQuery
from opentier.config import IngestionSettings, RetrievalSettings
from opentier.engine.collections import CollectionInfo, Collections
from opentier.engine.jobs import Ingestion, ItemSpec, JobOptions
from opentier.engine.search import Search
from opentier.plugin_manager import PluginSelection, PluginSystem, load_plugins
from opentier.retrieval import RetrievalContext

from .helpers import HashEmbedder, plugin

#: The built-in retrieval plugins (entry-point names) a search test loads.
RETRIEVER_PLUGINS = ["vector", "fulltext", "hybrid", "diversify"]


@dataclass(frozen=True)
class Record:
    source: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)
    title: str | None = None


class Keyword(Retriever):
    """Stand-in retriever for tests: chunks whose text contains the query's words, in scope."""

    name = "keyword"

    async def retrieve(self, query: SearchQuery, context: RetrievalContext) -> Sequence[SearchHit]:
        scope = context.scope_sql("k")
        words = [word.lower() for word in query.text.split()]
        hits_sql = " + ".join(f"(position(:w{i} in lower(k.text)) > 0)::int" for i in range(len(words)))
        statement = sa.text(
            f"SELECT k.id, {hits_sql} AS hits FROM intelligence.chunks k WHERE {scope.sql} "
            f"AND {hits_sql} > 0 ORDER BY hits DESC, k.id LIMIT :k"
        )
        params = {**scope.params, **{f"w{i}": word for i, word in enumerate(words)}, "k": query.top_k}
        async with context.engine.connect() as conn:
            rows = (await conn.execute(statement, params)).all()
        return [SearchHit(chunk_id=str(row.id), score=float(row.hits)) for row in rows]


class Leaky(Retriever):
    """A faulty retriever that forgets the scope: every chunk whose text contains the query."""

    name = "leaky"

    async def retrieve(self, query: SearchQuery, context: RetrievalContext) -> Sequence[SearchHit]:
        statement = sa.text("SELECT id FROM intelligence.chunks WHERE position(:q in text) > 0 LIMIT :k")
        async with context.engine.connect() as conn:
            rows = (await conn.execute(statement, {"q": query.text, "k": query.top_k})).all()
        return [SearchHit(chunk_id=str(row.id), score=1.0) for row in rows]


class Reverse(Reranker):
    """Stand-in reranker: the candidates in reverse order."""

    name = "reverse"

    async def rerank(
        self, query: SearchQuery, hits: Sequence[SearchHit], context: RetrievalContext
    ) -> Sequence[SearchHit]:
        return list(reversed(hits))


class SmallHashEmbedder(HashEmbedder):
    """Another embedder (16 dimensions), for collections that cannot be searched together."""

    name = "test-hash-16"
    dimensions = 16


def stand_ins() -> object:
    @hookimpl
    def register_embedders(register: Callable[[Embedder], None]) -> None:
        register(SmallHashEmbedder())

    @hookimpl
    def register_retrievers(register: Callable[[Retriever], None]) -> None:
        register(Keyword())
        register(Leaky())

    @hookimpl
    def register_rerankers(register: Callable[[Reranker], None]) -> None:
        register(Reverse())

    return SimpleNamespace(
        register_embedders=register_embedders,
        register_retrievers=register_retrievers,
        register_rerankers=register_rerankers,
    )


class Bench:
    """Collections, ingestion and search over one plugin system; each test makes its own tenants."""

    def __init__(self, engine: AsyncEngine, plugins: PluginSystem, embedder: HashEmbedder) -> None:
        self.engine = engine
        self.plugins = plugins
        self.embedder = embedder
        self.collections = Collections(engine, plugins.registry, embedder.name)
        settings = IngestionSettings(
            embedder=embedder.name,
            cleaners=["whitespace"],
            chunk_tokens=64,
            chunk_overlap_tokens=8,
            workers=1,
            near_duplicates="off",
        )
        self.ingestion = Ingestion(engine, settings, plugins.registry, self.collections)

    @staticmethod
    def tenant() -> str:
        return f"tenant-{uuid.uuid4().hex[:10]}"

    def search(self, **settings: Any) -> Search:
        return Search(self.engine, self.plugins.registry, RetrievalSettings(**settings), self.collections)

    async def collection(self, tenant: str, name: str = "docs", **options: Any) -> CollectionInfo:
        return await self.collections.create(tenant, name, **options)

    async def add(self, collection: CollectionInfo, records: Sequence[Record]) -> None:
        items = [
            ItemSpec(
                "text",
                record.source,
                payload=record.text.encode(),
                details={"title": record.title, "metadata": record.metadata},
            )
            for record in records
        ]
        job = await self.ingestion.create_job(
            collection.tenant_id, collection.id, {"stream": True}, JobOptions(), items
        )
        done = await asyncio.wait_for(self.ingestion.wait(collection.tenant_id, job.id), 60)
        assert done.status == "succeeded", done
        assert done.counts.failed == 0, done


async def open_bench(engine: AsyncEngine) -> Bench:
    """A bench with the built-in retrieval plugins, the test embedders and the stand-ins, started."""
    embedder = HashEmbedder()
    plugins = load_plugins(
        selection=PluginSelection(allow=["text", "basic-cleaners", *RETRIEVER_PLUGINS]),
        extra=[("test", plugin(embedder)), ("stand-ins", stand_ins())],
    )
    bench = Bench(engine, plugins, embedder)
    await bench.ingestion.start()
    return bench


def query(
    collection: CollectionInfo | None, text: str, tenant: str | None = None, **fields: Any
) -> SearchQuery:
    """A SearchQuery in ``collection`` (or all of ``tenant``'s collections)."""
    assert collection is not None or tenant is not None
    return SearchQuery(
        text=text,
        tenant_id=tenant or (collection.tenant_id if collection else ""),
        collection_ids=[str(collection.id)] if collection is not None else [],
        **fields,
    )
