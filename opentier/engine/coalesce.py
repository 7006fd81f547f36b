"""Query embeddings of concurrent searches, made in batches.

Every search embeds its query, one text at a time. Under load (a thousand chat turns starting
together) that is a thousand model runs of one short text each, and a run of one text costs nearly
as much as a run of many: the model's fixed cost per run dominates. :class:`Coalescer` turns the
concurrent calls of one embedder into few batched calls. The first call runs at once, so a query
alone waits for nothing; the texts that arrive while a call runs wait for it and then go together,
up to ``max_batch`` texts a call. ``bench/query_embedding.py`` measures the gain.

A batch that fails is tried again text by text, so that one text's error reaches its own caller
only; a caller that is cancelled while it waits takes nothing from the others.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

log = logging.getLogger(__name__)

#: Most texts in one batched call.
MAX_BATCH = 128

Embed = Callable[[Sequence[str]], Awaitable[list[list[float]]]]


class Coalescer:
    """Batched embedding of the texts that concurrent callers of :meth:`embed_one` ask for."""

    def __init__(self, embed: Embed, *, max_batch: int = MAX_BATCH) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._embed = embed
        self._max_batch = max_batch
        self._waiting: list[tuple[str, asyncio.Future[list[float]]]] = []
        self._runner: asyncio.Task[None] | None = None
        #: Batched calls made, and texts embedded through them (for the benchmark and the tests).
        self.calls = 0
        self.texts = 0

    async def embed_one(self, text: str) -> list[float]:
        """The embedding of ``text``, made alone or together with concurrent callers' texts."""
        future: asyncio.Future[list[float]] = asyncio.get_running_loop().create_future()
        self._waiting.append((text, future))
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run(), name="query-embeddings")
        return await future

    async def _run(self) -> None:
        batch: list[tuple[str, asyncio.Future[list[float]]]] = []
        try:
            while self._waiting:
                batch = [entry for entry in self._waiting[: self._max_batch] if not entry[1].done()]
                del self._waiting[: self._max_batch]
                if batch:
                    await self._embed_batch(batch)
        except BaseException:  # cancelled (the host stops): nobody is left waiting for ever
            for _, future in [*batch, *self._waiting]:
                future.cancel()
            self._waiting.clear()
            raise

    async def _embed_batch(self, batch: list[tuple[str, asyncio.Future[list[float]]]]) -> None:
        self.calls += 1
        self.texts += len(batch)
        try:
            vectors = await self._embed([text for text, _ in batch])
            if len(vectors) != len(batch):
                raise RuntimeError(f"the embedder returned {len(vectors)} vectors for {len(batch)} texts")
        except Exception as err:
            if len(batch) == 1:
                _settle(batch[0][1], error=err)
                return
            log.warning("%d query embeddings failed together (%s); now one by one", len(batch), err)
            for entry in batch:
                if not entry[1].done():
                    await self._embed_batch([entry])
            return
        for (_, future), vector in zip(batch, vectors, strict=True):
            _settle(future, result=vector)


def _settle(
    future: asyncio.Future[list[float]], *, result: list[float] | None = None, error: Exception | None = None
) -> None:
    if future.done():  # its caller was cancelled meanwhile
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result if result is not None else [])
