"""Query embeddings of concurrent searches made in batches (opentier/engine/coalesce.py): each caller
gets the vector of its own text, a query alone is not held back, a failing text fails alone, and a
cancelled caller takes nothing from the others."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from opentier.engine.coalesce import Coalescer


class Model:
    """An embedder whose vector of a text is [its length, its first character's code]; each call takes
    ``seconds`` and is recorded."""

    def __init__(self, seconds: float = 0.02, refuse: str | None = None) -> None:
        self.seconds = seconds
        self.refuse = refuse
        self.calls: list[list[str]] = []

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.calls.append(list(texts))
        await asyncio.sleep(self.seconds)
        if self.refuse is not None and self.refuse in texts:
            raise ValueError(f"cannot embed {self.refuse!r}")
        return [[float(len(text)), float(ord(text[0]))] for text in texts]


async def test_concurrent_queries_share_few_calls_and_each_gets_its_own_vector() -> None:
    model = Model()
    coalescer = Coalescer(model.embed, max_batch=16)
    texts = [f"{chr(97 + i % 26)}query {'x' * i}" for i in range(100)]
    vectors = await asyncio.gather(*(coalescer.embed_one(text) for text in texts))
    assert vectors == [[float(len(text)), float(ord(text[0]))] for text in texts]
    # All 100 arrived before the first call could start: batches of 16.
    assert [len(call) for call in model.calls] == [16, 16, 16, 16, 16, 16, 4]
    assert (coalescer.calls, coalescer.texts) == (7, 100)


async def test_a_query_alone_waits_for_nothing() -> None:
    model = Model(seconds=0.0)
    coalescer = Coalescer(model.embed)
    for text in ("first", "second", "third"):
        assert await coalescer.embed_one(text) == [float(len(text)), float(ord(text[0]))]
    assert model.calls == [["first"], ["second"], ["third"]]


async def test_a_text_that_fails_fails_alone() -> None:
    model = Model(refuse="poison")
    coalescer = Coalescer(model.embed)
    first = asyncio.create_task(coalescer.embed_one("warm up"))
    await asyncio.sleep(0)  # the first call runs; the next three wait and go together
    rest = [asyncio.create_task(coalescer.embed_one(text)) for text in ("good", "poison", "fine")]
    assert await first == [7.0, ord("w")]
    assert await rest[0] == [4.0, ord("g")]
    with pytest.raises(ValueError, match="cannot embed 'poison'"):
        await rest[1]
    assert await rest[2] == [4.0, ord("f")]
    # Together, then one by one after the failure.
    assert model.calls[1:] == [["good", "poison", "fine"], ["good"], ["poison"], ["fine"]]


async def test_a_cancelled_caller_takes_nothing_from_the_others() -> None:
    model = Model()
    coalescer = Coalescer(model.embed)
    first = asyncio.create_task(coalescer.embed_one("warm up"))
    await asyncio.sleep(0)
    leaving = asyncio.create_task(coalescer.embed_one("leaving"))
    staying = asyncio.create_task(coalescer.embed_one("staying"))
    await asyncio.sleep(0)
    leaving.cancel()
    assert await first == [7.0, ord("w")]
    assert await staying == [7.0, ord("s")]
    with pytest.raises(asyncio.CancelledError):
        await leaving
    assert ["leaving"] not in model.calls and model.calls[-1] == ["staying"]
