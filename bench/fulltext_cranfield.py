"""The `fulltext` retriever on Cranfield: ranking quality, and what its statistics cost the writes.

    .venv/bin/python bench/fulltext_cranfield.py [--embedder minilm] [--k1 1.2] [--b 0.75] [--grid]
                                                 [--rounds 3] [--no-quality] [--no-write-cost]

1. Quality. Ingests the 1,400 abstracts (title + " " + text, the BEIR convention) through the real
   pipeline into a scratch collection of a temporary embedded PostgreSQL (or
   OPENTIER_BENCH_DATABASE_URL), runs the 225 queries through Search with the `fulltext` retriever
   and ranks documents by their best chunk. Prints nDCG@10, R@100 and MRR@10 with binary relevance
   (codes 1-4 relevant), next to the reference figures of the collection's README. ``--grid`` also
   tries a few (k1, b).
2. Write cost. Writes the stored chunks again into fresh collections, in batches of 64 documents
   (ingestion's batch), each batch in its own transaction: as ingestion writes them
   (opentier.engine.store.write_many, one INSERT per batch) and one INSERT per chunk, each with the
   BM25 statistics on and off: the triggers (session_replication_role, so superuser only) and the
   index of repeated lexemes (dropped, then made again: it runs on its own temporary database only).
   The difference is the PostgreSQL time the statistics add. Rounds alternate; the best of
   ``--rounds`` counts.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from opentier.components import SearchQuery
from opentier.config import IngestionSettings, RetrievalSettings
from opentier.db.embedded import EmbeddedPostgres
from opentier.db.migrate import migrate
from opentier.engine import store
from opentier.engine.chunker import Chunk
from opentier.engine.collections import CollectionInfo, Collections
from opentier.engine.datasets import cranfield
from opentier.engine.evaluation import evaluate
from opentier.engine.jobs import Ingestion, ItemSpec, JobOptions
from opentier.engine.search import Search
from opentier.plugin_manager import PluginSelection, load_plugins

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cranfield"
SOURCE_PREFIX = "cran/"
#: Documents per write in the write-cost part: ingestion's default batch (ingestion.batch_items).
BATCH_DOCUMENTS = 64
#: Chunks asked of the retriever per query, so that 100 distinct documents remain after grouping.
DEPTH = 200
REFERENCES = [
    ("BM25 (bm25s, English stemmer and stopwords)", 0.388, 0.738, 0.532),
    ("PostgreSQL ts_rank (a peer, LlamaIndex)", 0.285, 0.672, float("nan")),
]
GRID = [(1.2, 0.75), (1.5, 0.75), (0.9, 0.4), (2.0, 0.75), (1.2, 0.5), (1.2, 0.9)]


async def ingest(engine: AsyncEngine, embedder: str) -> tuple[Collections, CollectionInfo, Any]:
    system = load_plugins(selection=PluginSelection())
    collections = Collections(engine, system.registry, embedder)
    ingestion = Ingestion(engine, IngestionSettings(embedder=embedder), system.registry, collections)
    collection = await collections.create(f"bench-{uuid.uuid4().hex[:8]}", "cranfield")
    records = [
        ItemSpec("text", f"{SOURCE_PREFIX}{doc.id}", f"{doc.title} {doc.text}".strip().encode())
        for doc in cranfield.documents(DATA)
    ]
    started = time.perf_counter()
    await ingestion.start()
    try:
        job = await ingestion.create_job(collection.tenant_id, collection.id, {}, JobOptions(), records)
        job = await ingestion.wait(collection.tenant_id, job.id)
    finally:
        await ingestion.stop()
    counts = job.counts
    print(
        f"ingested: {counts.created} documents, {counts.dropped} dropped (empty), {counts.failed} failed, "
        f"in {time.perf_counter() - started:.1f} s (embedder {embedder})"
    )
    return collections, collection, system


async def quality(
    search: Search, collection: CollectionInfo, options: dict[str, float]
) -> tuple[dict[str, list[str]], float]:
    run: dict[str, list[str]] = {}
    started = time.perf_counter()
    for query in cranfield.queries(DATA):
        request = SearchQuery(
            text=query.text,
            tenant_id=collection.tenant_id,
            collection_ids=[str(collection.id)],
            top_k=DEPTH,
            options=options,
        )
        hits = await search.search(request, retriever="fulltext", reranker="none")
        run[query.id] = [hit.source.removeprefix(SOURCE_PREFIX) for hit in hits]
    return run, time.perf_counter() - started


def judgments() -> dict[str, dict[str, int]]:
    return {query: dict.fromkeys(docs, 1) for query, docs in cranfield.judgments(DATA).items()}


@dataclass(frozen=True, slots=True)
class StoredDocument:
    source: str
    chunks: list[Chunk]
    vectors: list[list[float]]


async def stored(engine: AsyncEngine, collection: CollectionInfo) -> list[StoredDocument]:
    """The collection's documents with their chunks and vectors, as the pipeline wrote them."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            sa.text(
                "SELECT d.source, c.ordinal, c.text, c.token_count, c.char_start, c.char_end, "
                "CAST(c.embedding AS text) FROM intelligence.chunks c "
                "JOIN intelligence.documents d ON d.id = c.document_id "
                "WHERE c.collection_id = :collection ORDER BY d.source, c.ordinal"
            ),
            {"collection": collection.id},
        )
        documents: dict[str, StoredDocument] = {}
        for source, ordinal, text, tokens, start, end, vector in rows:
            document = documents.setdefault(source, StoredDocument(source, [], []))
            document.chunks.append(Chunk(ordinal, text, start or 0, end or 0, (), None, None, tokens, text))
            document.vectors.append([float(v) for v in vector.strip("[]").split(",")])
    return list(documents.values())


