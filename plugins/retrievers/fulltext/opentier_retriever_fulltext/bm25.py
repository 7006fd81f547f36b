"""BM25 (the Lucene variant) and the bounds that let a search skip chunks that cannot rank.

    score(chunk) = sum over query terms t of  weight(t) * tf (k1 + 1) / (tf + k1 (1 - b + b len / avglen))
    weight(t)    = query frequency of t * ln(1 + (N - df + 0.5) / (df + 0.5))

with tf the term's frequency in the chunk, len the chunk's length in tokens, N the number of chunks
and df the number of chunks holding the term. A term's contribution grows with tf and shrinks with
len, so ``tf = 1`` at the chunk's length gives a lower bound and the term's largest tf at the
shortest length an upper bound: what :func:`requirement` and the retriever's pruning build on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

#: Most term sets :func:`requirement` spells out before it settles for a looser condition.
MAX_CLAUSES = 32
#: Relative slack on comparisons of floating-point bounds, in favour of keeping a chunk.
SLACK = 1e-9


@dataclass(frozen=True, slots=True)
class Parameters:
    """BM25's term-frequency saturation ``k1`` and length normalisation ``b``."""

    k1: float = 1.2
    b: float = 0.75


def idf(chunks: int, frequency: int) -> float:
    """Inverse document frequency of a term held by ``frequency`` of ``chunks`` chunks (never < 0)."""
    frequency = max(0, min(frequency, chunks))
    return math.log(1.0 + (chunks - frequency + 0.5) / (frequency + 0.5))


@dataclass(frozen=True, slots=True)
class Term:
    """A query term as ranking sees it."""

    lexeme: str
    #: Query frequency times idf.
    weight: float
    #: Upper bound of the term's frequency in any chunk.
    max_tf: int
    #: Chunks holding it.
    frequency: int


@dataclass(frozen=True, slots=True)
class Scorer:
    """BM25 of one search: parameters plus the collection's average and shortest chunk length."""

    parameters: Parameters
    average_length: float
    shortest: int

    def contribution(self, term: Term, tf: int, length: int) -> float:
        k1, b = self.parameters.k1, self.parameters.b
        if tf <= 0:
            return 0.0
        norm = 1.0 - b + b * length / self.average_length
        return term.weight * tf * (k1 + 1.0) / (tf + k1 * norm)

    def upper(self, term: Term) -> float:
        """The most ``term`` can add to any chunk's score."""
        return self.contribution(term, max(term.max_tf, 1), self.shortest)


def requirement(uppers: Sequence[float], floor: float) -> list[tuple[int, ...]]:
    """What a chunk must hold to reach ``floor``: a list of term sets (indexes), any one of which.

    A chunk's score is at most the sum of the ``uppers`` of the terms it holds, so a chunk holding
    none of the returned sets cannot score ``floor``. The sets are the minimal ones (every term
    needed); when there are more than :data:`MAX_CLAUSES`, the looser condition of MaxScore comes
    back instead: single terms, those without which the remaining terms cannot reach ``floor``.
    """
    order = sorted(range(len(uppers)), key=lambda index: -uppers[index])
    goal = floor * (1.0 - SLACK)
    if goal <= 0:
        return [(index,) for index in order]
    suffix = [0.0] * (len(order) + 1)
    for position in range(len(order) - 1, -1, -1):
        suffix[position] = suffix[position + 1] + uppers[order[position]]
    clauses: list[tuple[int, ...]] = []

    def extend(start: int, chosen: tuple[int, ...], total: float) -> bool:
        """Depth-first, largest bounds first; False once more than MAX_CLAUSES sets were found."""
        for position in range(start, len(order)):
            if total + suffix[position] < goal:
                return True
            index = order[position]
            reached = total + uppers[index]
            if reached >= goal:
                clauses.append((*chosen, index))
                if len(clauses) > MAX_CLAUSES:
                    return False
            elif not extend(position + 1, (*chosen, index), reached):
                return False
        return True

    if extend(0, (), 0.0):
        return clauses
    essential = [order[0]] if order else []
    for position in range(1, len(order)):
        if suffix[position] < goal:
            break
        essential.append(order[position])
    return [(index,) for index in essential]
