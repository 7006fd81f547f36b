"""One evaluation run: a judged collection ingested into a scratch collection, every query searched.

The documents go through the real ingestion engine (streamed records, the configured cleaners,
chunker and embedder) and the queries through the real :class:`~opentier.engine.search.Search`, so
the figures are those of what users get. The scratch collection lives in a tenant of its own, and
is deleted at the end unless it is kept for a look.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from opentier.components import SearchQuery
from opentier.config import Settings
from opentier.engine.collections import CollectionInfo, Collections
from opentier.engine.datasets.judged import JudgedCollection, JudgedDocument
from opentier.engine.evaluation import Metrics, evaluate, unique
from opentier.engine.jobs import Ingestion, ItemSpec, JobCounts, JobOptions
from opentier.engine.search import Search
from opentier.errors import OpenTierError
from opentier.registry import Registry

#: Documents per batch of items added to the streaming job.
ITEM_BATCH = 500
POLL_SECONDS = 0.5
#: Documents ranked per query: the depth of recall@100.
DEFAULT_DEPTH = 100
#: Chunks asked for per ranked document: a long document has several chunks, and the metrics rank
#: documents, so a search asks for more chunks than the documents it must rank.
CHUNKS_PER_DOCUMENT = 2

#: ``progress(stage, done, total)``: called as each stage advances (total ``None`` while unknown).
ProgressCallback = Callable[[str, int, int | None], None]


def _silent(stage: str, done: int, total: int | None) -> None:
    return None


class EvaluationError(OpenTierError):
    """The scratch collection could not be indexed, so the figures would mean nothing."""

    code = "evaluation_failed"
    grpc_status = "FAILED_PRECONDITION"


@dataclass(frozen=True, slots=True)
class Ingested:
    """How the documents went into the scratch collection."""

    documents: int
    empty: int
    counts: JobCounts
    seconds: float


@dataclass(frozen=True, slots=True)
class RetrieverRun:
    """One retriever's figures: quality and per-query search latency (query embedding excluded)."""

    retriever: str
    metrics: Metrics
    latencies: Sequence[float]
    seconds: float

    @property
    def p50_ms(self) -> float:
        return percentile(self.latencies, 50) * 1000

    @property
    def p95_ms(self) -> float:
        return percentile(self.latencies, 95) * 1000

    def as_dict(self) -> dict[str, Any]:
        return {
            "retriever": self.retriever,
            **self.metrics.as_dict(),
            "p50_ms": round(self.p50_ms, 3),
            "p95_ms": round(self.p95_ms, 3),
            "seconds": round(self.seconds, 3),
        }