def batches(documents: Sequence[StoredDocument]) -> list[Sequence[StoredDocument]]:
    return [documents[i : i + BATCH_DOCUMENTS] for i in range(0, len(documents), BATCH_DOCUMENTS)]


async def write_round(
    engine: AsyncEngine,
    collections: Collections,
    tenant: str,
    documents: Sequence[StoredDocument],
    *,
    row_by_row: bool,
    triggers: bool,
) -> float:
    """Seconds spent in the write transactions of one copy of ``documents`` into a new collection."""
    target = await collections.create(tenant, f"copy-{uuid.uuid4().hex[:8]}")
    job_id = uuid.uuid4()
    spent = 0.0
    for batch in batches(documents):
        entries = [
            (
                store.NewVersion(
                    tenant_id=tenant,
                    collection_id=target.id,
                    source=document.source,
                    title=None,
                    media_type="text/plain",
                    content_hash=document.source,
                    source_hash=None,
                    simhash=0,
                    size_bytes=None,
                    job_id=job_id,
                    metadata={},
                ),
                document.chunks,
                document.vectors,
            )
            for document in batch
        ]
        async with engine.connect() as conn:
            role = "origin" if triggers else "replica"  # replica: ordinary triggers do not fire
            await conn.execute(sa.text(f"SET session_replication_role = {role}"))
            await conn.commit()
            started = time.perf_counter()
            async with conn.begin():
                if row_by_row:
                    await write_row_by_row(conn, entries, target.language)
                else:
                    await store.write_many(conn, entries, target.language)
            spent += time.perf_counter() - started
            await conn.execute(sa.text("RESET session_replication_role"))
            await conn.commit()
    await collections.delete(tenant, target.id)
    return spent


async def write_row_by_row(conn: Any, entries: Sequence[Any], language: str) -> None:
    """store.write_many's documents, then their chunks one INSERT each (the statistics' other path)."""
    empty: list[tuple[Any, list[Chunk], list[list[float]]]] = [(v, [], []) for v, _c, _e in entries]
    written = await store.write_many(conn, empty, language)
    first = entries[0][0]
    await conn.execute(
        sa.text(
            "INSERT INTO intelligence.chunks (tenant_id, collection_id, document_id, ordinal, text, "
            "token_count, char_start, char_end, tsv, embedding, embedding_dims) "
            "VALUES (:tenant, :collection, :document, :ordinal, :text, :tokens, :start, :stop, "
            "to_tsvector(CAST(:language AS regconfig), :text), CAST(:vector AS vector), :dims)"
        ),
        [
            {
                "tenant": first.tenant_id,
                "collection": first.collection_id,
                "language": language,
                "document": document_id,
                "ordinal": chunk.ordinal,
                "text": chunk.text,
                "tokens": chunk.token_count,
                "start": chunk.char_start,
                "stop": chunk.char_end,
                "vector": "[" + ",".join(f"{v:.7g}" for v in vector) + "]",
                "dims": len(vector),
            }
            for (document_id, _created), (_v, chunks, vectors) in zip(written, entries, strict=True)
            for chunk, vector in zip(chunks, vectors, strict=True)
        ],
    )


REPEATS_INDEX = "intelligence.ix_chunks_tsv_repeats"


async def statistics_switch(engine: AsyncEngine, on: bool) -> None:
    """Make or drop the index of repeated lexemes (the triggers are switched per session)."""
    async with engine.begin() as conn:
        if on:
            await conn.execute(
                sa.text(
                    "CREATE INDEX IF NOT EXISTS ix_chunks_tsv_repeats ON intelligence.chunks "
                    "USING gin (intelligence.fulltext_repeats(tsv))"
                )
            )
        else:
            await conn.execute(sa.text(f"DROP INDEX IF EXISTS {REPEATS_INDEX}"))


