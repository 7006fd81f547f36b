"""Admission of chat turns: at most ``limit`` run at once, the others wait their turn in arrival order.

A host given far more turns than it can run at once would otherwise start them all: each would then
wait, unordered, for the event loop, the embedder's threads and the database pool, until the pool's
timeout or gRPC's own limits failed some of them. A waiting turn costs only a future in a queue, so
it waits as long as its deadline allows; one whose deadline passes while it waits, or that finds the
queue full, gets :class:`~opentier.errors.HostBusyError` (``host_busy``, retryable). A place that is
freed goes straight to the first waiter, so newcomers never overtake the queue.

:func:`pool_busy` gives the same error for the other way a busy host fails: no connection of the
database pool came free in time (the host applies it to every call, the chat to its events).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from opentier.errors import HostBusyError
from opentier.machine import available_cores

log = logging.getLogger(__name__)

#: Turns run at once per CPU when ``chat.max_concurrent_turns`` is 0 (auto).
TURNS_PER_CPU = 8


def auto_turn_limit(cpus: int | None = None) -> int:
    """The default of ``chat.max_concurrent_turns``: :data:`TURNS_PER_CPU` per CPU of this machine."""
    return TURNS_PER_CPU * max(1, cpus if cpus is not None else available_cores())


class Admission:
    """A FIFO of chat turns in front of ``limit`` places; at most ``max_waiting`` wait at once."""

    def __init__(self, limit: int, max_waiting: int) -> None:
        if limit < 1:
            raise ValueError(f"the limit of turns at once must be 1 or more, not {limit}")
        if max_waiting < 0:
            raise ValueError(f"the queue bound must be 0 or more, not {max_waiting}")
        self.limit = limit
        self.max_waiting = max_waiting
        self._running = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def running(self) -> int:
        """Turns holding a place now."""
        return self._running

    @property
    def waiting(self) -> int:
        """Turns waiting for a place now."""
        return len(self._waiters)

    @contextlib.asynccontextmanager
    async def place(self, within: float, *, unless: asyncio.Event | None = None) -> AsyncIterator[float]:
        """Hold a place for the block; yields the seconds waited for it.

        :param within: the longest wait, in seconds (the rest of the turn's deadline).
        :param unless: when set during the wait, the wait ends and the block runs without a place: a
            turn cancelled while it waits only stores its question and its empty answer, and its client
            gets ``done`` at once instead of after the queue.
        :raises HostBusyError: the queue is full, or no place came free ``within`` seconds.
        """
        began = asyncio.get_running_loop().time()
        held = await self._acquire(within, unless)
        try:
            yield asyncio.get_running_loop().time() - began
        finally:
            if held:
                self._release()

    async def _acquire(self, within: float, unless: asyncio.Event | None) -> bool:
        """Wait for a place: True once it is held, False when ``unless`` was set first."""
        if self._running < self.limit and not self._waiters:
            self._running += 1
            return True
        if unless is not None and unless.is_set():
            return False
        ahead = len(self._waiters)
        if ahead >= self.max_waiting:
            raise HostBusyError(
                f"the host is busy: {self._running} chat turns are running and {ahead} waiting, as many "
                f"as it queues (chat.max_concurrent_turns = {self.limit}, chat.max_queued_turns = "
                f"{self.max_waiting}); try again shortly"
            )
        loop = asyncio.get_running_loop()
        began = loop.time()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiters.append(waiter)
        skip = asyncio.ensure_future(unless.wait()) if unless is not None else None
        try:
            async with asyncio.timeout(max(0.0, within)):
                waits: set[asyncio.Future[Any]] = {waiter} if skip is None else {waiter, skip}
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        except BaseException as err:
            self._leave(waiter)
            if isinstance(err, TimeoutError):
                raise HostBusyError(
                    f"the host is busy: this chat turn waited {loop.time() - began:.1f} s, the rest of its "
                    f"deadline, behind {ahead} others for one of the {self.limit} places "
                    "(chat.max_concurrent_turns); try again shortly"
                ) from None
            raise
        finally:
            if skip is not None:
                skip.cancel()
        if waiter.done():
            return True
        self._leave(waiter)
        return False

    def _leave(self, waiter: asyncio.Future[None]) -> None:
        """Take ``waiter`` out of the queue; a place it was given just now goes to the next one."""
        if waiter.done() and not waiter.cancelled():
            self._release()
            return
        waiter.cancel()
        with contextlib.suppress(ValueError):
            self._waiters.remove(waiter)

    def _release(self) -> None:
        """Give the place to the first waiter still waiting, else free it."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the place changes hands: ``_running`` stays
                return
        self._running -= 1


def pool_busy(err: BaseException) -> HostBusyError | None:
    """``host_busy`` for SQLAlchemy's pool timeout (every connection in use past the pool's timeout);
    ``None`` for any other error."""
    if not isinstance(err, PoolTimeoutError):
        return None
    log.warning("no database connection came free in time: %s", err.args[0] if err.args else err)
    return HostBusyError(
        "the host is busy: no database connection came free in time (database.pool_size, "
        "database.connect_timeout_seconds); try again shortly"
    )
