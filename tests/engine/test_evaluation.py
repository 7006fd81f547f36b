"""The metrics against cases computed by hand (log2 discounts written out)."""

from __future__ import annotations

import math

import pytest

from opentier.engine.evaluation import evaluate, ndcg_at, recall_at, reciprocal_rank_at, unique

JUDGED = {"a": 1, "b": 1, "c": 1, "n": 0}


def test_ndcg_binary_counts_the_ideal_from_the_judgments() -> None:
    # Found a (rank 1) and b (rank 3); c was never found but still sits in the ideal ranking.
    found = 1 / math.log2(2) + 1 / math.log2(4)
    ideal = 1 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(4)
    assert ndcg_at(["a", "x", "b"], JUDGED) == pytest.approx(found / ideal)
    assert ndcg_at(["a", "x", "b"], JUDGED) == pytest.approx(0.703918, abs=1e-6)


def test_ndcg_is_one_for_a_perfect_ranking_and_zero_when_nothing_relevant_is_found() -> None:
    assert ndcg_at(["b", "c", "a", "x"], JUDGED) == pytest.approx(1.0)
    assert ndcg_at(["n", "x", "y"], JUDGED) == 0.0  # grade 0 is judged, not relevant
    assert ndcg_at(["a"], {"n": 0}) == 0.0  # nothing relevant to find


def test_ndcg_graded_uses_the_grade_as_gain_and_binary_ignores_it() -> None:
    judged = {"a": 2, "b": 3, "c": 1}
    found = 2 / math.log2(2) + 3 / math.log2(4)
    ideal = 3 / math.log2(2) + 2 / math.log2(3) + 1 / math.log2(4)
    assert ndcg_at(["a", "x", "b"], judged, graded=True) == pytest.approx(found / ideal)
    assert ndcg_at(["a", "x", "b"], judged) == pytest.approx(ndcg_at(["a", "x", "b"], JUDGED))


def test_ndcg_looks_at_the_first_k_only() -> None:
    ranking = [f"x{i}" for i in range(10)] + ["a"]
    assert ndcg_at(ranking, JUDGED, k=10) == 0.0
    assert ndcg_at(ranking, JUDGED, k=11) > 0.0


def test_recall_at_k() -> None:
    ranking = ["a", *[f"x{i}" for i in range(20)], "b"]
    assert recall_at(ranking, JUDGED, 10) == pytest.approx(1 / 3)
    assert recall_at(ranking, JUDGED, 100) == pytest.approx(2 / 3)
    assert recall_at(["a", "b", "c"], JUDGED, 10) == 1.0


def test_reciprocal_rank_of_the_first_relevant_document_within_k() -> None:
    assert reciprocal_rank_at(["a", "b"], JUDGED) == 1.0
    assert reciprocal_rank_at(["x", "n", "c"], JUDGED) == pytest.approx(1 / 3)
    assert reciprocal_rank_at([f"x{i}" for i in range(10)] + ["a"], JUDGED) == 0.0


def test_evaluate_averages_over_queries_with_a_relevant_document() -> None:
    qrels = {
        "q1": {"a": 1},  # found first: every metric 1
        "q2": {"b": 1, "c": 1},  # found c at rank 2 only
        "q3": {"z": 0},  # nothing relevant: left out
        "q4": {"d": 1},  # not in the run at all: counts as nothing found
    }
    run = {"q1": ["a"], "q2": ["x", "c", "c"], "q3": ["z"]}
    metrics = evaluate(run, qrels)
    assert metrics.queries == 3
    q2_ndcg = (1 / math.log2(3)) / (1 + 1 / math.log2(3))
    assert metrics.ndcg_10 == pytest.approx((1.0 + q2_ndcg + 0.0) / 3)
    assert metrics.recall_10 == pytest.approx((1.0 + 0.5 + 0.0) / 3)
    assert metrics.recall_100 == pytest.approx(metrics.recall_10)
    assert metrics.mrr_10 == pytest.approx((1.0 + 0.5 + 0.0) / 3)


def test_repeated_documents_count_once() -> None:
    # Two chunks of one document do not push the next document down the ranking.
    assert unique(["a", "a", "x", "b", "a"]) == ["a", "x", "b"]
    assert evaluate({"q": ["a", "a", "b"]}, {"q": {"a": 1, "b": 1}}).ndcg_10 == pytest.approx(1.0)


def test_evaluate_with_no_judged_query() -> None:
    assert evaluate({}, {"q": {"a": 0}}).queries == 0
