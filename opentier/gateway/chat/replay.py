"""Server-sent event streams that outlive their HTTP response, so that a client can resume one.

A :class:`ReplayBuffer` keeps the last ``streaming.replay_events`` events of one stream as sent (wire
form, with ``seq``); readers follow it by their last seen ``seq`` and wait for more, so a reader holds
no copy of its own and memory stays bounded whatever the clients do: a reader that falls more than the
buffer behind loses its place (:class:`EventsExpiredError`) instead of holding events for it.

:class:`SSEStreams` is the registry of one gateway app (``gateway_state().extras["sse_streams"]``):
stream id → :class:`LiveStream` (its owner, the turn, a background task feeding the buffer, the number
of readers). A turn runs on whether or not anyone reads it. Once its last reader left, a running turn
is cancelled after ``streaming.resume_window_seconds``; an ended stream is forgotten
``streaming.resume_window_seconds`` after its turn ended and its last reader left, whichever is later.
Each user holds at most :data:`MAX_STREAMS_PER_USER` streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any, Protocol

from opentier.config import StreamingSettings
from opentier.errors import HostUnavailableError, InvalidRequestError, NotFoundError, RateLimitedError
from opentier.gateway.chat.events import TurnEvent, error_event
from opentier.gateway.principal import Principal

log = logging.getLogger(__name__)

#: Key of the app's registry in ``gateway_state().extras``.
STREAMS_KEY = "sse_streams"
#: Streams (running, or ended and still resumable) one user may hold at once.
MAX_STREAMS_PER_USER = 32
#: A new stream's first reader (the POST that started it) attaches within this, even when
#: ``streaming.resume_window_seconds`` is shorter.
FIRST_READER_GRACE_SECONDS = 5.0
#: How long :meth:`SSEStreams.close` waits for cancelled turns to end.
CLOSE_WAIT_SECONDS = 2.0


class EventsExpiredError(NotFoundError):
    """The events after the client's ``Last-Event-ID`` are no longer kept (404)."""

    code = "stream_events_expired"


