"""Chat turns for :class:`~opentier.client.AsyncClient`: over the WebSocket ``/v1/chat/ws`` (the default)
or over server-sent events ``/v1/chat/stream``.

:class:`AsyncChatStream` is one turn: iterate over it for its typed events, read :attr:`~AsyncChatStream.
answer` as it grows, :meth:`~AsyncChatStream.cancel` it. Use it in ``async with`` so that leaving early
closes it (which cancels the turn; its partial answer is stored as ``cancelled``)::

    async with client.chat("How do flaps work?", collection_ids=[manuals.id]) as stream:
        async for event in stream:
            if isinstance(event, TokenEvent):
                print(event.text, end="", flush=True)
    print(stream.answer.citations)

:class:`AsyncChatSession` keeps one WebSocket open for several turns in a row::

    async with client.chat_session() as session:
        first = await session.ask("How do flaps work?", collection_ids=[manuals.id])
        more = await session.ask("And slats?", conversation_id=first.conversation_id)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import quote

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from opentier.client.answer import Answer
from opentier.client.errors import AuthenticationError, ClientError, TransportError, error_from_body
from opentier.client.events import ChatEvent
from opentier.client.sse import SSEDecoder
from opentier.client.turns import (
    SILENT_HEARTBEATS,
    SSE_PATH,
    STREAM_ID_HEADER,
    TurnReader,
    check_hello,
    close_error,
    decode,
    ws_url,
)

if TYPE_CHECKING:
    from opentier.client.async_client import AsyncClient

#: Times an SSE stream is resumed (``Last-Event-ID``) after its connection broke, before giving up.
SSE_RESUMES = 3
#: Longest wait for a cancelled turn's ``done`` when a session turn is left unfinished.
DRAIN_SECONDS = 10.0
#: Largest message accepted from the gateway (a long citation text fits many times).
MAX_MESSAGE_BYTES = 16 * 1024 * 1024


class AsyncChatStream(ABC):
    """One chat turn as it streams: an async iterator of :data:`~opentier.client.events.ChatEvent`."""

    def __init__(self) -> None:
        #: The answer so far, complete once the iteration ended.
        self.answer = Answer()
        self._reader = TurnReader()
        self._opened = False
        self._closed = False

    async def __aenter__(self) -> Self:
        await self._ensure_open()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> ChatEvent:
        if self._reader.done or self._closed:
            await self.aclose()
            raise StopAsyncIteration
        await self._ensure_open()
        try:
            while True:
                event = self._reader.read(await self._receive())
                if event is not None:
                    break
        except BaseException:
            await self.aclose()
            raise
        self.answer.add(event)
        return event

    @property
    def done(self) -> bool:
        """The turn ended (its ``done`` arrived, or it was refused)."""
        return self._reader.done

    async def collect(self) -> Answer:
        """Read the turn to its end and return the whole answer."""
        async for _ in self:
            pass
        return self.answer

    async def aclose(self) -> None:
        """Stop reading; a turn that has not ended is cancelled."""
        if not self._closed:
            self._closed = True
            await self._close()

    async def _ensure_open(self) -> None:
        if self._opened:
            return
        self._opened = True
        try:
            await self._open()
        except BaseException:
            await self.aclose()
            raise

    @abstractmethod
    async def cancel(self) -> None:
        """Ask the gateway to stop the turn; it still ends with ``usage`` and ``done`` (``cancelled``)."""

    @abstractmethod
    async def _open(self) -> None: ...

    @abstractmethod
    async def _receive(self) -> dict[str, Any]: ...

    @abstractmethod
    async def _close(self) -> None: ...


# -- WebSocket --------------------------------------------------------------------------------------


class AsyncChatSession:
    """One WebSocket connection to ``/v1/chat/ws`` carrying turns one after another."""

    def __init__(self, client: AsyncClient, *, open_timeout: float = 10.0) -> None:
        self._client = client
        self._open_timeout = open_timeout
        self._ws: ClientConnection | None = None
        self._idle: float | None = None
        self._turn: AsyncWebSocketStream | None = None
        self._last_error: dict[str, Any] | None = None

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def open(self) -> None:
        """Connect and read the gateway's ``hello``; an expired access token is refreshed once."""
        if self._ws is not None:
            return
        headers = await self._client._auth_headers()
        try:
            await self._connect(headers)
        except AuthenticationError:
            if not await self._client._refresh_after(headers):
                raise
            await self._connect(await self._client._auth_headers())

    async def _connect(self, headers: dict[str, str]) -> None:
        try:
            ws = await connect(
                ws_url(self._client.base_url),
                additional_headers=headers,
                open_timeout=self._open_timeout,
                max_size=MAX_MESSAGE_BYTES,
                user_agent_header=self._client.user_agent,
            )
        except InvalidStatus as err:
            response = err.response
            try:
                body: Any = json.loads(response.body or b"")
            except ValueError:
                body = None
            raise error_from_body(response.status_code, body, response.headers) from None
        except (OSError, TimeoutError, InvalidHandshake) as err:
            where = self._client.base_url
            raise TransportError(f"cannot open the chat WebSocket at {where}: {err}") from None
        self._ws = ws
        try:
            self._idle = self._idle_limit(check_hello(decode(await self._recv(self._open_timeout))))
        except BaseException:
            await self.close()
            raise

    @staticmethod
    def _idle_limit(heartbeat: float | None) -> float | None:
        return heartbeat * SILENT_HEARTBEATS + 5.0 if heartbeat else None

    def turn(self, message: str, **start: Any) -> AsyncWebSocketStream:
        """A turn on this connection (the ``start`` fields as for :meth:`AsyncClient.chat`); it is sent
        when the stream is entered or first iterated."""
        from opentier.client.calls import chat_start

        return AsyncWebSocketStream(self._client, chat_start(message, **start), session=self)

    async def ask(self, message: str, **start: Any) -> Answer:
        """Send one turn and return its whole answer (raises :class:`ChatError` when it failed)."""
        async with self.turn(message, **start) as stream:
            answer = await stream.collect()
        answer.raise_for_failure()
        return answer

    async def close(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            await ws.close()

    async def _begin(self, turn: AsyncWebSocketStream, start: dict[str, Any]) -> None:
        if self._turn is not None:
            raise ClientError("a turn is still running on this connection; finish or cancel it first")
        await self.open()
        self._turn = turn
        await self._send({"type": "start", **start})

    async def _end(self, turn: AsyncWebSocketStream) -> None:
        """A turn left: when it had not ended, cancel it and read its last events (or drop the link)."""
        if self._turn is not turn:
            return
        self._turn = None
        if turn.done or self._ws is None:
            return
        try:
            await self._send({"type": "cancel"})
            async with asyncio.timeout(DRAIN_SECONDS):
                while not turn.done:
                    turn._reader.read(await self._receive())
        except (ClientError, TimeoutError):
            await self.close()

    async def _send(self, message: dict[str, Any]) -> None:
        if self._ws is None:
            raise TransportError("the chat connection is closed")
        try:
            await self._ws.send(json.dumps(message, ensure_ascii=False))
        except ConnectionClosed as err:
            raise self._closed_error(err) from None

    async def _recv(self, timeout: float | None) -> str | bytes:  # noqa: ASYNC109
        assert self._ws is not None
        try:
            async with asyncio.timeout(timeout):
                return await self._ws.recv()
        except ConnectionClosed as err:
            await self.close()
            raise self._closed_error(err) from None
        except TimeoutError:
            await self.close()
            raise TransportError("the chat connection went silent (no heartbeat)") from None

    async def _receive(self) -> dict[str, Any]:
        if self._ws is None:
            raise TransportError("the chat connection is closed")
        data = decode(await self._recv(self._idle))
        if data["type"] == "error" and "seq" not in data:
            self._last_error = data
        return data

    def _closed_error(self, err: ConnectionClosed) -> ClientError:
        frame = err.rcvd
        return close_error(frame.code if frame else None, frame.reason if frame else "", self._last_error)


class AsyncWebSocketStream(AsyncChatStream):
    """A turn over the WebSocket: its own connection, or one of a :class:`AsyncChatSession`."""

    def __init__(
        self, client: AsyncClient, start: dict[str, Any], *, session: AsyncChatSession | None = None
    ) -> None:
        super().__init__()
        self._client = client
        self._start = start
        self._owns_session = session is None
        self._session = session or AsyncChatSession(client)

    async def _open(self) -> None:
        await self._session._begin(self, self._start)

    async def _receive(self) -> dict[str, Any]:
        return await self._session._receive()

    async def cancel(self) -> None:
        if self._opened and not self.done:
            await self._session._send({"type": "cancel"})

    async def _close(self) -> None:
        if self._owns_session:
            await self._session.close()  # closing the connection cancels a running turn
        else:
            await self._session._end(self)


# -- server-sent events -----------------------------------------------------------------------------


class AsyncSSEStream(AsyncChatStream):
    """A turn over ``POST /v1/chat/stream``; a broken connection is resumed with ``Last-Event-ID``."""

    def __init__(self, client: AsyncClient, start: dict[str, Any]) -> None:
        super().__init__()
        self._client = client
        self._start = start
        self._response: httpx.Response | None = None
        self._lines: AsyncIterator[str] | None = None
        self._decoder = SSEDecoder()
        self._resumes = 0
        #: The stream's id (``OpenTier-Stream-Id``), known once it started.
        self.stream_id: str | None = None

    async def _open(self) -> None:
        response = await self._client._request(
            "POST", SSE_PATH, json=self._start, headers={"Accept": "text/event-stream"}, stream=True
        )
        self.stream_id = response.headers.get(STREAM_ID_HEADER)
        self._attach(response)

    def _attach(self, response: httpx.Response) -> None:
        self._response = response
        self._lines = response.aiter_lines()
        self._decoder = SSEDecoder()

    async def _receive(self) -> dict[str, Any]:
        while True:
            assert self._lines is not None
            try:
                line = await anext(self._lines)
            except StopAsyncIteration:
                await self._resume("the event stream ended before its done event")
                continue
            except httpx.TransportError as err:
                await self._resume(f"the event stream broke: {err}")
                continue
            event = self._decoder.feed(line)
            if event is not None and event.data:
                return decode(event.data)

    async def _resume(self, why: str) -> None:
        if self.stream_id is None or self._resumes >= SSE_RESUMES:
            raise TransportError(why)
        self._resumes += 1
        if self._response is not None:
            await self._response.aclose()
        await asyncio.sleep(0.2 * self._resumes)
        headers = {"Accept": "text/event-stream"}
        if self._reader.last_seq:
            headers["Last-Event-ID"] = str(self._reader.last_seq)
        path = f"{SSE_PATH}/{quote(self.stream_id, safe='')}"
        self._attach(await self._client._request("GET", path, headers=headers, stream=True))

    async def cancel(self) -> None:
        if self.stream_id is not None and not self.done:
            path = f"{SSE_PATH}/{quote(self.stream_id, safe='')}/cancel"
            await (await self._client._request("POST", path)).aclose()

    async def _close(self) -> None:
        if self._opened and self._reader.started and not self.done:
            with contextlib.suppress(ClientError):
                await self.cancel()  # left early: do not let the turn run on unread
        if self._response is not None:
            await self._response.aclose()
