"""Search end to end on the real PostgreSQL: scoping, the vector retriever, hydration, errors."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType

import pytest
import pytest_asyncio
import sqlalchemy as sa
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine

from opentier.components import SearchQuery
from opentier.config import RetrievalSettings
from opentier.engine.collections import CollectionInfo
from opentier.errors import InvalidRequestError, NotFoundError, UnknownComponentError
from opentier.plugin_manager import PluginSelection, load_plugins

from .helpers import HashEmbedder, plugin
from .searching import Bench, Record, open_bench, query


@pytest_asyncio.fixture(scope="module")
async def bench(db_engine: AsyncEngine) -> AsyncIterator[Bench]:
    bench = await open_bench(db_engine)
    try:
        yield bench
    finally:
        await bench.ingestion.stop()


async def test_vector_search_finds_the_closest_document_with_its_citation(bench: Bench) -> None:
    tenant = bench.tenant()
    docs = await bench.collection(tenant)
    await bench.add(
        docs,
        [
            Record(
                "wings.txt", "Wings produce lift from the air flowing over them.", {"lang": "en"}, "Wings"
            ),
            Record("engines.txt", "Jet engines burn fuel and push hot gas backwards.", {"lang": "en"}),
            Record("boats.txt", "Boats float because water pushes them up.", {"lang": "fr"}),
        ],
    )
    hits = await bench.search().search(query(docs, "how do wings make lift"), retriever="vector")
    assert [hit.source for hit in hits] == ["wings.txt", "engines.txt", "boats.txt"]
    best = hits[0]
    assert best.title == "Wings" and best.text.startswith("Wings produce lift")
    assert best.collection_id == str(docs.id) and best.document_id
    assert best.metadata["lang"] == "en"
    assert (best.char_start, best.char_end) == (0, len(best.text))
    assert hits[0].score > hits[1].score


# --- scoping ----------------------------------------------------------------------------------

SAME = [
    Record("wings.txt", "Wings produce lift from the air flowing over them.", {"lang": "en"}),
    Record("engines.txt", "Jet engines burn fuel and push hot gas backwards.", {"lang": "en"}),
]


async def chunk_ids(bench: Bench, collection: CollectionInfo) -> set[str]:
    async with bench.engine.connect() as conn:
        rows = await conn.execute(
            sa.text("SELECT id FROM intelligence.chunks WHERE collection_id = :c"), {"c": collection.id}
        )
        return {str(row.id) for row in rows}


@pytest.mark.parametrize("retriever", ["vector", "hybrid", "keyword"])
async def test_another_tenants_identical_chunks_never_appear(bench: Bench, retriever: str) -> None:
    mine, theirs = bench.tenant(), bench.tenant()
    my_docs = await bench.collection(mine, "docs")
    their_docs = await bench.collection(theirs, "docs")
    await bench.add(my_docs, SAME)
    await bench.add(their_docs, SAME)
    search = bench.search(hybrid_weights={"vector": 1.0, "keyword": 1.0})
    mine_ids, theirs_ids = await chunk_ids(bench, my_docs), await chunk_ids(bench, their_docs)
    for collections in ([], [str(my_docs.id)]):
        hits = await search.search(
            SearchQuery("wings lift", tenant_id=mine, collection_ids=collections, top_k=50),
            retriever=retriever,
        )
        assert hits, "the tenant's own chunks are found"
        assert {hit.chunk_id for hit in hits} <= mine_ids
        assert not {hit.chunk_id for hit in hits} & theirs_ids
        assert {hit.collection_id for hit in hits} == {str(my_docs.id)}


async def test_a_retriever_that_forgets_the_scope_still_cannot_leak(bench: Bench) -> None:
    mine, theirs = bench.tenant(), bench.tenant()
    my_docs = await bench.collection(mine, "docs")
    their_docs = await bench.collection(theirs, "docs")
    marker = uuid.uuid4().hex  # the same text in both tenants, found nowhere else in the database
    same = [Record("wings.txt", f"Wings produce lift {marker}.")]
    await bench.add(my_docs, same)
    await bench.add(their_docs, same)
    hits = await bench.search().search(SearchQuery(marker, mine, [], top_k=10), retriever="leaky")
    assert {hit.chunk_id for hit in hits} == await chunk_ids(bench, my_docs), (
        "the other tenant's chunk is dropped when the host completes the hits"
    )


async def test_another_tenants_collection_is_not_found_like_a_missing_one(bench: Bench) -> None:
    mine, theirs = bench.tenant(), bench.tenant()
    await bench.collection(mine, "docs")
    their_docs = await bench.collection(theirs, "docs")
    await bench.add(their_docs, SAME)
    missing = uuid.uuid4()
    messages = []
    for key in (their_docs.id, missing):
        with pytest.raises(NotFoundError) as info:
            await bench.search().search(SearchQuery("wings", tenant_id=mine, collection_ids=[str(key)]))
        messages.append(info.value.message.replace(str(key), "<id>"))
    assert messages[0] == messages[1] == "collection <id> does not exist"


async def test_only_the_named_collections_are_searched(bench: Bench) -> None:
    tenant = bench.tenant()
    first, second = await bench.collection(tenant, "first"), await bench.collection(tenant, "second")
    await bench.add(first, SAME[:1])
    await bench.add(second, SAME[1:])
    search = bench.search()

    async def collections_of(*named: CollectionInfo) -> set[str]:
        ids = [str(c.id) for c in named]
        hits = await search.search(SearchQuery("wings", tenant, ids, top_k=20), retriever="vector")
        return {hit.collection_id for hit in hits}

    assert await collections_of(first) == {str(first.id)}
    assert await collections_of(second) == {str(second.id)}
    assert await collections_of(first, second) == {str(first.id), str(second.id)}
    assert await collections_of() == {str(first.id), str(second.id)}


async def test_a_tenant_without_collections_finds_nothing(bench: Bench) -> None:
    assert await bench.search().search(SearchQuery("wings", bench.tenant(), [])) == []


async def test_collections_of_different_embedders_are_refused_together(bench: Bench) -> None:
    tenant = bench.tenant()
    wide = await bench.collection(tenant, "wide")
    narrow = await bench.collection(tenant, "narrow", embedder="test-hash-16")
    await bench.add(narrow, SAME)
    with pytest.raises(InvalidRequestError, match="embedded by different embedders") as info:
        await bench.search().search(SearchQuery("wings", tenant, [str(wide.id), str(narrow.id)]))
    assert "test-hash-16" in info.value.message and "test-hash " in info.value.message
    hits = await bench.search().search(SearchQuery("wings", tenant, [str(narrow.id)]), retriever="vector")
    assert hits[0].source == "wings.txt", "one embedder at a time works, with that embedder's index"


def test_retrieval_settings_are_checked() -> None:
    with pytest.raises(
        ValidationError, match=r"retrieval\.top_k \(300\) must not exceed retrieval\.max_top_k \(200\)"
    ):
        RetrievalSettings(top_k=300)
    with pytest.raises(ValidationError, match=r"hybrid_weights\.vector must be 0 or more"):
        RetrievalSettings(hybrid_weights={"vector": -1.0})
    with pytest.raises(ValidationError, match="at least one retriever with a weight above 0"):
        RetrievalSettings(hybrid_weights={"vector": 0.0})


# --- the query --------------------------------------------------------------------------------


async def test_a_given_query_embedding_is_used_and_its_size_checked(bench: Bench) -> None:
    tenant = bench.tenant()
    docs = await bench.collection(tenant)
    await bench.add(docs, SAME)
    [engines] = await bench.embedder.embed(["jet engines fuel"])
    calls = bench.embedder.calls
    hits = await bench.search().search(query(docs, "wings", embedding=engines), retriever="vector")
    assert hits[0].source == "engines.txt" and bench.embedder.calls == calls
    with pytest.raises(InvalidRequestError, match=r"the query embedding has 3 dimensions; .* makes 32"):
        await bench.search().search(query(docs, "wings", embedding=[1.0, 0.0, 0.0]), retriever="vector")


@pytest.mark.parametrize(("text", "message"), [("  ", "the query is empty"), ("x" * 5000, "more than 4096")])
async def test_an_empty_or_huge_query_is_refused(bench: Bench, text: str, message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        await bench.search().search(SearchQuery(text, bench.tenant(), []))


async def test_top_k_defaults_and_is_clamped(bench: Bench) -> None:
    tenant = bench.tenant()
    docs = await bench.collection(tenant)
    await bench.add(docs, [Record(f"n{i}.txt", f"Note {i} about wings.") for i in range(8)])
    search = bench.search(top_k=3, max_top_k=5)
    assert len(await search.search(query(docs, "wings"), retriever="vector")) == 3
    assert len(await search.search(query(docs, "wings", top_k=500), retriever="vector")) == 5
    with pytest.raises(InvalidRequestError, match="top_k must be 0"):
        await search.search(query(docs, "wings", top_k=-1), retriever="vector")


async def test_unknown_retriever_or_reranker_lists_what_is_installed(bench: Bench) -> None:
    with pytest.raises(
        UnknownComponentError,
        match=r"no retriever named 'nope'; available: fulltext, hybrid, keyword, leaky, vector",
    ):
        await bench.search().search(SearchQuery("wings", bench.tenant(), []), retriever="nope")
    with pytest.raises(
        UnknownComponentError, match=r"no reranker named 'nope'; available: diversify, reverse"
    ):
        await bench.search().search(SearchQuery("wings", bench.tenant(), []), reranker="nope")
    with pytest.raises(
        UnknownComponentError, match=r"no retriever named 'bm25'; available: fulltext, hybrid, keyword, leaky"
    ):
        await bench.search(retriever="bm25").search(SearchQuery("wings", bench.tenant(), []))


# --- rerankers --------------------------------------------------------------------------------


async def test_a_reranker_reorders_complete_candidates(bench: Bench) -> None:
    tenant = bench.tenant()
    docs = await bench.collection(tenant)
    await bench.add(
        docs, [Record(f"n{i}.txt", f"Note {i} about wings and lift." * (i + 1)) for i in range(6)]
    )
    search = bench.search(rerank_candidates=6)
    plain = await search.search(query(docs, "wings lift", top_k=6), retriever="vector")
    reversed_ = await search.search(
        query(docs, "wings lift", top_k=6), retriever="vector", reranker="reverse"
    )
    assert [hit.chunk_id for hit in reversed_] == [hit.chunk_id for hit in reversed(plain)]
    # the reranker sees rerank_candidates candidates, then the top k of its order are kept
    top2 = await search.search(query(docs, "wings lift", top_k=2), retriever="vector", reranker="reverse")
    assert [hit.chunk_id for hit in top2] == [hit.chunk_id for hit in reversed(plain)][:2]
    # configured once for every search; "none" turns it off for one request
    configured = bench.search(rerank_candidates=6, reranker="reverse")
    assert [
        h.chunk_id for h in await configured.search(query(docs, "wings lift", top_k=6), retriever="vector")
    ] == [hit.chunk_id for hit in reversed_]
    off = await configured.search(query(docs, "wings lift", top_k=6), retriever="vector", reranker="none")
    assert [hit.chunk_id for hit in off] == [hit.chunk_id for hit in plain]


async def test_diversify_brings_other_documents_up(bench: Bench) -> None:
    tenant = bench.tenant()
    docs = await bench.collection(tenant)
    long_text = "\n\n".join(f"Part {i}: wings make lift and lift holds the wings up." * 3 for i in range(6))
    await bench.add(
        docs,
        [
            Record("manual.txt", long_text),
            Record("memo.txt", "A memo on wings, with a word on budgets and staff."),
            Record("faq.txt", "Questions on lift, answered for pilots and passengers."),
        ],
    )
    plain = await bench.search().search(query(docs, "wings lift", top_k=3), retriever="vector")
    assert [hit.source for hit in plain] == ["manual.txt"] * 3, "precondition: one document fills the top"
    diverse = await bench.search().search(
        query(docs, "wings lift", top_k=3), retriever="vector", reranker="diversify"
    )
    assert diverse[0].chunk_id == plain[0].chunk_id, "the best chunk stays first"
    assert {hit.source for hit in diverse} == {"manual.txt", "memo.txt", "faq.txt"}
    assert [hit.score for hit in diverse] == sorted((hit.score for hit in diverse), reverse=True)


# --- the examples of docs/hooks.md run as written -------------------------------------------------


def hook_example(hook: str) -> ModuleType:
    """The example plugin of ``## <hook>`` in docs/hooks.md, as a module."""
    text = (Path(__file__).parents[2] / "docs" / "hooks.md").read_text()
    section = re.search(rf"^## {hook}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert section is not None
    [code] = [
        block for block in re.findall(r"```python\n(.*?)```", section.group(1), re.S) if "@hookimpl" in block
    ]
    module = ModuleType(f"hooks_md_{hook}")
    exec(compile(code, f"docs/hooks.md#{hook}", "exec"), module.__dict__)
    return module


async def test_the_documented_retriever_and_reranker_work(db_engine: AsyncEngine) -> None:
    embedder = HashEmbedder()
    plugins = load_plugins(
        selection=PluginSelection(allow=["text", "basic-cleaners"]),
        extra=[
            ("test", plugin(embedder)),
            ("newest", hook_example("register_retrievers")),
            ("prefer-recent", hook_example("register_rerankers")),
        ],
    )
    bench = Bench(db_engine, plugins, embedder)
    await bench.ingestion.start()
    try:
        tenant, other = bench.tenant(), bench.tenant()
        docs = await bench.collection(tenant)
        await bench.add(docs, [Record("old.txt", "Old wings.", {"year": 2001})])
        await bench.add(docs, [Record("new.txt", "New wings.", {"year": 2024})])
        await bench.add(await bench.collection(other), [Record("theirs.txt", "Their wings.")])
        search = bench.search(retriever="newest")
        hits = await search.search(query(docs, "anything", top_k=5))
        assert [hit.source for hit in hits] == ["new.txt", "old.txt"], "newest first, and only in scope"
        hits = await search.search(
            query(docs, "anything", top_k=5, options={"year_bonus": -1}), reranker="prefer-recent"
        )
        assert [hit.source for hit in hits] == ["old.txt", "new.txt"]
    finally:
        await bench.ingestion.stop()


async def test_concurrent_searches_embed_their_queries_together_and_each_gets_its_own_hits(
    bench: Bench,
) -> None:
    """Searches that run at the same time (chat turns starting together) share batched embedding
    calls (opentier/engine/coalesce.py); each still finds what it would find alone."""
    tenant = bench.tenant()
    docs = await bench.collection(tenant)
    await bench.add(docs, [*SAME, Record("boats.txt", "Boats float because water pushes them up.", {})])
    search = bench.search()
    questions = ["how do wings make lift", "what do jet engines burn", "why do boats float"] * 10
    alone = [
        [hit.source for hit in await search.search(query(docs, text), retriever="vector")]
        for text in questions[:3]
    ]
    before = bench.embedder.calls
    bench.embedder.delay = 0.02  # a model run takes a moment: what arrives meanwhile waits for the next
    try:
        together = await asyncio.gather(
            *(search.search(query(docs, text), retriever="vector") for text in questions)
        )
    finally:
        bench.embedder.delay = 0.0
    assert [[hit.source for hit in hits] for hits in together] == alone * 10
    assert len({tuple(sources) for sources in alone}) > 1  # the questions find different things
    assert bench.embedder.calls - before <= 5  # 30 queries, a few model calls
