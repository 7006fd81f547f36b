"""Reciprocal rank fusion and the diversify reranker, on hand-made rankings (no database needed)."""

from __future__ import annotations

import pytest
from opentier_reranker_diversify import diversify, relevance_weight
from opentier_retriever_hybrid import fuse

from opentier.components import SearchHit
from opentier.errors import InvalidRequestError


def hits(*ids: str, doc: dict[str, str] | None = None) -> list[SearchHit]:
    return [
        SearchHit(chunk_id=key, score=float(len(ids) - i), document_id=(doc or {}).get(key, key))
        for i, key in enumerate(ids)
    ]


def test_fuse_sums_weighted_reciprocal_ranks() -> None:
    fused = fuse([(1.0, hits("a", "b", "c")), (2.0, hits("c", "d"))], k=10)
    scores = {hit.chunk_id: hit.score for hit in fused}
    assert scores == pytest.approx({"a": 1 / 11, "b": 1 / 12, "c": 1 / 13 + 2 / 11, "d": 2 / 12})
    assert [hit.chunk_id for hit in fused] == ["c", "d", "a", "b"]


def test_a_part_that_found_the_document_lends_its_rank_to_the_other_chunks_of_it() -> None:
    # The meaning is in chunk a of document D, the words in chunk b of D: each part finds one of them.
    vector, fulltext = hits("a", "x"), hits("c", "b")
    plain = fuse([(1.0, vector), (1.0, fulltext)], k=60)
    assert plain[0].score == pytest.approx(1 / 61) and {h.chunk_id for h in plain[:2]} == {"a", "c"}
    fused = fuse([(1.0, vector), (1.0, fulltext)], k=60, documents={"a": "D", "b": "D", "c": "E", "x": "F"})
    assert {h.chunk_id for h in fused[:2]} == {"a", "b"}, "document D was found by both parts"
    assert fused[0].score == pytest.approx(1 / 61 + 1 / 62)
    assert [h.chunk_id for h in fused[2:]] == ["c", "x"]
    # Hits that carry their document id need no mapping.
    with_ids = [
        SearchHit(chunk_id=h.chunk_id, score=h.score, document_id={"a": "D", "x": "F"}[h.chunk_id])
        for h in vector
    ]
    assert {h.chunk_id for h in fuse([(1.0, with_ids), (1.0, fulltext)], k=60, documents={"b": "D"})[:2]} == {
        "a",
        "b",
    }


def test_with_documents_ranks_count_documents_not_the_chunks_of_another_document() -> None:
    # The vector part found three chunks of document A before the first chunk of B: B is its second
    # document, so B's chunk is ranked 2 (not 4), as RRF over documents would rank it; A's own later
    # chunks still rank below A's first.
    docs = {"a1": "A", "a2": "A", "a3": "A", "b1": "B", "c1": "C"}
    vector, fulltext = hits("a1", "a2", "a3", "b1"), hits("c1", "b1")
    fused = {h.chunk_id: h.score for h in fuse([(1.0, vector), (1.0, fulltext)], k=60, documents=docs)}
    assert fused["b1"] == pytest.approx(1 / 62 + 1 / 62)
    assert fused["a1"] == pytest.approx(1 / 61) and fused["a2"] == pytest.approx(1 / 62)
    assert fused["a3"] == pytest.approx(1 / 63)
    assert fused["c1"] == pytest.approx(1 / 61)
    # Without documents every chunk counts: b1 is fourth in the vector part.
    plain = {h.chunk_id: h.score for h in fuse([(1.0, vector), (1.0, fulltext)], k=60)}
    assert plain["b1"] == pytest.approx(1 / 64 + 1 / 62)


def test_a_documents_best_chunk_carries_the_documents_fused_score() -> None:
    # Each part ranks a different chunk of D first, and also found the other one lower down: no chunk
    # holds both first places, yet D is first in both parts, so D must come first with 2 / 61.
    docs = {"d1": "D", "d2": "D", "e1": "E", "f1": "F"}
    vector, fulltext = hits("d1", "e1", "d2"), hits("d2", "f1", "d1")
    fused = fuse([(1.0, vector), (1.0, fulltext)], k=60, documents=docs)
    assert fused[0].chunk_id in {"d1", "d2"} and fused[0].score == pytest.approx(2 / 61)
    others = {h.chunk_id: h.score for h in fused[1:]}
    assert max(others.values()) < 2 / 61


def test_equal_scores_go_to_the_earlier_parts_better_rank_not_to_the_id() -> None:
    # x is third for the first part only, a third for the second only: equal sums, equal best ranks.
    first, second = hits("p", "q", "x"), hits("r", "s", "a")
    assert [h.chunk_id for h in fuse([(1.0, first), (1.0, second)], k=60)][4:] == ["x", "a"]
    assert [h.chunk_id for h in fuse([(1.0, second), (1.0, first)], k=60)][4:] == ["a", "x"]


def test_fuse_breaks_ties_by_best_rank_then_id() -> None:
    # w and z: ranks 1 and 2 each, so equal sums and equal best ranks; the smaller id goes first
    fused = fuse([(1.0, hits("w", "z")), (1.0, hits("z", "w"))], k=60)
    assert [hit.chunk_id for hit in fused] == ["w", "z"]
    assert fused[0].score == fused[1].score


def test_fuse_counts_a_repeated_chunk_once_per_part() -> None:
    fused = fuse([(1.0, hits("a", "a", "b"))], k=60)
    assert {hit.chunk_id: hit.score for hit in fused} == pytest.approx({"a": 1 / 61, "b": 1 / 62})


def test_diversify_puts_each_documents_best_chunk_first() -> None:
    docs = {"a1": "A", "a2": "A", "a3": "A", "b1": "B", "c1": "C"}
    ranked = diversify(hits("a1", "a2", "a3", "b1", "c1", doc=docs))
    assert [hit.chunk_id for hit in ranked] == ["a1", "b1", "c1", "a2", "a3"]
    assert [hit.score for hit in ranked] == sorted((hit.score for hit in ranked), reverse=True)


def test_diversify_near_one_keeps_relevance_order() -> None:
    docs = {"a1": "A", "a2": "A", "b1": "B"}
    assert [hit.chunk_id for hit in diversify(hits("a1", "a2", "b1", doc=docs), 1.0)] == ["a1", "a2", "b1"]
    # a little diversity only reorders chunks whose relevance is close
    close = [
        SearchHit("a1", 1.00, document_id="A"),
        SearchHit("a2", 0.99, document_id="A"),
        SearchHit("b1", 0.98, document_id="B"),
        SearchHit("c1", 0.00, document_id="C"),
    ]
    assert [hit.chunk_id for hit in diversify(close, 0.9)] == ["a1", "b1", "a2", "c1"]


def test_diversify_of_nothing_and_of_equal_scores() -> None:
    assert diversify([]) == []
    same = [SearchHit("a1", 0.5, document_id="A"), SearchHit("a2", 0.5, document_id="A"), SearchHit("b", 0.5)]
    assert [hit.chunk_id for hit in diversify(same)] == ["a1", "b", "a2"]


@pytest.mark.parametrize("value", [-0.1, 1.5, "high", True])
def test_diversify_lambda_is_checked(value: object) -> None:
    with pytest.raises(InvalidRequestError, match=r"options\.lambda"):
        relevance_weight({"lambda": value})
