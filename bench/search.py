"""Benchmark: search latency of each retriever, and HNSW recall against exact search, on 100,000 chunks.

    .venv/bin/python bench/search.py [--chunks 100000] [--queries 200] [--seed 1]

Loads synthetic chunks into a scratch collection of a temporary embedded PostgreSQL (or
OPENTIER_BENCH_DATABASE_URL) with bulk INSERTs of the ledger's columns and tsvector expression
(opentier.engine.store), one statement per 5,000 chunks; the database's own triggers keep the BM25
statistics of the `fulltext` retriever, as they do for ingestion. Loading, chunking and embedding are
skipped, since the point is search. Then, in the same run:

- p50/p95 latency of each retriever through Search, the query's embedding given (excluded);
- the default embedder's time to embed one query, reported apart;
- HNSW recall@10 of the `vector` retriever against exact search (the same ORDER BY over a
  materialised (id, vector) set without an index, whose latency is the baseline).

The data: a vocabulary of synthetic words drawn Zipf-like (70% from the whole vocabulary, 30% from
the chunk's topic's own words), 200 topics, chunks of 80 to 220 words, ten per document. Vectors
are 384-dimensional unit vectors around their topic's centroid (cosine ~0.5 between chunks of one
topic, ~0 across topics), queries the same way, with 3 to 6 words of their topic. Everything comes
from one seed.

Goals: hybrid p95 <= 20 ms, recall@10 >= 0.95.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from opentier.components import ComponentKind, Embedder, SearchQuery
from opentier.config import RetrievalSettings
from opentier.db.embedded import EmbeddedPostgres
from opentier.db.migrate import migrate
from opentier.db.tenancy import enforce_tenancy, internal_scope, tenant_scope
from opentier.db.vector_index import ensure_vector_index, vector_index_name
from opentier.engine.collections import CollectionInfo, Collections
from opentier.engine.search import Search
from opentier.plugin_manager import PluginSelection, load_plugins

DIMS = 384
TOPICS = 200
VOCABULARY = 30_000
TOPIC_WORDS = 2_000
CHUNKS_PER_DOCUMENT = 10
DOCUMENTS_PER_WRITE = 500
RETRIEVERS = ("fulltext", "vector", "hybrid")
GOAL_HYBRID_P95_MS = 20.0
GOAL_RECALL = 0.95
WARM_UP = 20


@dataclass(frozen=True, slots=True)
class Corpus:
    texts: list[str]
    vectors: np.ndarray
    query_texts: list[str]
    query_vectors: np.ndarray


def synthetic(chunks: int, queries: int, seed: int) -> Corpus:
    rng = np.random.default_rng(seed)
    syllables = [c + v for c in "bcdfghjklmnprstvz" for v in "aeiou"]
    words: list[str] = []
    seen: set[str] = set()
    while len(words) < VOCABULARY:
        word = "".join(rng.choice(syllables, size=int(rng.integers(2, 5))))
        if word not in seen:
            seen.add(word)
            words.append(word)
    vocabulary = np.array(words)

    def zipf(size: int, n: int) -> np.ndarray:
        weights = 1.0 / (np.arange(n) + 2.7)
        return rng.choice(n, size=size, p=weights / weights.sum())

    # Each topic's own words: a random subset of the less frequent part of the vocabulary.
    topic_words = np.stack(
        [rng.choice(np.arange(200, VOCABULARY), TOPIC_WORDS, replace=False) for _ in range(TOPICS)]
    )
    centroids = _unit(rng.standard_normal((TOPICS, DIMS)))

    def texts_of(topics: np.ndarray, lengths: np.ndarray, topic_share: float) -> list[str]:
        total = int(lengths.sum())
        owners = np.repeat(topics, lengths)
        from_topic = rng.random(total) < topic_share
        ids = zipf(total, VOCABULARY)
        ids[from_topic] = topic_words[owners[from_topic], zipf(int(from_topic.sum()), TOPIC_WORDS)]
        tokens = vocabulary[ids]
        bounds = np.concatenate(([0], np.cumsum(lengths)))
        return [" ".join(tokens[bounds[i] : bounds[i + 1]]) for i in range(len(lengths))]

    def vectors_of(topics: np.ndarray) -> np.ndarray:
        noise = rng.standard_normal((len(topics), DIMS)) / np.sqrt(DIMS)
        return _unit(centroids[topics] + noise).astype(np.float32)

    chunk_topics = rng.integers(0, TOPICS, chunks)
    query_topics = rng.integers(0, TOPICS, queries)
    return Corpus(
        texts=texts_of(chunk_topics, rng.integers(80, 221, chunks), 0.3),
        vectors=vectors_of(chunk_topics),
        query_texts=texts_of(query_topics, rng.integers(3, 7, queries), 1.0),
        query_vectors=vectors_of(query_topics),
    )


def _unit(matrix: np.ndarray) -> np.ndarray:
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


# The columns and the tsvector expression of opentier.engine.store's chunk INSERT, one statement per
# batch: the triggers of migration 0005 keep the BM25 statistics from these rows as they do for
# ingestion (the sums are the same however the rows are split into statements), only faster.
_DOCUMENTS = sa.text(
    """
    INSERT INTO intelligence.documents (tenant_id, collection_id, source, media_type, content_hash,
        simhash, job_id, status, chunk_count)
    SELECT :tenant, :collection, u.source, 'text/plain', u.source, u.simhash, :job, 'ready', u.chunks
    FROM unnest(CAST(:sources AS text[]), CAST(:simhashes AS bigint[]), CAST(:counts AS integer[]))
        AS u(source, simhash, chunks)
    RETURNING source, id
    """
)
_CHUNKS = sa.text(
    f"""
    INSERT INTO intelligence.chunks (tenant_id, collection_id, document_id, ordinal, text, token_count,
        heading_path, page, char_start, char_end, metadata, tsv, embedding, embedding_dims)
    SELECT :tenant, :collection, u.document_id, u.ordinal, u.text, u.tokens, '{{}}', NULL, 0,
        length(u.text), '{{}}'::jsonb, to_tsvector(CAST(:language AS regconfig), u.text),
        CAST(u.embedding AS vector), {DIMS}
    FROM unnest(CAST(:documents AS uuid[]), CAST(:ordinals AS integer[]), CAST(:texts AS text[]),
        CAST(:tokens AS integer[]), CAST(:embeddings AS text[]))
        AS u(document_id, ordinal, text, tokens, embedding)
    """
)


async def load(engine: AsyncEngine, collection: CollectionInfo, corpus: Corpus, rebuild_index: bool) -> float:
    """Write documents and chunks (text, tsvector, embedding; the database keeps the BM25
    statistics); return seconds."""
    started = time.perf_counter()
    if rebuild_index:
        # Building the HNSW index once over all rows is much faster than inserting into it row by row.
        async with engine.begin() as conn:
            await conn.execute(sa.text(f"DROP INDEX IF EXISTS intelligence.{vector_index_name(DIMS)}"))
    scope = {"tenant": collection.tenant_id, "collection": collection.id}
    job_id = uuid.uuid4()
    total = len(corpus.texts)
    step = CHUNKS_PER_DOCUMENT * DOCUMENTS_PER_WRITE
    for first in range(0, total, step):
        last = min(first + step, total)
        owners = [f"synthetic/{i // CHUNKS_PER_DOCUMENT}" for i in range(first, last)]
        counts = Counter(owners)
        async with engine.begin() as conn:
            rows = await conn.execute(
                _DOCUMENTS,
                {
                    **scope,
                    "job": job_id,
                    "sources": list(counts),
                    "simhashes": list(range(first, first + len(counts))),
                    "counts": list(counts.values()),
                },
            )
            ids = {source: key for source, key in rows}
            texts = corpus.texts[first:last]
            await conn.execute(
                _CHUNKS,
                {
                    **scope,
                    "language": collection.language,
                    "documents": [ids[owner] for owner in owners],
                    "ordinals": [i % CHUNKS_PER_DOCUMENT for i in range(first, last)],
                    "texts": texts,
                    "tokens": [len(text.split()) for text in texts],
                    "embeddings": [_vector(v) for v in corpus.vectors[first:last].tolist()],
                },
            )
        if last % 20_000 == 0 or last == total:
            print(f"  loaded {last:>7} chunks  {time.perf_counter() - started:6.1f} s", flush=True)
    if rebuild_index:
        began = time.perf_counter()
        async with engine.begin() as conn:
            await conn.execute(sa.text("SET LOCAL maintenance_work_mem = '1GB'"))
            await conn.execute(sa.text("SET LOCAL max_parallel_maintenance_workers = 1"))
            await ensure_vector_index(conn, DIMS)
        print(f"  HNSW index built in {time.perf_counter() - began:.1f} s", flush=True)
    async with engine.connect() as conn:
        autocommit = await conn.execution_options(isolation_level="AUTOCOMMIT")
        for table in ("chunks", "documents", "fulltext_terms", "fulltext_totals"):
            exists = await autocommit.scalar(
                sa.text("SELECT to_regclass(:t) IS NOT NULL"), {"t": f"intelligence.{table}"}
            )
            if exists:
                await autocommit.execute(sa.text(f"VACUUM ANALYZE intelligence.{table}"))
        if await autocommit.scalar(sa.text("SELECT to_regclass('intelligence.fulltext_totals') IS NOT NULL")):
            kept = (
                await autocommit.execute(
                    sa.text(
                        "SELECT coalesce(sum(chunks), 0), coalesce(sum(tokens), 0) "
                        "FROM intelligence.fulltext_totals WHERE collection_id = :collection"
                    ),
                    scope,
                )
            ).one()
            print(f"  BM25 statistics kept by the database: {int(kept[0])} chunks, {int(kept[1])} tokens")
            assert kept[0] == total, "the full-text statistics do not count every chunk"
    return time.perf_counter() - started


def _vector(values: Sequence[float]) -> str:
    return "[" + ",".join(f"{value:.7g}" for value in values) + "]"


async def timed_searches(
    search: Search, collection: CollectionInfo, corpus: Corpus, retriever: str, top_k: int
) -> tuple[list[float], list[list[str]]]:
    latencies: list[float] = []
    found: list[list[str]] = []
    for number, (text, vector) in enumerate(
        zip(corpus.query_texts, corpus.query_vectors.tolist(), strict=True)
    ):
        query = SearchQuery(
            text=text,
            tenant_id=collection.tenant_id,
            collection_ids=[str(collection.id)],
            top_k=top_k,
            embedding=vector,
        )
        started = time.perf_counter()
        hits = await search.search(query, retriever=retriever, reranker="none")
        elapsed = time.perf_counter() - started
        if number >= WARM_UP:
            latencies.append(elapsed)
            found.append([hit.chunk_id for hit in hits])
    return latencies, found


async def timed_part(
    search: Search, collection: CollectionInfo, corpus: Corpus, retriever: str, k: int
) -> list[float]:
    """The retriever alone, as hybrid calls it: its hits unhydrated, the search context given."""
    part = search.retriever(retriever)
    latencies: list[float] = []
    for number, (text, vector) in enumerate(
        zip(corpus.query_texts, corpus.query_vectors.tolist(), strict=True)
    ):
        query = SearchQuery(text, collection.tenant_id, [str(collection.id)], top_k=k, embedding=vector)
        context = await search.context(query)
        assert context is not None
        started = time.perf_counter()
        await part.retrieve(context.query, context)
        if number >= WARM_UP:
            latencies.append(time.perf_counter() - started)
    return latencies


async def exact_neighbours(
    engine: AsyncEngine, collection: CollectionInfo, corpus: Corpus, k: int
) -> tuple[list[float], list[list[str]]]:
    """The true top ``k`` by cosine distance: an ORDER BY over a materialised (id, vector) set of the
    collection, which has no index, so every distance is computed."""
    latencies: list[float] = []
    found: list[list[str]] = []
    async with engine.connect() as conn:
        await conn.execute(
            sa.text(
                f"CREATE TEMPORARY TABLE exact_set ON COMMIT DROP AS SELECT id, "
                f"embedding::vector({DIMS}) AS embedding FROM intelligence.chunks "
                f"WHERE tenant_id = :tenant AND collection_id = :collection AND embedding_dims = {DIMS}"
            ),
            {"tenant": collection.tenant_id, "collection": collection.id},
        )
        await conn.execute(sa.text("ANALYZE exact_set"))
        statement = sa.text(
            f"SELECT id FROM exact_set ORDER BY embedding <=> CAST(:query AS vector({DIMS})) LIMIT :k"
        )
        for vector in corpus.query_vectors[WARM_UP:].tolist():
            started = time.perf_counter()
            rows = await conn.execute(statement, {"query": _vector(vector), "k": k})
            found.append([str(row[0]) for row in rows])
            latencies.append(time.perf_counter() - started)
        await conn.rollback()
    return latencies, found


async def embedding_latencies(embedder: Embedder, texts: Sequence[str]) -> list[float]:
    await embedder.embed(texts[:1])  # the model loads lazily: not part of a query's time
    latencies = []
    for text in texts:
        started = time.perf_counter()
        await embedder.embed([text])
        latencies.append(time.perf_counter() - started)
    return latencies


def ms(values: Sequence[float], q: int) -> float:
    if len(values) == 1:
        return values[0] * 1000
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] * 1000


async def run(args: argparse.Namespace, url: str, rebuild_index: bool) -> None:
    """The benchmark, as the host's internal work but for the timed searches (the tenant's)."""
    with internal_scope():
        await measure(args, url, rebuild_index)


async def measure(args: argparse.Namespace, url: str, rebuild_index: bool) -> None:
    began = time.perf_counter()
    await migrate(url)
    engine = create_async_engine(url, pool_size=4)
    # As the host does: row-level security applies, each transaction carries its tenant (loading and
    # the exact baseline run as the host's internal work, the timed searches as the tenant's).
    enforce_tenancy(engine)
    system = load_plugins(selection=PluginSelection())
    settings = RetrievalSettings()
    if args.ef_search:
        settings = settings.model_copy(update={"ef_search": args.ef_search})
    collections = Collections(engine, system.registry, "minilm")
    search = Search(engine, system.registry, settings, collections)
    embedder = system.registry.get(ComponentKind.EMBEDDER, "minilm")
    assert isinstance(embedder, Embedder)
    retrievers = [name.strip() for name in args.retrievers.split(",") if name.strip()]
    for name in retrievers:
        search.retriever(name)  # fail now, not after loading, when one is not installed

    started = time.perf_counter()
    corpus = synthetic(args.chunks, args.queries + WARM_UP, args.seed)
    seconds = time.perf_counter() - started
    print(f"synthetic data: {args.chunks} chunks, {args.queries} queries, in {seconds:.1f} s")
    collection = await collections.create(f"bench-{uuid.uuid4().hex[:8]}", "search")
    load_seconds = await load(engine, collection, corpus, rebuild_index)
    print(f"load: {load_seconds:.1f} s (chunks, tsvector, statistics, HNSW index, analyze)")

    print(f"\nsearch latency, top 10, {args.queries} queries each, query embedding given:")
    results: dict[str, tuple[list[float], list[list[str]]]] = {}
    with tenant_scope(collection.tenant_id):
        for name in retrievers:
            results[name] = await timed_searches(search, collection, corpus, name, 10)
            latencies = results[name][0]
            print(f"  {name:<9} p50 {ms(latencies, 50):7.2f} ms  p95 {ms(latencies, 95):7.2f} ms")
        if "hybrid" in results:
            depth = settings.hybrid_depth
            print(f"  the parts of hybrid at the depth it asks them for (retrieval.hybrid_depth = {depth}):")
            for name in settings.hybrid_weights:
                latencies = await timed_part(search, collection, corpus, name, depth)
                print(f"    {name:<8} p50 {ms(latencies, 50):7.2f} ms  p95 {ms(latencies, 95):7.2f} ms")
    exact_latencies, exact = await exact_neighbours(engine, collection, corpus, 10)
    print(
        f"  {'exact':<9} p50 {ms(exact_latencies, 50):7.2f} ms  p95 {ms(exact_latencies, 95):7.2f} ms"
        "  (exact: every distance computed, the baseline)"
    )
    vector_latencies, approximate = results.get("vector") or await timed_searches(
        search, collection, corpus, "vector", 10
    )
    recall = statistics.fmean(len(set(a) & set(e)) / len(e) for a, e in zip(approximate, exact, strict=True))
    print(f"  vector is {ms(exact_latencies, 50) / ms(vector_latencies, 50):.1f}x faster than exact at p50")

    texts = corpus.query_texts[WARM_UP:]
    embedded = await embedding_latencies(embedder, texts)
    print(
        f"\nquery embedding ({embedder.name}, one query at a time): p50 {ms(embedded, 50):.2f} ms  "
        f"p95 {ms(embedded, 95):.2f} ms"
    )

    hybrid_p95 = ms(results["hybrid"][0], 95) if "hybrid" in results else float("nan")
    print(f"\nHNSW recall@10 against exact search (ef_search {settings.ef_search}): {recall:.3f}")
    print("goals:")
    print(
        f"  hybrid p95 {hybrid_p95:6.2f} ms  <= {GOAL_HYBRID_P95_MS:.0f} ms   "
        f"{'met' if hybrid_p95 <= GOAL_HYBRID_P95_MS else 'MISSED'}"
    )
    verdict = "met" if recall >= GOAL_RECALL else "MISSED"
    print(f"  recall@10  {recall:6.3f}     >= {GOAL_RECALL:.2f}    {verdict}")
    print(f"\ntotal run time: {time.perf_counter() - began:.0f} s")
    await collections.delete(collection.tenant_id, collection.id)
    await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200, help="measured queries (after 20 for warm-up)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--retrievers", default=",".join(RETRIEVERS), help="comma-separated, timed in order")
    parser.add_argument("--ef-search", type=int, default=0, help="hnsw.ef_search (default: the setting's)")
    args = parser.parse_args()
    external = os.environ.get("OPENTIER_BENCH_DATABASE_URL")
    if external:
        # A shared database keeps its index: rows are inserted into it (slower than a fresh build).
        asyncio.run(run(args, external, rebuild_index=False))
        return
    with tempfile.TemporaryDirectory(prefix="opentier-bench-") as folder:
        server = EmbeddedPostgres(Path(folder) / "pg", database="bench")
        server.start()
        try:
            asyncio.run(
                run(args, str(server.url().render_as_string(hide_password=False)), rebuild_index=True)
            )
        finally:
            server.stop()


if __name__ == "__main__":
    main()