@dataclass(slots=True)
class EvalReport:
    dataset: JudgedCollection
    tenant_id: str
    collection: CollectionInfo
    graded: bool
    #: Documents ranked per query, and chunks asked for to rank them.
    depth: int
    chunks: int
    ingested: Ingested | None = None
    #: Seconds to embed each query alone with the collection's embedder.
    embedding_latencies: Sequence[float] = ()
    runs: list[RetrieverRun] = field(default_factory=list)
    kept: bool = False

    def as_dict(self) -> dict[str, Any]:
        ingested = self.ingested
        return {
            "dataset": {
                "name": self.dataset.name,
                "layout": self.dataset.layout,
                "path": str(self.dataset.path),
                "queries": len(self.dataset.queries),
                "notes": list(self.dataset.notes),
            },
            "relevance": "graded" if self.graded else "binary",
            "depth": self.depth,
            "chunks_per_query": self.chunks,
            "ingestion": None
            if ingested is None
            else {
                "documents": ingested.documents,
                "empty_skipped": ingested.empty,
                "indexed": ingested.counts.created + ingested.counts.updated + ingested.counts.unchanged,
                "dropped": ingested.counts.dropped,
                "failed": ingested.counts.failed,
                "chunks": ingested.counts.chunks_written,
                "seconds": round(ingested.seconds, 3),
            },
            "query_embedding_ms": {
                "p50": round(percentile(self.embedding_latencies, 50) * 1000, 3),
                "p95": round(percentile(self.embedding_latencies, 95) * 1000, 3),
            },
            "retrievers": [run.as_dict() for run in self.runs],
            "collection": {
                "tenant_id": self.tenant_id,
                "id": str(self.collection.id),
                "name": self.collection.name,
                "kept": self.kept,
            },
        }


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (linear interpolation between closest ranks); 0 for no values."""
    if not values:
        return 0.0
    if len(values) == 1:
        return float(values[0])
    return float(statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1])


class Evaluation:
    """Runs judged collections through ingestion and search on one database."""

    def __init__(self, engine: AsyncEngine, registry: Registry, settings: Settings) -> None:
        # Near-duplicate skipping would silently remove judged documents from the scratch collection.
        ingestion = settings.ingestion.model_copy(update={"near_duplicates": "off"})
        self.engine = engine
        self.registry = registry
        self.settings = settings
        self.collections = Collections(engine, registry, ingestion.embedder)
        self.ingestion = Ingestion(engine, ingestion, registry, self.collections)
        self.search = Search(engine, registry, settings.retrieval, self.collections)

    async def run(
        self,
        dataset: JudgedCollection,
        retrievers: Sequence[str],
        *,
        graded: bool = False,
        depth: int = DEFAULT_DEPTH,
        reranker: str = "none",
        language: str = "english",
        keep: bool = False,
        progress: ProgressCallback = _silent,
    ) -> EvalReport:
        """Ingest ``dataset`` into a scratch collection, search every query with each retriever."""
        for name in retrievers:
            self.search.retriever(name)  # an unknown name fails before any work, listing the known ones
        self.search.reranker(reranker)
        tenant = f"eval-{uuid.uuid4().hex[:12]}"
        collection = await self.collections.create(
            tenant,
            f"eval-{dataset.name}",
            description=f"opentier eval of {dataset.path}",
            metadata={"eval": dataset.layout},
            language=language,
        )
        chunks = self.search.top_k(depth * CHUNKS_PER_DOCUMENT)
        report = EvalReport(dataset, tenant, collection, graded, depth, chunks)
        try:
            report.ingested = await self._ingest(tenant, collection, dataset.documents(), progress)
            collection = report.collection = await self.collections.get(tenant, collection.id)
            if collection.chunk_count == 0:
                raise EvaluationError(f"no document of {dataset.path} could be indexed")
            embeddings = await self._embed_queries(collection, dataset, report, progress)
            for name in retrievers:
                run = await self._search(name, reranker, collection, dataset, embeddings, report, progress)
                report.runs.append(run)
        finally:
            report.kept = keep
            if not keep:
                await self.collections.delete(tenant, collection.id)
        return report

    async def _ingest(
        self,
        tenant: str,
        collection: CollectionInfo,
        documents: Iterator[JudgedDocument],
        progress: ProgressCallback,
    ) -> Ingested:
        stage = "indexing documents"
        progress(stage, 0, None)
        started = time.perf_counter()
        await self.ingestion.start()
        try:
            job = await self.ingestion.create_job(
                tenant,
                collection.id,
                {"eval": collection.description},
                JobOptions(),
                [],
                input_complete=False,
            )
            total = empty = 0
            batch: list[ItemSpec] = []
            for document in documents:
                text = document.indexed_text
                if not text:
                    empty += 1
                    continue
                # The source is the dataset's document id: hits map back to judgments through it.
                batch.append(ItemSpec("text", document.id, text.encode()))
                if len(batch) >= ITEM_BATCH:
                    total = await self.ingestion.add_items(tenant, job.id, total, batch)
                    batch = []
                    progress(stage, (await self.ingestion.get_job(tenant, job.id)).counts.items_done, None)
            if batch:
                total = await self.ingestion.add_items(tenant, job.id, total, batch)
            await self.ingestion.close_input(tenant, job.id)
            while True:
                job = await self.ingestion.get_job(tenant, job.id)
                progress(stage, job.counts.items_done, total)
                if job.terminal:
                    break
                await asyncio.sleep(POLL_SECONDS)
        finally:
            await self.ingestion.stop()
        if job.status != "succeeded":
            raise EvaluationError(f"the scratch ingestion job ended {job.status}: {job.error or 'no reason'}")
        return Ingested(total + empty, empty, job.counts, time.perf_counter() - started)

    async def _embed_queries(
        self,
        collection: CollectionInfo,
        dataset: JudgedCollection,
        report: EvalReport,
        progress: ProgressCallback,
    ) -> dict[str, list[float]]:
        """Each query embedded once, alone (as a search would), shared by every retriever."""
        embedder = self.collections.embedder_for(collection)
        stage = f"embedding queries ({embedder.name})"
        await embedder.embed([dataset.queries[0].text])  # a lazily loaded model loads here, untimed
        embeddings: dict[str, list[float]] = {}
        latencies: list[float] = []
        for number, query in enumerate(dataset.queries, start=1):
            started = time.perf_counter()
            [vector] = await embedder.embed([query.text])
            latencies.append(time.perf_counter() - started)
            embeddings[query.id] = [float(v) for v in vector]
            progress(stage, number, len(dataset.queries))
        report.embedding_latencies = latencies
        return embeddings

    async def _search(  # noqa: PLR0917 (private; one call site)
        self,
        retriever: str,
        reranker: str,
        collection: CollectionInfo,
        dataset: JudgedCollection,
        embeddings: dict[str, list[float]],
        report: EvalReport,
        progress: ProgressCallback,
    ) -> RetrieverRun:
        stage = f"searching with {retriever}"
        base = SearchQuery(
            text="", tenant_id=report.tenant_id, collection_ids=[str(collection.id)], top_k=report.chunks
        )
        run: dict[str, list[str]] = {}
        latencies: list[float] = []
        started = time.perf_counter()
        for number, query in enumerate(dataset.queries, start=1):
            request = replace(base, text=query.text, embedding=embeddings[query.id])
            began = time.perf_counter()
            hits = await self.search.search(request, retriever=retriever, reranker=reranker)
            latencies.append(time.perf_counter() - began)
            run[query.id] = unique(hit.source for hit in hits)[: report.depth]
            progress(stage, number, len(dataset.queries))
        seconds = time.perf_counter() - started
        return RetrieverRun(retriever, evaluate(run, dataset.qrels, graded=report.graded), latencies, seconds)
