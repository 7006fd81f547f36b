"""The `fulltext` retriever's query syntax and its pruning condition, without a database."""

from __future__ import annotations

import itertools
import random

import pytest
from opentier_retriever_fulltext.bm25 import MAX_CLAUSES, requirement
from opentier_retriever_fulltext.query import ParsedQuery, parse


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("how do wings make lift?", ParsedQuery(("how", "do", "wings", "make", "lift?"), (), ())),
        (
            '"panel flutter" supersonic',
            ParsedQuery(("panel flutter", "supersonic"), (("panel flutter",),), ()),
        ),
        ('flutter -wing -"swept  wing"', ParsedQuery(("flutter",), (), ("wing", "swept wing"))),
        (
            '"panel flutter" OR "wing flutter" drag',
            ParsedQuery(("panel flutter", "wing flutter", "drag"), (("panel flutter", "wing flutter"),), ()),
        ),
        ("lift OR drag", ParsedQuery(("lift", "drag"), (("lift", "drag"),), ())),
        # a dangling OR, a lone dash, a lowercase "or" and an unclosed quote are not operators
        ("OR lift OR", ParsedQuery(("lift",), (), ())),
        ("lift - drag", ParsedQuery(("lift", "drag"), (), ())),
        ("lift or drag", ParsedQuery(("lift", "or", "drag"), (), ())),
        ('"shock wave', ParsedQuery(("shock wave",), (("shock wave",),), ())),
        ("lift-to-drag ratio", ParsedQuery(("lift-to-drag", "ratio"), (), ())),
        ('"" -', ParsedQuery((), (), ())),
    ],
)
def test_query_syntax(text: str, expected: ParsedQuery) -> None:
    assert parse(text) == expected


def brute_force(uppers: list[float], floor: float) -> set[frozenset[int]]:
    """Minimal index sets whose bounds reach ``floor``, by trying every subset."""
    reaching = [
        frozenset(subset)
        for size in range(1, len(uppers) + 1)
        for subset in itertools.combinations(range(len(uppers)), size)
        if sum(uppers[i] for i in subset) >= floor
    ]
    return {s for s in reaching if not any(other < s for other in reaching)}


@pytest.mark.parametrize("seed", range(20))
def test_requirement_names_exactly_the_minimal_term_sets(seed: int) -> None:
    rng = random.Random(seed)
    uppers = [round(rng.uniform(0.5, 8.0), 2) for _ in range(rng.randint(1, 7))]
    floor = rng.uniform(0.1, sum(uppers))

    clauses = requirement(uppers, floor)

    expected = brute_force(uppers, floor)
    if len(expected) <= MAX_CLAUSES:
        assert {frozenset(clause) for clause in clauses} == expected
    # whatever form it takes, no chunk that can reach the floor is excluded
    for subset in map(
        frozenset,
        itertools.chain.from_iterable(
            itertools.combinations(range(len(uppers)), n) for n in range(1, len(uppers) + 1)
        ),
    ):
        if sum(uppers[i] for i in subset) >= floor:
            assert any(set(clause) <= subset for clause in clauses)


def test_too_many_term_sets_fall_back_to_the_essential_terms() -> None:
    uppers = [1.0] * 12  # any 6 of 12 terms: 924 minimal sets

    clauses = requirement(uppers, 6.0)

    assert all(len(clause) == 1 for clause in clauses)
    assert len(clauses) == 7  # a chunk without any of 7 terms holds at most 5: below the floor


def test_no_floor_needs_any_one_term() -> None:
    assert sorted(requirement([3.0, 1.0, 2.0], 0.0)) == [(0,), (1,), (2,)]
