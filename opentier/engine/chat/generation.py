"""One model stream, run in its own task and read with time limits, that can be stopped at any moment.

The model's async generator is iterated by a pump task that hands each event over through a queue of
at most ``ahead`` events: when the reader (in the end, the client) does not keep up, the pump waits,
and so does the model at its ``yield``, instead of writing the rest of its answer into memory. The
reader waits for the next event at most ``stall`` seconds (``LLMTimeoutError`` after that), and
:meth:`Generation.interrupt` wakes it at once. :meth:`Generation.stop` cancels the pump: the model sees
``CancelledError`` where it awaits (a network read, a sleep) or ``GeneratorExit`` at its ``yield``, and
its ``finally`` closes the remote request or the local generation. A model that ignores this is
abandoned after ``close_timeout`` seconds, with a warning in the log, so a chat never hangs on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from opentier.components import LLM, LLMEvent, LLMRequest, TextDelta, Usage
from opentier.errors import LLMError, LLMTimeoutError, OpenTierError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _End:
    """The model's stream ended normally."""


@dataclass(frozen=True, slots=True)
class _Failed:
    error: OpenTierError


@dataclass(frozen=True, slots=True)
class _Interrupted:
    """Someone asked the reader to stop waiting (a cancel)."""


class Interrupted(Exception):
    """Raised by :meth:`Generation.next` after :meth:`Generation.interrupt`."""


_Item = TextDelta | Usage | _End | _Failed | _Interrupted

#: Events the model may be ahead of its reader by default.
DEFAULT_AHEAD = 64


class Generation:
    """The events of ``llm.stream(request)``, produced ahead of the reader by a pump task."""

    def __init__(
        self, llm: LLM, request: LLMRequest, *, close_timeout: float, ahead: int = DEFAULT_AHEAD
    ) -> None:
        if ahead < 1:
            raise ValueError(f"a model must be allowed at least one event ahead, not {ahead}")
        self.llm = llm
        self.request = request
        self.close_timeout = close_timeout
        self._queue: asyncio.Queue[_Item] = asyncio.Queue(maxsize=ahead)
        self._task: asyncio.Task[None] | None = None
        self._interrupted = False

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._pump())

    async def next(self, stall: float) -> TextDelta | Usage | None:
        """The model's next event; ``None`` at the end of its answer.

        :raises LLMTimeoutError: nothing came for ``stall`` seconds.
        :raises LLMError: the model failed (any other exception is reported as ``llm_failed``).
        :raises Interrupted: :meth:`interrupt` was called.
        """
        if self._interrupted:  # before what is queued: a cancel stops the text at once
            raise Interrupted()
        try:
            async with asyncio.timeout(stall):
                item = await self._queue.get()
        except TimeoutError:
            raise LLMTimeoutError(
                f"the model {self.llm.name!r} sent nothing for {stall:g} seconds "
                "(chat.stall_timeout_seconds, or the turn's deadline)"
            ) from None
        if isinstance(item, _End):
            return None
        if isinstance(item, _Failed):
            raise item.error
        if isinstance(item, _Interrupted):
            raise Interrupted()
        return item

    def interrupt(self) -> None:
        """Wake the reader: its pending or next :meth:`next` raises :class:`Interrupted`."""
        self._interrupted = True
        if not self._queue.full():  # a full queue has no reader waiting on it: the flag is enough
            self._queue.put_nowait(_Interrupted())

    async def stop(self) -> None:
        """Stop the model (cancel the pump, which closes its stream) within ``close_timeout``."""
        task = self._task
        if task is None or task.done():
            return
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=self.close_timeout)
        if not done:
            log.warning(
                "the model %r did not stop within %.1fs of being cancelled; abandoning its stream",
                self.llm.name,
                self.close_timeout,
            )

    async def _pump(self) -> None:
        stream: AsyncIterator[LLMEvent] = self.llm.stream(self.request)
        try:
            async for event in stream:
                if not isinstance(event, TextDelta | Usage):
                    raise LLMError(
                        f"the model {self.llm.name!r} sent {type(event).__name__}, not text or usage"
                    )
                await self._queue.put(event)  # waits while the reader is ``ahead`` events behind
            await self._queue.put(_End())
        except asyncio.CancelledError:
            raise
        except OpenTierError as err:
            await self._queue.put(_Failed(err))
        except Exception as err:
            log.error("the model %r failed unexpectedly", self.llm.name, exc_info=err)
            await self._queue.put(
                _Failed(
                    LLMError(f"the model {self.llm.name!r} failed unexpectedly; the host log has the details")
                )
            )
        finally:
            await close_stream(stream)


async def close_stream(stream: AsyncIterator[LLMEvent]) -> None:
    """Close a model's async generator (a no-op when it already ended); its errors are logged."""
    close = getattr(stream, "aclose", None)
    if close is None:
        return
    try:
        await close()
    except RuntimeError as err:  # closed while running elsewhere: that task's cancel closes it
        log.debug("could not close a model stream: %s", err)
    except Exception:
        log.warning("a model stream failed while closing", exc_info=True)


@contextlib.asynccontextmanager
async def running(generation: Generation) -> AsyncIterator[Generation]:
    """Start ``generation`` and stop it on the way out, however the block ends."""
    generation.start()
    try:
        yield generation
    finally:
        await generation.stop()
