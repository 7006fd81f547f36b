"""Retrieval quality metrics: nDCG@10, recall@10 and @100, MRR@10 (pure functions).

They follow the conventions of trec_eval / pytrec_eval, so figures compare with published ones:
gains are binary (a judged grade above 0 is relevant) unless graded gains are asked for, in which
case the gain is the grade itself; the discount is log2(rank + 1); the ideal DCG is computed from the
judgments (not from what was retrieved), so a relevant document that was never found still costs.
Averages run over the queries that have at least one relevant document.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

NDCG_DEPTH = 10
MRR_DEPTH = 10
RECALL_DEPTHS = (10, 100)


def unique(ranking: Iterable[str]) -> list[str]:
    """The ranking with repeats removed, first occurrence kept (chunks → their documents)."""
    return list(dict.fromkeys(ranking))


def relevant(judged: Mapping[str, int]) -> set[str]:
    return {doc_id for doc_id, grade in judged.items() if grade > 0}


def gain(grade: int, graded: bool) -> float:
    if grade <= 0:
        return 0.0
    return float(grade) if graded else 1.0


def dcg(gains: Iterable[float]) -> float:
    """Discounted cumulative gain: the gain at rank r (1-based) counts gain / log2(r + 1)."""
    return sum(value / math.log2(rank + 1) for rank, value in enumerate(gains, start=1))


def ndcg_at(
    ranking: Sequence[str], judged: Mapping[str, int], k: int = NDCG_DEPTH, graded: bool = False
) -> float:
    """nDCG@k of one query's ranking (distinct document ids, best first) against its judgments."""
    ideal = dcg(sorted((gain(grade, graded) for grade in judged.values()), reverse=True)[:k])
    if ideal == 0.0:
        return 0.0
    return dcg(gain(judged.get(doc_id, 0), graded) for doc_id in ranking[:k]) / ideal


def recall_at(ranking: Sequence[str], judged: Mapping[str, int], k: int) -> float:
    """The share of the relevant documents found in the first ``k``."""
    wanted = relevant(judged)
    if not wanted:
        return 0.0
    return len(wanted.intersection(ranking[:k])) / len(wanted)


def reciprocal_rank_at(ranking: Sequence[str], judged: Mapping[str, int], k: int = MRR_DEPTH) -> float:
    """1 / the rank of the first relevant document in the first ``k``, or 0 when there is none."""
    wanted = relevant(judged)
    for rank, doc_id in enumerate(ranking[:k], start=1):
        if doc_id in wanted:
            return 1.0 / rank
    return 0.0


@dataclass(frozen=True, slots=True)
class Metrics:
    """Averages over ``queries`` queries (those with at least one relevant document)."""

    ndcg_10: float
    recall_10: float
    recall_100: float
    mrr_10: float
    queries: int

    def as_dict(self) -> dict[str, float | int]:
        return {
            "ndcg@10": self.ndcg_10,
            "recall@10": self.recall_10,
            "recall@100": self.recall_100,
            "mrr@10": self.mrr_10,
            "queries": self.queries,
        }


def evaluate(
    run: Mapping[str, Sequence[str]], qrels: Mapping[str, Mapping[str, int]], *, graded: bool = False
) -> Metrics:
    """Average the metrics of ``run`` (query id → document ids, best first) over the judged queries.

    A judged query missing from ``run`` counts as one that found nothing; queries without any
    relevant document are left out of every average.
    """
    scored = [query_id for query_id, judged in qrels.items() if relevant(judged)]
    if not scored:
        return Metrics(0.0, 0.0, 0.0, 0.0, 0)
    totals = [0.0, 0.0, 0.0, 0.0]
    for query_id in scored:
        judged = qrels[query_id]
        ranking = unique(run.get(query_id, ()))
        totals[0] += ndcg_at(ranking, judged, NDCG_DEPTH, graded)
        totals[1] += recall_at(ranking, judged, RECALL_DEPTHS[0])
        totals[2] += recall_at(ranking, judged, RECALL_DEPTHS[1])
        totals[3] += reciprocal_rank_at(ranking, judged, MRR_DEPTH)
    count = len(scored)
    return Metrics(totals[0] / count, totals[1] / count, totals[2] / count, totals[3] / count, count)