async def write_cost(
    engine: AsyncEngine, collections: Collections, collection: CollectionInfo, rounds: int
) -> None:
    """Time the writes with the statistics (triggers and the index of repeats) and without them."""
    documents = await stored(engine, collection)
    chunks = sum(len(document.chunks) for document in documents)
    async with engine.connect() as conn:
        if not await conn.scalar(sa.text("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")):
            print("write cost: skipped (switching triggers off needs a superuser)")
            return
    best: dict[tuple[bool, bool], float] = {}
    try:
        for _ in range(rounds):
            for statistics in (True, False):
                await statistics_switch(engine, statistics)
                for rows in (False, True):
                    seconds = await write_round(
                        engine,
                        collections,
                        collection.tenant_id,
                        documents,
                        row_by_row=rows,
                        triggers=statistics,
                    )
                    best[(rows, statistics)] = min(best.get((rows, statistics), seconds), seconds)
    finally:
        await statistics_switch(engine, True)
    batches_count = len(batches(documents))
    print(
        f"\nwrite cost of the BM25 statistics (triggers, index of repeated lexemes): {chunks} chunks, "
        f"{batches_count} transactions of {BATCH_DOCUMENTS} documents,"
    )
    print(f"best of {rounds} rounds each (seconds in the write transactions):")
    for rows, label in (
        (False, "as ingestion writes (store.write_many)"),
        (True, "one INSERT per chunk (counted at commit)"),
    ):
        on, off = best[(rows, True)], best[(rows, False)]
        extra = on - off
        print(
            f"  {label:<44} without {off:6.2f} s  with {on:6.2f} s  extra {extra:+6.2f} s "
            f"({1000 * extra / chunks:+.3f} ms per chunk)"
        )


async def run(args: argparse.Namespace, url: str) -> None:
    began = time.perf_counter()
    await migrate(url)
    engine = create_async_engine(url, pool_size=4)
    try:
        collections, collection, system = await ingest(engine, args.embedder)
        search = Search(engine, system.registry, RetrievalSettings(max_top_k=DEPTH), collections)
        qrels = judgments()
        if args.quality:
            print(f"\n{'system':<48} {'nDCG@10':>8} {'R@100':>8} {'MRR@10':>8}")
            for name, ndcg, recall, mrr in REFERENCES:
                print(f"{name:<48} {ndcg:8.3f} {recall:8.3f} {mrr:8.3f}")
        settings = [(args.k1, args.b)] + ([p for p in GRID if p != (args.k1, args.b)] if args.grid else [])
        for k1, b in settings if args.quality else []:
            run_, seconds = await quality(search, collection, {"k1": k1, "b": b})
            metrics = evaluate(run_, qrels)
            label = f"fulltext (k1={k1:g}, b={b:g})"
            print(
                f"{label:<48} {metrics.ndcg_10:8.3f} {metrics.recall_100:8.3f} {metrics.mrr_10:8.3f}"
                f"   {metrics.queries} queries, {1000 * seconds / 225:.1f} ms/query"
            )
        if args.write_cost:
            await write_cost(engine, collections, collection, args.rounds)
        await collections.delete(collection.tenant_id, collection.id)
    finally:
        await engine.dispose()
    print(f"\ntotal run time: {time.perf_counter() - began:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--embedder", default="minilm", help="embedder of the collection (chunk sizes)")
    parser.add_argument("--k1", type=float, default=1.2)
    parser.add_argument("--b", type=float, default=0.75)
    parser.add_argument("--grid", action="store_true", help="also try a few other (k1, b)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the write-cost measurement")
    parser.add_argument("--no-quality", dest="quality", action="store_false")
    parser.add_argument("--no-write-cost", dest="write_cost", action="store_false")
    args = parser.parse_args()
    if not (DATA / "cran.all.1400").is_file():
        print(f"skipped: the Cranfield collection is not at {DATA}", file=sys.stderr)
        return
    external = os.environ.get("OPENTIER_BENCH_DATABASE_URL")
    if external:
        if args.write_cost:
            print("write cost: skipped on OPENTIER_BENCH_DATABASE_URL (it drops and re-creates an index)")
        args.write_cost = False
        asyncio.run(run(args, external))
        return
    with tempfile.TemporaryDirectory(prefix="opentier-bench-") as folder:
        server = EmbeddedPostgres(Path(folder) / "pg", database="bench")
        server.start()
        try:
            asyncio.run(run(args, str(server.url().render_as_string(hide_password=False))))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
