"""The ``diversify`` reranker: maximal marginal relevance by document, no model needed.

A long document often fills the top of a result list with its own chunks, saying the same thing
several times. This reranker picks, at each step, the candidate with the best

    lambda * relevance - (1 - lambda) * [its document already has a chunk above]

where relevance is the retriever's score scaled to 0..1 over the candidates. With the default
``lambda`` of 0.5 every document's best chunk comes before any document's second one; closer to 1
it only breaks up runs of one document among nearly equal scores. The score of a reranked hit is
that value, so scores still decrease down the list. A request sets it with options
``{"lambda": 0.7}``.
"""

from __future__ import annotations

import dataclasses
import heapq
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from opentier import hookimpl
from opentier.components import Reranker, SearchHit, SearchQuery
from opentier.errors import InvalidRequestError
from opentier.retrieval import RetrievalContext

DEFAULT_LAMBDA = 0.5


def diversify(hits: Sequence[SearchHit], relevance_weight: float = DEFAULT_LAMBDA) -> list[SearchHit]:
    """``hits`` (best first) reordered by maximal marginal relevance by document."""
    if not hits:
        return []
    top, bottom = max(hit.score for hit in hits), min(hit.score for hit in hits)
    spread = top - bottom
    relevance = [(hit.score - bottom) / spread if spread > 0 else 1.0 for hit in hits]
    order = sorted(range(len(hits)), key=lambda i: (-relevance[i], i))
    penalty = 1.0 - relevance_weight
    fresh: deque[int] = deque(range(len(order)))  # positions in ``order``, best first
    repeated: list[int] = []  # heap of positions whose document is already shown
    shown: set[str] = set()
    result: list[SearchHit] = []
    while fresh or repeated:
        while fresh and _document(hits[order[fresh[0]]]) in shown:
            heapq.heappush(repeated, fresh.popleft())
        best: tuple[float, int] | None = None
        if fresh:
            best = (relevance_weight * relevance[order[fresh[0]]], fresh[0])
        if repeated:
            value = relevance_weight * relevance[order[repeated[0]]] - penalty
            if best is None or value > best[0] or (value == best[0] and repeated[0] < best[1]):
                best = (value, repeated[0])
        assert best is not None
        value, position = best
        if fresh and position == fresh[0]:
            fresh.popleft()
        else:
            heapq.heappop(repeated)
        hit = hits[order[position]]
        shown.add(_document(hit))
        result.append(dataclasses.replace(hit, score=value))
    return result


def _document(hit: SearchHit) -> str:
    return hit.document_id or hit.chunk_id


def relevance_weight(options: Mapping[str, Any]) -> float:
    value = options.get("lambda", DEFAULT_LAMBDA)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise InvalidRequestError("options.lambda: a number from 0 (most diverse) to 1 (relevance only)")
    return float(value)


class DiversifyReranker(Reranker):
    name = "diversify"
    description = "Fewer chunks of one document at the top (maximal marginal relevance by document)."

    async def rerank(
        self, query: SearchQuery, hits: Sequence[SearchHit], context: RetrievalContext
    ) -> Sequence[SearchHit]:
        return diversify(hits, relevance_weight(query.options))


@hookimpl
def register_rerankers(register: Callable[[Reranker], None]) -> None:
    register(DiversifyReranker())
