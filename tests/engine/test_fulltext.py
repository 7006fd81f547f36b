"""The `fulltext` retriever and its BM25 statistics, on the real PostgreSQL with real ingestion.

Expected scores are computed here from BM25's definition (Lucene's idf, k1 = 1.2, b = 0.75), from
term frequencies read back from the stored tsvectors and lengths from ``chunks.token_count``; the
retriever has to agree with that to the last digits, whatever pruning it does on the way.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
import pytest_asyncio
import sqlalchemy as sa
from opentier_retriever_fulltext import FulltextRetriever
from opentier_retriever_fulltext.options import configured
from opentier_retriever_fulltext.retriever import Tuning
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from opentier.components import ComponentKind, SearchHit
from opentier.engine.collections import CollectionInfo
from opentier.engine.jobs import ItemSpec, JobOptions
from opentier.errors import ConfigError, InvalidRequestError
from opentier.plugin_manager import PluginSelection, load_plugins

from .helpers import HashEmbedder, plugin
from .searching import Bench, Record, query

K1, B = 1.2, 0.75


@pytest_asyncio.fixture(scope="module")
async def bench(db_engine: AsyncEngine) -> AsyncIterator[Bench]:
    embedder = HashEmbedder()
    plugins = load_plugins(
        selection=PluginSelection(allow=["text", "basic-cleaners", "fulltext"]),
        extra=[("test", plugin(embedder))],
    )
    bench = Bench(db_engine, plugins, embedder)
    await bench.ingestion.start()
    try:
        yield bench
    finally:
        await bench.ingestion.stop()


def retriever(bench: Bench) -> FulltextRetriever:
    found = bench.plugins.registry.get(ComponentKind.RETRIEVER, "fulltext")
    assert isinstance(found, FulltextRetriever)
    return found


async def search(bench: Bench, collection: CollectionInfo, text: str, **fields: Any) -> list[SearchHit]:
    return await bench.search().search(query(collection, text, **fields), retriever="fulltext")


def sources(hits: Sequence[SearchHit]) -> list[str]:
    return [hit.source for hit in hits]


async def run_items(bench: Bench, collection: CollectionInfo, items: list[ItemSpec]) -> None:
    job = await bench.ingestion.create_job(
        collection.tenant_id, collection.id, {"stream": True}, JobOptions(), items
    )
    done = await asyncio.wait_for(bench.ingestion.wait(collection.tenant_id, job.id), 60)
    assert done.status == "succeeded", done


# --- what BM25 should say, computed from the stored chunks ----------------------------------------


async def corpus(engine: AsyncEngine, collection: CollectionInfo) -> dict[str, tuple[Counter[str], int]]:
    """chunk id -> (lexeme -> tf, token_count), straight from the chunks table."""
    found: dict[str, tuple[Counter[str], int]] = {}
    async with engine.connect() as conn:
        rows = await conn.execute(
            sa.text(
                "SELECT c.id, c.token_count, u.lexeme, cardinality(u.positions) FROM intelligence.chunks c "
                "LEFT JOIN LATERAL unnest(c.tsv) u ON true WHERE c.collection_id = :c"
            ),
            {"c": collection.id},
        )
        for chunk_id, length, lexeme, tf in rows:
            counts, _ = found.setdefault(str(chunk_id), (Counter(), int(length)))
            if lexeme is not None:
                counts[lexeme] = int(tf)
    return found


async def lexemes(engine: AsyncEngine, language: str, text: str) -> Counter[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            sa.text(
                "SELECT lexeme, cardinality(positions) FROM unnest(to_tsvector(CAST(:l AS regconfig), :t))"
            ),
            {"l": language, "t": text},
        )
        return Counter({lexeme: int(tf) for lexeme, tf in rows})


def bm25(
    chunks: dict[str, tuple[Counter[str], int]], terms: Counter[str], k1: float = K1, b: float = B
) -> dict[str, float]:
    n = len(chunks)
    average = sum(length for _, length in chunks.values()) / n
    scores: dict[str, float] = {}
    for term, qtf in terms.items():
        df = sum(1 for counts, _ in chunks.values() if term in counts)
        if df == 0:
            continue
        idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
        for chunk_id, (counts, length) in chunks.items():
            tf = counts.get(term, 0)
            if tf:
                norm = 1 - b + b * length / average
                scores[chunk_id] = scores.get(chunk_id, 0.0) + qtf * idf * tf * (k1 + 1) / (tf + k1 * norm)
    return scores


def best(scores: dict[str, float], k: int) -> list[tuple[str, float]]:
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))[:k]


async def statistics(engine: AsyncEngine, collection: CollectionInfo) -> tuple[int, int, dict[str, int]]:
    """(N, tokens, lexeme -> chunks) as the statistics tables sum them."""
    async with engine.connect() as conn:
        n, tokens = (
            await conn.execute(
                sa.text(
                    "SELECT coalesce(sum(chunks), 0), coalesce(sum(tokens), 0) "
                    "FROM intelligence.fulltext_totals WHERE collection_id = :c"
                ),
                {"c": collection.id},
            )
        ).one()
        rows = await conn.execute(
            sa.text(
                "SELECT lexeme, sum(chunks) FROM intelligence.fulltext_terms WHERE collection_id = :c "
                "GROUP BY lexeme HAVING sum(chunks) <> 0"
            ),
            {"c": collection.id},
        )
        return int(n), int(tokens), {lexeme: int(count) for lexeme, count in rows}


async def assert_statistics_match_chunks(engine: AsyncEngine, collection: CollectionInfo) -> None:
    chunks = await corpus(engine, collection)
    frequencies = Counter(lexeme for counts, _ in chunks.values() for lexeme in counts)
    n, tokens, stored = await statistics(engine, collection)
    assert n == len(chunks)
    assert tokens == sum(length for _, length in chunks.values())
    assert stored == dict(frequencies)


AIRCRAFT = [
    Record("a.txt", "Wing flutter of a thin panel at supersonic speed."),
    Record("b.txt", "Panel flutter: the panel flutter boundary of a flat panel in supersonic flow."),
    Record("c.txt", "Boundary layer transition on a swept wing, measured in a wind tunnel."),
    Record("d.txt", "Heat transfer to a blunt body at hypersonic speed."),
    Record("e.txt", "The flutter of the panel was not observed, a wing was tested instead."),
]


# --- ranking ----------------------------------------------------------------------------------------


async def test_scores_are_bm25_computed_by_hand(bench: Bench) -> None:
    docs = await bench.collection(bench.tenant())
    await bench.add(docs, AIRCRAFT)
    text = "panel flutter at supersonic speed"

    hits = await search(bench, docs, text, top_k=10)

    expected = best(bm25(await corpus(bench.engine, docs), await lexemes(bench.engine, "english", text)), 10)
    assert [(hit.chunk_id, hit.score) for hit in hits] == [
        (key, pytest.approx(score)) for key, score in expected
    ]
    # a.txt holds all four terms and is short; b.txt repeats two of them; c.txt holds none
    assert sources(hits) == ["a.txt", "b.txt", "e.txt", "d.txt"]
    assert hits[0].text.startswith("Wing flutter")  # hits come back complete, for citations


async def test_a_question_needs_only_some_of_its_words(bench: Bench) -> None:
    docs = await bench.collection(bench.tenant())
    await bench.add(docs, AIRCRAFT)

    hits = await search(bench, docs, "what do we know about heat transfer to elephants?")

    assert sources(hits) == ["d.txt"]  # "elephants" is nowhere: a conjunction would find nothing


async def test_quoted_phrases_must_appear_in_order(bench: Bench) -> None:
    docs = await bench.collection(bench.tenant())
    await bench.add(docs, AIRCRAFT)

    phrase = await search(bench, docs, '"panel flutter"')
    either = await search(bench, docs, '"panel flutter" OR "swept wing"')
    ranked_by_more = await search(bench, docs, '"wing flutter" supersonic panel')

    assert sources(phrase) == ["b.txt"]  # e.txt has both words, but not as the phrase
    assert set(sources(either)) == {"b.txt", "c.txt"}
    assert sources(ranked_by_more) == ["a.txt"]


async def test_excluded_words_and_phrases_never_appear(bench: Bench) -> None:
    docs = await bench.collection(bench.tenant())
    await bench.add(docs, AIRCRAFT)

    without_wing = await search(bench, docs, "flutter -wing")
    without_phrase = await search(bench, docs, 'flutter panel -"panel flutter"')

    assert set(sources(without_wing)) == {"b.txt"}
    assert set(sources(without_phrase)) == {"a.txt", "e.txt"}
    assert await search(bench, docs, "-flutter") == []  # nothing left to rank by


async def test_a_metadata_filter_keeps_the_top_k_full(bench: Bench) -> None:
    docs = await bench.collection(bench.tenant())
    # The best chunks for "flutter" are the repeated ones, all filtered out: the k hits must come
    # from the few that pass the filter, however far down the ranking they are.
    loud = [Record(f"loud{i}.txt", "flutter flutter flutter panel", {"kind": "loud"}) for i in range(30)]
    quiet = [
        Record(f"quiet{i}.txt", f"one flutter among many other words {i}", {"kind": "quiet"})
        for i in range(3)
    ]
    await bench.add(docs, [*loud, *quiet])

    hits = await search(bench, docs, "flutter", top_k=5, filters={"kind": "quiet"})

    assert sorted(sources(hits)) == ["quiet0.txt", "quiet1.txt", "quiet2.txt"]


async def test_stop_words_and_unknown_words_find_nothing(bench: Bench) -> None:
    docs = await bench.collection(bench.tenant())
    await bench.add(docs, AIRCRAFT)

    assert await search(bench, docs, "the of a was") == []
    assert await search(bench, docs, "zeppelin") == []


async def test_the_collections_language_is_used(bench: Bench) -> None:
    tenant = bench.tenant()
    english = await bench.collection(tenant, "english", language="english")
    simple = await bench.collection(tenant, "simple", language="simple")
    for collection in (english, simple):
        await bench.add(collection, [Record("w.txt", "The wings were flying over the tunnels.")])

    assert sources(await search(bench, english, "wing tunnel")) == ["w.txt"]  # stemmed
    assert await search(bench, simple, "wing tunnel") == []  # 'simple' does not stem
    assert sources(await search(bench, simple, "wings")) == ["w.txt"]
    assert await search(bench, english, "the were") == []  # english stop words
    assert sources(await search(bench, simple, "the were")) == ["w.txt"]


async def test_collections_of_two_languages_are_searched_together(bench: Bench) -> None:
    tenant = bench.tenant()
    english = await bench.collection(tenant, "english", language="english")
    simple = await bench.collection(tenant, "simple", language="simple")
    await bench.add(english, [Record("en.txt", "Wings over tunnels.")])
    await bench.add(simple, [Record("simple.txt", "Wings over tunnels.")])

    both = await bench.search().search(query(None, "wings", tenant=tenant), retriever="fulltext")

    assert sorted(sources(both)) == ["en.txt", "simple.txt"]


async def test_request_options_change_k1_and_b(bench: Bench) -> None:
    docs = await bench.collection(bench.tenant())
    await bench.add(docs, AIRCRAFT)
    text = "panel flutter"
    chunks = await corpus(bench.engine, docs)
    terms = await lexemes(bench.engine, "english", text)

    hits = await search(bench, docs, text, options={"k1": 2.0, "b": 0.0, "depth": 50})

    assert [(h.chunk_id, h.score) for h in hits] == [
        (key, pytest.approx(score)) for key, score in best(bm25(chunks, terms, k1=2.0, b=0.0), 8)
    ]
    with pytest.raises(InvalidRequestError, match=r"options\.b must be a number from 0 to 1"):
        await search(bench, docs, text, options={"b": 1.5})
    with pytest.raises(InvalidRequestError, match=r"options\.k1"):
        await search(bench, docs, text, options={"k1": "big"})


def test_plugin_options_are_checked() -> None:
    assert configured({"k1": 1.5}).k1 == 1.5
    assert configured({}).b == 0.75
    with pytest.raises(ConfigError, match=r"unknown option\(s\) k3"):
        configured({"k3": 1})
    with pytest.raises(ConfigError, match="b must be a number from 0 to 1"):
        configured({"b": -1})


# --- pruning never changes the answer ---------------------------------------------------------------


def zipf_texts(rng: random.Random, count: int, vocabulary: int = 300) -> list[str]:
    words = [f"w{index}x" for index in range(vocabulary)]
    weights = [1 / (rank + 1) for rank in range(vocabulary)]
    return [" ".join(rng.choices(words, weights, k=rng.randint(5, 40))) for _ in range(count)]


@pytest.mark.parametrize("k", [1, 3, 10])
async def test_pruned_search_is_exactly_bm25(bench: Bench, k: int) -> None:
    rng = random.Random(k)
    docs = await bench.collection(bench.tenant())
    texts = zipf_texts(rng, 150)
    await bench.add(docs, [Record(f"z{i}.txt", text) for i, text in enumerate(texts)])
    chunks = await corpus(bench.engine, docs)
    component = retriever(bench)
    # The floor, term sets and the bar, always (the defaults keep them for big collections).
    component.tuning = Tuning(seed_postings=0, floor_postings=0, exact_extra=0)
    try:
        for _ in range(12):
            text = " ".join(rng.sample(texts[rng.randrange(len(texts))].split(), 3))
            expected = best(bm25(chunks, await lexemes(bench.engine, "english", text)), k)

            hits = await search(bench, docs, text, top_k=k)

            assert [hit.score for hit in hits] == pytest.approx([score for _, score in expected]), text
            # equal scores may come in another order; every hit must have its true score
            truth = bm25(chunks, await lexemes(bench.engine, "english", text))
            assert all(truth[hit.chunk_id] == pytest.approx(hit.score) for hit in hits)
    finally:
        component.tuning = Tuning()


# --- statistics follow the chunks -------------------------------------------------------------------


async def test_a_replaced_document_takes_its_statistics_with_it(bench: Bench) -> None:
    docs = await bench.collection(bench.tenant())
    await bench.add(docs, [*AIRCRAFT, Record("z.txt", "Zeppelin hangar doors.")])
    n_before, _, frequencies = await statistics(bench.engine, docs)
    assert frequencies["zeppelin"] == 1

    await bench.add(docs, [Record("z.txt", "Airship mooring mast.")])

    n_after, _, frequencies = await statistics(bench.engine, docs)
    assert "zeppelin" not in frequencies and frequencies["airship"] == 1
    assert n_after == n_before
    assert await search(bench, docs, "zeppelin") == []
    assert sources(await search(bench, docs, "airship")) == ["z.txt"]
    await assert_statistics_match_chunks(bench.engine, docs)


async def test_a_deleted_document_lowers_n(bench: Bench) -> None:
    docs = await bench.collection(bench.tenant())
    await bench.add(docs, AIRCRAFT)
    n_before, tokens_before, _ = await statistics(bench.engine, docs)
    before = await search(bench, docs, "panel")

    await run_items(bench, docs, [ItemSpec("remove", "b.txt")])

    n_after, tokens_after, frequencies = await statistics(bench.engine, docs)
    assert n_after == n_before - 1 and tokens_after < tokens_before
    assert frequencies["panel"] == 2  # a.txt and e.txt
    after = await search(bench, docs, "panel")
    assert "b.txt" in sources(before) and "b.txt" not in sources(after)
    await assert_statistics_match_chunks(bench.engine, docs)


async def test_updated_chunks_are_counted_again(bench: Bench) -> None:
    docs = await bench.collection(bench.tenant())
    await bench.add(docs, AIRCRAFT)

    async with bench.engine.begin() as conn:
        await conn.execute(
            sa.text(
                "UPDATE intelligence.chunks SET tsv = to_tsvector('english', 'zeppelin zeppelin'), "
                "token_count = 4 WHERE collection_id = :c AND text LIKE 'Heat%'"
            ),
            {"c": docs.id},
        )

    _, _, frequencies = await statistics(bench.engine, docs)
    assert frequencies["zeppelin"] == 1 and "hypersonic" not in frequencies
    await assert_statistics_match_chunks(bench.engine, docs)


async def test_a_deleted_collection_leaves_no_statistics(bench: Bench) -> None:
    tenant = bench.tenant()
    docs = await bench.collection(tenant)
    await bench.add(docs, AIRCRAFT)

    await bench.collections.delete(tenant, docs.id)

    async with bench.engine.connect() as conn:
        left = await conn.scalar(
            sa.text(
                "SELECT (SELECT count(*) FROM intelligence.fulltext_terms WHERE collection_id = :c) "
                "+ (SELECT count(*) FROM intelligence.fulltext_totals WHERE collection_id = :c)"
            ),
            {"c": docs.id},
        )
    assert left == 0


async def test_other_tenants_and_collections_neither_appear_nor_weigh(bench: Bench) -> None:
    mine = await bench.collection(bench.tenant())
    await bench.add(mine, AIRCRAFT)
    before = await search(bench, mine, "panel flutter")

    theirs = await bench.collection(bench.tenant())  # another tenant, the same texts and more
    await bench.add(theirs, [*AIRCRAFT, *(Record(f"p{i}.txt", "panel panel flutter") for i in range(20))])
    sibling = await bench.collection(mine.tenant_id, "sibling")  # my other collection
    await bench.add(sibling, [Record("s.txt", "panel flutter panel flutter")])
    after = await search(bench, mine, "panel flutter")

    assert [(h.chunk_id, h.score) for h in after] == [(h.chunk_id, pytest.approx(h.score)) for h in before]
    assert {h.collection_id for h in after} == {str(mine.id)}
    n, _, _ = await statistics(bench.engine, mine)
    assert n == len(AIRCRAFT)


# --- concurrent writers -----------------------------------------------------------------------------


async def insert_document(
    conn: AsyncConnection,
    collection: CollectionInfo,
    source: str,
    texts: Sequence[str],
    *,
    one_statement: bool,
) -> None:
    """A document with ``texts`` as chunks: one INSERT for all, or one per chunk (as ingestion does)."""
    document_id = await conn.scalar(
        sa.text(
            "INSERT INTO intelligence.documents (tenant_id, collection_id, source, status) "
            "VALUES (:t, :c, :s, 'ready') RETURNING id"
        ),
        {"t": collection.tenant_id, "c": collection.id, "s": source},
    )
    insert = sa.text(
        "INSERT INTO intelligence.chunks (tenant_id, collection_id, document_id, ordinal, text, "
        "token_count, tsv) SELECT :t, :c, :d, o - 1, x, 5, to_tsvector('english', x) "
        "FROM unnest(CAST(:x AS text[])) WITH ORDINALITY AS u(x, o)"
    )
    params = {"t": collection.tenant_id, "c": collection.id, "d": document_id}
    if one_statement:
        await conn.execute(insert, {**params, "x": list(texts)})
    else:
        for ordinal, text in enumerate(texts):
            await conn.execute(
                sa.text(
                    "INSERT INTO intelligence.chunks (tenant_id, collection_id, document_id, ordinal, "
                    "text, token_count, tsv) VALUES (:t, :c, :d, :o, :x, 5, to_tsvector('english', :x))"
                ),
                {**params, "o": ordinal, "x": text},
            )


async def pending(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(sa.text("SELECT count(*) FROM intelligence.fulltext_pending")) or 0)


@pytest.mark.parametrize("one_statement", [True, False], ids=["batch", "row-by-row"])
async def test_two_writers_of_one_collection_do_not_wait_for_each_other(
    bench: Bench, one_statement: bool
) -> None:
    docs = await bench.collection(bench.tenant())
    await bench.add(docs, AIRCRAFT)
    ones = [f"panel flutter wing {i}" for i in range(8)]
    twos = [f"panel flutter drag {i}" for i in range(8)]
    async with bench.engine.connect() as first, bench.engine.connect() as second:
        await first.begin()
        await second.begin()
        await second.execute(sa.text("SET LOCAL lock_timeout = '2s'"))
        await insert_document(first, docs, "one.txt", ones, one_statement=one_statement)
        # The first transaction is open and has counted (or noted) its words: the second writes the
        # same words to the same collection and commits without waiting for it.
        await asyncio.wait_for(insert_document(second, docs, "two.txt", twos, one_statement=one_statement), 5)
        await asyncio.wait_for(second.commit(), 5)
        await first.commit()

    _, _, frequencies = await statistics(bench.engine, docs)
    assert frequencies["panel"] == 3 + 16 and frequencies["drag"] == 8
    await assert_statistics_match_chunks(bench.engine, docs)
    assert await pending(bench.engine) == 0


async def test_concurrent_batches_take_different_slots(bench: Bench) -> None:
    docs = await bench.collection(bench.tenant())
    texts = [f"panel flutter {i}" for i in range(8)]
    async with bench.engine.connect() as first, bench.engine.connect() as second:
        await first.begin()
        await second.begin()
        await insert_document(first, docs, "one.txt", texts, one_statement=True)
        await insert_document(second, docs, "two.txt", texts, one_statement=True)
        await second.commit()
        await first.commit()

    async with bench.engine.connect() as conn:
        slots = await conn.scalar(
            sa.text(
                "SELECT count(DISTINCT slot) FROM intelligence.fulltext_terms "
                "WHERE collection_id = :c AND lexeme = 'panel'"
            ),
            {"c": docs.id},
        )
    assert slots == 2  # each writer added to its own row
    await assert_statistics_match_chunks(bench.engine, docs)


async def test_chunks_written_and_deleted_in_one_transaction_leave_nothing(bench: Bench) -> None:
    docs = await bench.collection(bench.tenant())
    await bench.add(docs, AIRCRAFT)
    before = await statistics(bench.engine, docs)

    async with bench.engine.begin() as conn:
        await insert_document(conn, docs, "brief.txt", ["zeppelin panel"], one_statement=False)
        await insert_document(conn, docs, "batch.txt", ["zeppelin wing"] * 8, one_statement=True)
        await conn.execute(
            sa.text(
                "DELETE FROM intelligence.documents WHERE collection_id = :c AND source IN ('brief.txt', 'batch.txt')"
            ),
            {"c": docs.id},
        )

    assert await statistics(bench.engine, docs) == before
    assert await pending(bench.engine) == 0


async def test_a_rolled_back_write_leaves_the_statistics_as_they_were(bench: Bench) -> None:
    docs = await bench.collection(bench.tenant())
    await bench.add(docs, AIRCRAFT)
    before = await statistics(bench.engine, docs)

    async with bench.engine.connect() as conn:
        await conn.begin()
        await insert_document(conn, docs, "gone.txt", ["zeppelin panel"] * 9, one_statement=True)
        await conn.rollback()

    assert await statistics(bench.engine, docs) == before
