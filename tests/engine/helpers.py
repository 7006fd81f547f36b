"""Test components for engine tests: a fast deterministic embedder and loaders that misbehave."""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
from collections.abc import AsyncIterator, Callable, Sequence
from types import SimpleNamespace

from opentier import hookimpl
from opentier.components import Document, Embedder, Loader, Source
from opentier.errors import DocumentLoadError

_WORDS = re.compile(r"\w+")


class HashEmbedder(Embedder):
    """Bag of hashed words, normalised: similar texts get similar vectors; no model needed."""

    name = "test-hash"
    dimensions = 32
    max_input_tokens = 128
    batch_size = 16
    version = "1"

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.calls = 0
        self.texts = 0

    def count_tokens(self, text: str) -> int:
        return len(_WORDS.findall(text)) + 2

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.calls += 1
        self.texts += len(texts)
        if self.delay:
            await asyncio.sleep(self.delay)
        return [self._one(text) for text in texts]

    def _one(self, text: str) -> list[float]:
        vector = [0.0] * self.dimensions
        for word in _WORDS.findall(text.lower()):
            vector[int(hashlib.blake2b(word.encode(), digest_size=4).hexdigest(), 16) % self.dimensions] += (
                1.0
            )
        norm = math.sqrt(sum(v * v for v in vector)) or 1.0
        return [v / norm for v in vector]


class BrokenLoader(Loader):
    """Reads `.broken` files and fails on them, like a corrupt PDF."""

    name = "broken"
    extensions = frozenset({".broken"})

    async def load(self, source: Source) -> AsyncIterator[Document]:
        raise DocumentLoadError("the file is corrupt: no end of file marker")
        yield  # pragma: no cover


def plugin(embedder: Embedder | None = None) -> object:
    embedders = [embedder or HashEmbedder()]

    @hookimpl
    def register_embedders(register: Callable[[Embedder], None]) -> None:
        for item in embedders:
            register(item)

    @hookimpl
    def register_loaders(register: Callable[[Loader], None]) -> None:
        register(BrokenLoader())

    return SimpleNamespace(register_embedders=register_embedders, register_loaders=register_loaders)