class ReplayBuffer:
    """The last ``capacity`` wire events of one stream, numbered from 1; readers wait on it."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("a replay buffer keeps at least one event")
        self.capacity = capacity
        self._events: deque[dict[str, Any]] = deque(maxlen=capacity)
        self._pulse = asyncio.Event()
        #: ``seq`` of the newest event (0: none yet).
        self.last_seq = 0
        #: No event will follow (``done`` was appended).
        self.closed = False

    def __len__(self) -> int:
        return len(self._events)

    @property
    def first_seq(self) -> int:
        """``seq`` of the oldest event kept (``last_seq + 1`` while none is)."""
        return self.last_seq - len(self._events) + 1

    def append(self, event: TurnEvent) -> dict[str, Any]:
        """Number ``event``, keep it (dropping the oldest when full) and wake the readers."""
        if self.closed:
            raise RuntimeError("the stream has ended")
        self.last_seq += 1
        wire = event.wire(self.last_seq)
        self._events.append(wire)
        if event.terminal:
            self.closed = True
        self._wake()
        return wire

    def check(self, after: int) -> None:
        """Refuse a reader that would start after ``after``: never sent, or no longer kept."""
        if after < 0 or after > self.last_seq:
            raise InvalidRequestError(
                f"Last-Event-ID {after} is not an event of this stream (its last is {self.last_seq})"
            )
        if after < self.first_seq - 1:
            raise EventsExpiredError(
                f"the events after {after} are no longer kept (the oldest kept is {self.first_seq}; a stream "
                "keeps streaming.replay_events events)"
            )

    def since(self, after: int) -> list[dict[str, Any]]:
        """The kept events with ``seq > after``, oldest first (:meth:`check` first)."""
        self.check(after)
        skip = after - self.first_seq + 1
        return [self._events[i] for i in range(skip, len(self._events))]

    async def follow(self, after: int, heartbeat: float) -> AsyncIterator[dict[str, Any] | None]:
        """The events after ``after`` as they come, until ``done``; ``None`` after ``heartbeat``
        seconds without one (the caller sends a heartbeat)."""
        cursor = after
        while True:
            batch = self.since(cursor)
            for wire in batch:
                yield wire
                cursor = wire["seq"]
            if self.closed and cursor >= self.last_seq:
                return
            if cursor < self.last_seq:
                continue  # more came while the reader was sending
            try:
                async with asyncio.timeout(heartbeat):
                    await self._pulse.wait()
            except TimeoutError:
                yield None

    def _wake(self) -> None:
        # Every waiter of an Event is released by set(); clearing at once makes it a pulse.
        self._pulse.set()
        self._pulse.clear()


class Cancellable(Protocol):
    """What the registry needs of a turn (a :class:`~opentier.gateway.chat.turn.ChatTurn`)."""

    async def cancel(self, reason: str) -> None: ...


class LiveStream:
    """One SSE stream: its owner, its turn, the buffer the turn feeds, and who reads it."""

    def __init__(self, stream_id: str, owner: Principal, turn: Cancellable, capacity: int) -> None:
        self.id = stream_id
        self.tenant_id = owner.tenant_id
        self.user_id = owner.user_id
        self.turn = turn
        self.buffer = ReplayBuffer(capacity)
        self.readers = 0
        self.created = time.monotonic()
        self.task: asyncio.Task[None] | None = None
        self.cancel_requested = False
        #: The task asking the host to cancel the turn once nobody reads it.
        self.canceller: asyncio.Task[None] | None = None
        #: When to act on a stream nobody reads (:meth:`SSEStreams._idle`).
        self.timer: asyncio.TimerHandle | None = None
        #: The ``started`` event's data (what a ``done`` made up for the turn needs).
        self.started: dict[str, Any] = {}

    @property
    def ended(self) -> bool:
        return self.buffer.closed

    def owned_by(self, principal: Principal) -> bool:
        return principal.tenant_id == self.tenant_id and principal.user_id == self.user_id


class SSEStreams:
    """The live SSE streams of one gateway app."""

    def __init__(self, settings: StreamingSettings) -> None:
        self.settings = settings
        self._streams: dict[str, LiveStream] = {}
        self._closing = False

    def __len__(self) -> int:
        return len(self._streams)

    def __contains__(self, stream_id: object) -> bool:
        return stream_id in self._streams

    @property
    def closing(self) -> bool:
        """The app stops serving: no new stream."""
        return self._closing

    def open(
        self, owner: Principal, turn: Cancellable, started: TurnEvent, rest: AsyncIterator[TurnEvent]
    ) -> LiveStream:
        """A new stream for a turn whose ``started`` event came: numbers it (with ``stream_id`` added)
        and feeds the rest of the turn into the stream's buffer in a background task."""
        if self._closing:
            raise HostUnavailableError("the gateway is shutting down; start the turn again")
        self.make_room(owner)
        stream = LiveStream(secrets.token_urlsafe(16), owner, turn, self.settings.replay_events)
        stream.started = dict(started.data)
        stream.buffer.append(TurnEvent(started.type, {**started.data, "stream_id": stream.id}))
        self._streams[stream.id] = stream
        stream.task = asyncio.create_task(self._pump(stream, rest), name=f"sse-stream-{stream.id}")
        self._idle(stream, max(self.settings.resume_window_seconds, FIRST_READER_GRACE_SECONDS))
        return stream

    def find(self, stream_id: str) -> LiveStream | None:
        """The stream with this id, whoever owns it (None: unknown or expired)."""
        return self._streams.get(stream_id)

    def get(self, principal: Principal, stream_id: str) -> LiveStream:
        """The caller's stream; another user's, an expired or an unknown one is ``not_found``."""
        stream = self._streams.get(stream_id)
        if stream is None or not stream.owned_by(principal):
            raise NotFoundError(f"chat stream {stream_id} does not exist (or its resume window has passed)")
        return stream

    async def follow(self, stream: LiveStream, after: int) -> AsyncIterator[dict[str, Any] | None]:
        """Read ``stream`` from after ``after`` to its ``done`` (``None``: time for a heartbeat); the
        reader counts as attached while it iterates. Call ``stream.buffer.check(after)`` first to
        refuse before answering."""
        self._attach(stream)
        try:
            async for item in stream.buffer.follow(after, self.settings.heartbeat_seconds):
                yield item
        finally:
            self._detach(stream)

    async def cancel(self, stream: LiveStream, reason: str) -> None:
        """Ask the host to stop the turn (its partial answer is kept; ``done`` follows)."""
        if stream.ended or stream.cancel_requested:
            return
        stream.cancel_requested = True
        await stream.turn.cancel(reason)

    async def close(self) -> None:
        """Stop every stream (the app stops serving): cancel the turns and forget them."""
        self._closing = True
        streams, self._streams = list(self._streams.values()), {}
        tasks = []
        for stream in streams:
            if stream.timer is not None:
                stream.timer.cancel()
            if stream.task is not None and not stream.task.done():
                stream.task.cancel()
                tasks.append(stream.task)
        if tasks:
            await asyncio.wait(tasks, timeout=CLOSE_WAIT_SECONDS)

    def make_room(self, owner: Principal) -> None:
        """Keep the owner under :data:`MAX_STREAMS_PER_USER`: forget its oldest ended, unread streams,
        refuse when all are running or read."""
        mine = [s for s in self._streams.values() if s.owned_by(owner)]
        if len(mine) < MAX_STREAMS_PER_USER:
            return
        idle = sorted((s for s in mine if s.ended and s.readers == 0), key=lambda s: s.created)
        for stream in idle[: len(mine) - MAX_STREAMS_PER_USER + 1]:
            if stream.timer is not None:
                stream.timer.cancel()
            del self._streams[stream.id]
        if len(mine) - len(idle) >= MAX_STREAMS_PER_USER:
            raise RateLimitedError(
                f"you have {MAX_STREAMS_PER_USER} chat streams in progress; wait for one to end",
                retry_after=self.settings.resume_window_seconds or 1.0,
            )

    # -- internals ------------------------------------------------------------------------------

    async def _pump(self, stream: LiveStream, rest: AsyncIterator[TurnEvent]) -> None:
        """Feed the turn's events into the buffer; ``done`` is always the last one."""
        status = "failed"
        try:
            async for event in rest:
                stream.buffer.append(event)
                if stream.ended:
                    break
        except asyncio.CancelledError:
            status = "cancelled"
            raise
        except Exception:
            log.exception("chat stream %s: the turn failed unexpectedly", stream.id)
            if not stream.ended:
                stream.buffer.append(error_event("internal", "the chat turn failed in the gateway"))
        finally:
            close = getattr(rest, "aclose", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    await close()
            if not stream.ended:
                stream.buffer.append(self._done(stream, status))
            self._idle(stream, self.settings.resume_window_seconds)

    def _done(self, stream: LiveStream, status: str) -> TurnEvent:
        """The closing ``done`` of a turn whose own never came."""
        return TurnEvent(
            "done",
            {
                "message_id": stream.started.get("assistant_message_id"),
                "conversation_id": stream.started.get("conversation_id"),
                "status": status,
                "finish_reason": "cancelled" if status == "cancelled" else "error",
                "timings": {
                    "time_to_first_token_ms": None,
                    "total_ms": round((time.monotonic() - stream.created) * 1000),
                },
            },
        )

    def _attach(self, stream: LiveStream) -> None:
        stream.readers += 1
        if stream.timer is not None:
            stream.timer.cancel()
            stream.timer = None

    def _detach(self, stream: LiveStream) -> None:
        stream.readers -= 1
        self._idle(stream, self.settings.resume_window_seconds)

    def _idle(self, stream: LiveStream, seconds: float) -> None:
        """With no reader, act on ``stream`` in ``seconds``: cancel its turn, or forget it."""
        if stream.timer is not None:
            stream.timer.cancel()
            stream.timer = None
        if stream.readers > 0 or stream.id not in self._streams:
            return
        stream.timer = asyncio.get_running_loop().call_later(seconds, self._expire, stream)

    def _expire(self, stream: LiveStream) -> None:
        stream.timer = None
        if stream.readers > 0 or stream.id not in self._streams:
            return
        if stream.ended:
            del self._streams[stream.id]
            return
        if not stream.cancel_requested:
            log.info("chat stream %s: no reader for its resume window; cancelling the turn", stream.id)
            stream.cancel_requested = True
            stream.canceller = asyncio.create_task(self._cancel_quietly(stream))
        elif stream.task is not None:
            # A cancelled turn that did not end within another window: close its call to the host.
            stream.task.cancel()
        self._idle(stream, self.settings.resume_window_seconds)

    async def _cancel_quietly(self, stream: LiveStream) -> None:
        try:
            await stream.turn.cancel("the client left and did not come back")
        except Exception:
            log.exception("chat stream %s: cancelling the turn failed; closing its call", stream.id)
            if stream.task is not None:
                stream.task.cancel()
