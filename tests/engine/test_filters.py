"""Metadata filters: each operator against the real PostgreSQL, and the validation messages."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine

from opentier.engine.collections import CollectionInfo
from opentier.engine.filters import MAX_CLAUSES, MAX_DEPTH, compile_filter
from opentier.errors import InvalidRequestError

from .searching import Bench, Record, open_bench, query

RECORDS = [
    Record(
        "a.txt",
        "Notes on wings and lift.",
        {
            "lang": "en",
            "year": 2019,
            "tags": ["aero", "wings"],
            "author": "Ada",
            "draft": False,
            "origin": {"kind": "book"},
        },
    ),
    Record("b.txt", "Notes on boats and hulls.", {"lang": "fr", "year": 2021, "author": None, "rating": 4.5}),
    Record("c.txt", "Notes on wings and drag.", {"lang": "en", "year": "2020", "draft": True}),
    Record("d.txt", "Notes on engines and fuel.", {"lang": "de", "year": 2020.0, "edition": "2nd"}),
]


@pytest_asyncio.fixture(scope="module")
async def bench(db_engine: AsyncEngine) -> AsyncIterator[Bench]:
    bench = await open_bench(db_engine)
    try:
        yield bench
    finally:
        await bench.ingestion.stop()


@pytest_asyncio.fixture(scope="module")
async def notes(bench: Bench) -> CollectionInfo:
    collection = await bench.collection(bench.tenant(), "notes")
    await bench.add(collection, RECORDS)
    return collection


async def found(bench: Bench, collection: CollectionInfo, filters: dict[str, Any]) -> set[str]:
    hits = await bench.search().search(
        query(collection, "notes", top_k=20, filters=filters), retriever="vector"
    )
    return {hit.source.removesuffix(".txt") for hit in hits}


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        # equality and any-of, shorthand and explicit
        ({"lang": "en"}, {"a", "c"}),
        ({"lang": {"eq": "de"}}, {"d"}),
        ({"lang": ["en", "fr"]}, {"a", "b", "c"}),
        ({"lang": {"in": ["de", "xx"]}}, {"d"}),
        ({"tags": "wings"}, {"a"}),  # a list holding the value
        ({"tags": {"in": ["boats", "aero"]}}, {"a"}),
        ({"draft": False}, {"a"}),
        ({"origin.kind": "book"}, {"a"}),  # a nested key
        # numbers compare as numbers (2020.0 is 2020), strings as strings
        ({"year": 2020}, {"d"}),
        ({"year": "2020"}, {"c"}),
        ({"year": {"range": {"gte": 2020}}}, {"b", "d"}),
        ({"year": {"range": {"gt": 2019, "lt": 2021}}}, {"d"}),
        ({"year": {"range": {"gte": "2000", "lte": "2999"}}}, {"c"}),
        ({"rating": {"range": {"lte": 4.5}}}, {"b"}),
        ({"edition": {"range": {"lt": "3"}}}, {"d"}),
        # exists: present and not null
        ({"author": {"exists": True}}, {"a"}),
        ({"author": {"exists": False}}, {"b", "c", "d"}),
        # and / or, nested
        ({"or": [{"lang": "fr"}, {"year": {"range": {"lt": 2020}}}]}, {"a", "b"}),
        ({"lang": "en", "draft": {"exists": True}, "year": {"range": {"gte": "0"}}}, {"c"}),
        ({"and": [{"lang": ["en", "de"]}, {"or": [{"year": 2020}, {"tags": "aero"}]}]}, {"a", "d"}),
        ({"lang": "xx"}, set()),
    ],
)
async def test_each_operator_selects_the_right_documents(
    bench: Bench, notes: CollectionInfo, filters: dict[str, Any], expected: set[str]
) -> None:
    assert await found(bench, notes, filters) == expected


async def test_no_filter_finds_everything(bench: Bench, notes: CollectionInfo) -> None:
    assert await found(bench, notes, {}) == {"a", "b", "c", "d"}


async def test_values_are_bound_never_spliced(bench: Bench, notes: CollectionInfo) -> None:
    hostile = "en'); DROP TABLE intelligence.chunks; --"
    assert await found(bench, notes, {"lang": hostile}) == set()
    fragment = compile_filter({"lang": hostile, "year": {"range": {"gte": "x' OR '1'='1"}}}, "c")
    assert "DROP" not in fragment.sql and "'1'='1" not in fragment.sql
    assert await found(bench, notes, {}) == {"a", "b", "c", "d"}


def nested(depth: int) -> dict[str, Any]:
    filters: dict[str, Any] = {"lang": "en"}
    for _ in range(depth):
        filters = {"or": [filters]}
    return filters


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        (
            {"lang": None},
            "filters.lang: null is not a value to compare with (string, number, true/false); use exists",
        ),
        ({"lang": []}, "filters.lang: an empty list matches nothing"),
        ({"lang": {"in": "en"}}, "filters.lang.in: in takes a list of values, not a string"),
        ({"lang": {"eq": {"x": 1}}}, "filters.lang.eq: an object is not a value to compare with"),
        ({"lang": ["en", ["fr"]]}, "filters.lang[1]: a list is not a value"),
        (
            {"year": {"gt": 1}},
            "filters.year: a condition object holds exactly one operator of eq, in, range, exists; got gt",
        ),
        ({"year": {"eq": 1, "in": [2]}}, "filters.year: a condition object holds exactly one operator"),
        (
            {"year": {"range": {"gte": 1, "lt": "x"}}},
            "filters.year.range: bounds must be all numbers or all strings",
        ),
        ({"year": {"range": {"between": 1}}}, "filters.year.range: unknown bound between"),
        (
            {"year": {"range": {"gt": True}}},
            "filters.year.range.gt: a range bound is a number or a string, not a boolean",
        ),
        ({"year": {"range": 2020}}, "filters.year.range: range takes an object of bounds"),
        ({"year": {"range": {"gt": float("nan")}}}, "filters.year.range.gt: nan is not a number"),
        ({"author": {"exists": "yes"}}, "filters.author.exists: exists takes true or false, not a string"),
        ({"bad key": 1}, "filters.bad key: 'bad key' is not a field name"),
        ({"a..b": 1}, "filters.a..b: 'a..b' is not a field name"),
        ({"or": []}, "filters.or: or takes a non-empty list of filters"),
        ({"and": {"lang": "en"}}, "filters.and: and takes a non-empty list of filters"),
        ({"or": [{"lang": "en"}, "fr"]}, "filters.or[1]: a filter must be an object, not a string"),
        ({"or": [{}]}, "filters.or[0]: an empty filter object"),
        ({"lang": {"in": list(range(MAX_CLAUSES + 1))}}, f"more than {MAX_CLAUSES} conditions"),
        (nested(MAX_DEPTH + 1), f"and/or nest more than {MAX_DEPTH} levels deep"),
    ],
)
def test_invalid_filters_are_refused_with_the_offending_path(filters: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequestError, match=re.escape(message)):
        compile_filter(filters, "c")


def test_the_limits_themselves_are_allowed() -> None:
    compile_filter(nested(MAX_DEPTH), "c")
    compile_filter({"lang": {"in": list(range(MAX_CLAUSES))}}, "c")


async def test_a_bad_filter_fails_the_search_whatever_the_retriever(
    bench: Bench, notes: CollectionInfo
) -> None:
    with pytest.raises(InvalidRequestError, match=r"filters\.year\.range: unknown bound after"):
        await bench.search().search(
            query(notes, "notes", filters={"year": {"range": {"after": 2000}}}), retriever="keyword"
        )
