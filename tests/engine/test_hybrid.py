"""The hybrid retriever: reciprocal rank fusion of real retrievers on the real PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine

from opentier.engine.collections import CollectionInfo
from opentier.errors import InvalidRequestError, UnknownComponentError

from .searching import Bench, Record, open_bench, query

#: Short notes the vector retriever ranks first for "propeller zeppelin"; only the log names the
#: zeppelin (and a propeller), among many unrelated words, so its embedding is far from the query's.
RECORDS = [
    *(Record(f"note{i}.txt", f"Propeller note {i}: the propeller turns.") for i in range(5)),
    Record(
        "log.txt",
        "Hangar log. The zeppelin arrived on Tuesday with a cracked propeller; the crew checked fuel, ropes, "
        "weather, radio, ballast, cabin, galley, lamps, maps, charts, engines, blankets and parachutes.",
    ),
]


@pytest_asyncio.fixture(scope="module")
async def bench(db_engine: AsyncEngine) -> AsyncIterator[Bench]:
    bench = await open_bench(db_engine)
    try:
        yield bench
    finally:
        await bench.ingestion.stop()


@pytest_asyncio.fixture(scope="module")
async def hangar(bench: Bench) -> CollectionInfo:
    collection = await bench.collection(bench.tenant(), "hangar")
    await bench.add(collection, RECORDS)
    return collection


async def test_hybrid_ranks_a_document_that_only_one_part_finds(bench: Bench, hangar: CollectionInfo) -> None:
    search = bench.search(hybrid_weights={"vector": 1.0, "keyword": 1.0}, hybrid_depth=4)
    text = "propeller zeppelin"
    vector = await search.search(query(hangar, text, top_k=4), retriever="vector")
    keyword = await search.search(query(hangar, text, top_k=4), retriever="keyword")
    assert "log.txt" not in {hit.source for hit in vector}, "precondition: vector alone misses the log"
    assert keyword[0].source == "log.txt", "precondition: the keyword part finds it first"

    hybrid = await search.search(query(hangar, text, top_k=4), retriever="hybrid")
    assert "log.txt" in [hit.source for hit in hybrid]
    k = search.settings.rrf_k
    ranks = {
        name: {hit.chunk_id: rank for rank, hit in enumerate(hits, start=1)}
        for name, hits in (("vector", vector), ("keyword", keyword))
    }
    for hit in hybrid:
        expected = sum(1 / (k + part[hit.chunk_id]) for part in ranks.values() if hit.chunk_id in part)
        assert hit.score == pytest.approx(expected), hit.source
    log = next(hit for hit in hybrid if hit.source == "log.txt")
    assert log.score == pytest.approx(1 / (k + 1))
    assert hybrid[0].chunk_id in ranks["vector"] and hybrid[0].chunk_id in ranks["keyword"], (
        "a chunk both parts rank beats one that a single part ranks first"
    )
    assert all(hit.text and hit.source for hit in hybrid), "fused hits are complete"


async def test_default_hybrid_fuses_vector_and_fulltext(bench: Bench, hangar: CollectionInfo) -> None:
    search = bench.search(hybrid_depth=4)  # the configured default: vector + fulltext, equal weights
    assert search.settings.retriever == "hybrid"
    text = "propeller zeppelin"
    vector = await search.search(query(hangar, text, top_k=4), retriever="vector")
    fulltext = await search.search(query(hangar, text, top_k=4), retriever="fulltext")
    assert "log.txt" not in {hit.source for hit in vector}, "precondition: vector alone misses the log"
    assert fulltext[0].source == "log.txt", "precondition: BM25 puts the only zeppelin first"

    hybrid = await search.search(query(hangar, text, top_k=4))
    assert "log.txt" in [hit.source for hit in hybrid]
    k = search.settings.rrf_k
    log = next(hit for hit in hybrid if hit.source == "log.txt")
    assert log.score == pytest.approx(1 / (k + 1)), "found by one part only, at rank 1"
    both = {hit.chunk_id for hit in vector} & {hit.chunk_id for hit in fulltext}
    assert hybrid[0].chunk_id in both


async def test_weights_shift_the_fusion(bench: Bench, hangar: CollectionInfo) -> None:
    text = "propeller zeppelin"

    async def log_place(weights: dict[str, float]) -> tuple[int, float]:
        search = bench.search(hybrid_weights=weights, hybrid_depth=3)
        hits = await search.search(query(hangar, text, top_k=6), retriever="hybrid")
        place = [hit.source for hit in hits].index("log.txt")
        return place, hits[place].score

    vector_heavy, keyword_heavy = (
        await log_place({"vector": 5, "keyword": 1}),
        await log_place({"vector": 1, "keyword": 5}),
    )
    assert keyword_heavy[0] < vector_heavy[0]
    k = bench.search().settings.rrf_k
    vector = await bench.search().search(query(hangar, text, top_k=6), retriever="vector")
    rank = [hit.source for hit in vector].index("log.txt") + 1  # keyword ranks it first
    assert vector_heavy[1] == pytest.approx(5 / (k + rank) + 1 / (k + 1))
    assert keyword_heavy[1] == pytest.approx(1 / (k + rank) + 5 / (k + 1))
    per_request = await bench.search().search(
        query(hangar, text, top_k=2, options={"weights": {"keyword": 1}}), retriever="hybrid"
    )
    assert per_request[0].source == "log.txt", "the request's weights replace the configured parts"


async def test_fusion_is_deterministic(bench: Bench, hangar: CollectionInfo) -> None:
    search = bench.search(hybrid_weights={"vector": 1.0, "keyword": 1.0})
    runs = [
        [hit.chunk_id for hit in await search.search(query(hangar, "propeller", top_k=6), retriever="hybrid")]
        for _ in range(3)
    ]
    assert runs[0] == runs[1] == runs[2]


async def test_a_missing_part_names_the_setting(bench: Bench, hangar: CollectionInfo) -> None:
    search = bench.search(hybrid_weights={"vector": 1.0, "bm25": 1.0})
    with pytest.raises(
        UnknownComponentError, match=r"hybrid fuses 'bm25' \(retrieval.hybrid_weights.*available"
    ):
        await search.search(query(hangar, "propeller"), retriever="hybrid")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"weights": {"hybrid": 1}}, "hybrid cannot fuse itself"),
        ({"weights": {"vector": -1}}, "options.weights.vector: a weight is a number, 0 or more"),
        ({"weights": {"vector": 0}}, "at least one retriever with a weight above 0"),
        ({"weights": "vector"}, "options.weights: an object of retriever name"),
        ({"depth": 0}, "options.depth: a whole number from 1 to 1000"),
    ],
)
async def test_bad_options_are_refused(
    bench: Bench, hangar: CollectionInfo, options: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        await bench.search().search(query(hangar, "propeller", options=options), retriever="hybrid")
