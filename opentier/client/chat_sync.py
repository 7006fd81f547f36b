"""Chat turns for the synchronous :class:`~opentier.client.Client`: the same turns as
:mod:`opentier.client.chat_async`, over ``websockets``' threaded client or httpx's blocking streams.

>>> with client.chat("How do flaps work?", collection_ids=[manuals.id]) as stream:
...     for event in stream:
...         if isinstance(event, TokenEvent):
...             print(event.text, end="", flush=True)
>>> stream.answer.citations
"""

from __future__ import annotations

import contextlib
import json
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import quote

import httpx
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from opentier.client.answer import Answer
from opentier.client.chat_async import DRAIN_SECONDS, MAX_MESSAGE_BYTES, SSE_RESUMES
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
    from opentier.client.sync_client import Client


class ChatStream(ABC):
    """One chat turn as it streams: an iterator of :data:`~opentier.client.events.ChatEvent`."""

    def __init__(self) -> None:
        #: The answer so far, complete once the iteration ended.
        self.answer = Answer()
        self._reader = TurnReader()
        self._opened = False
        self._closed = False

    def __enter__(self) -> Self:
        self._ensure_open()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> ChatEvent:
        if self._reader.done or self._closed:
            self.close()
            raise StopIteration
        self._ensure_open()
        try:
            while True:
                event = self._reader.read(self._receive())
                if event is not None:
                    break
        except Exception:
            # Not on KeyboardInterrupt: the caller may cancel() the turn and read on to its done.
            self.close()
            raise
        self.answer.add(event)
        return event

    @property
    def done(self) -> bool:
        return self._reader.done

    def collect(self) -> Answer:
        """Read the turn to its end and return the whole answer."""
        for _ in self:
            pass
        return self.answer

    def close(self) -> None:
        """Stop reading; a turn that has not ended is cancelled."""
        if not self._closed:
            self._closed = True
            self._close()

    def _ensure_open(self) -> None:
        if self._opened:
            return
        self._opened = True
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    @abstractmethod
    def cancel(self) -> None:
        """Ask the gateway to stop the turn; it still ends with ``usage`` and ``done`` (``cancelled``)."""

    @abstractmethod
    def _open(self) -> None: ...

    @abstractmethod
    def _receive(self) -> dict[str, Any]: ...

    @abstractmethod
    def _close(self) -> None: ...


class ChatSession:
    """One WebSocket connection to ``/v1/chat/ws`` carrying turns one after another."""

    def __init__(self, client: Client, *, open_timeout: float = 10.0) -> None:
        self._client = client
        self._open_timeout = open_timeout
        self._ws: ClientConnection | None = None
        # Holds the connection as a context (websockets >= 17.1 wants its sync connections entered).
        self._stack = contextlib.ExitStack()
        self._idle: float | None = None
        self._turn: WebSocketStream | None = None
        self._last_error: dict[str, Any] | None = None

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def open(self) -> None:
        """Connect and read the gateway's ``hello``; an expired access token is refreshed once."""
        if self._ws is not None:
            return
        headers = self._client._auth_headers()
        try:
            self._connect(headers)
        except AuthenticationError:
            if not self._client._refresh_after(headers):
                raise
            self._connect(self._client._auth_headers())

    def _connect(self, headers: dict[str, str]) -> None:
        try:
            ws = self._stack.enter_context(
                connect(
                    ws_url(self._client.base_url),
                    additional_headers=headers,
                    open_timeout=self._open_timeout,
                    max_size=MAX_MESSAGE_BYTES,
                    user_agent_header=self._client.user_agent,
                )
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
            heartbeat = check_hello(decode(self._recv(self._open_timeout)))
        except BaseException:
            self.close()
            raise
        self._idle = heartbeat * SILENT_HEARTBEATS + 5.0 if heartbeat else None

    def turn(self, message: str, **start: Any) -> WebSocketStream:
        """A turn on this connection (the ``start`` fields as for :meth:`Client.chat`)."""
        from opentier.client.calls import chat_start

        return WebSocketStream(self._client, chat_start(message, **start), session=self)

    def ask(self, message: str, **start: Any) -> Answer:
        """Send one turn and return its whole answer (raises :class:`ChatError` when it failed)."""
        with self.turn(message, **start) as stream:
            answer = stream.collect()
        answer.raise_for_failure()
        return answer

    def close(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            ws.close()
        self._stack.close()

    def _begin(self, turn: WebSocketStream, start: dict[str, Any]) -> None:
        if self._turn is not None:
            raise ClientError("a turn is still running on this connection; finish or cancel it first")
        self.open()
        self._turn = turn
        self._send({"type": "start", **start})

    def _end(self, turn: WebSocketStream) -> None:
        if self._turn is not turn:
            return
        self._turn = None
        if turn.done or self._ws is None:
            return
        try:
            self._send({"type": "cancel"})
            deadline = time.monotonic() + DRAIN_SECONDS
            while not turn.done:
                if time.monotonic() > deadline:
                    raise TimeoutError
                turn._reader.read(self._receive())
        except (ClientError, TimeoutError):
            self.close()

    def _send(self, message: dict[str, Any]) -> None:
        if self._ws is None:
            raise TransportError("the chat connection is closed")
        try:
            self._ws.send(json.dumps(message, ensure_ascii=False))
        except ConnectionClosed as err:
            raise self._closed_error(err) from None

    def _recv(self, timeout: float | None) -> str | bytes:
        assert self._ws is not None
        try:
            return self._ws.recv(timeout=timeout)
        except ConnectionClosed as err:
            self.close()
            raise self._closed_error(err) from None
        except TimeoutError:
            self.close()
            raise TransportError("the chat connection went silent (no heartbeat)") from None

    def _receive(self) -> dict[str, Any]:
        if self._ws is None:
            raise TransportError("the chat connection is closed")
        data = decode(self._recv(self._idle))
        if data["type"] == "error" and "seq" not in data:
            self._last_error = data
        return data

    def _closed_error(self, err: ConnectionClosed) -> ClientError:
        frame = err.rcvd
        return close_error(frame.code if frame else None, frame.reason if frame else "", self._last_error)


class WebSocketStream(ChatStream):
    """A turn over the WebSocket: its own connection, or one of a :class:`ChatSession`."""

    def __init__(self, client: Client, start: dict[str, Any], *, session: ChatSession | None = None) -> None:
        super().__init__()
        self._start = start
        self._owns_session = session is None
        self._session = session or ChatSession(client)

    def _open(self) -> None:
        self._session._begin(self, self._start)

    def _receive(self) -> dict[str, Any]:
        return self._session._receive()

    def cancel(self) -> None:
        if self._opened and not self.done:
            self._session._send({"type": "cancel"})

    def _close(self) -> None:
        if self._owns_session:
            self._session.close()
        else:
            self._session._end(self)


class SSEStream(ChatStream):
    """A turn over ``POST /v1/chat/stream``; a broken connection is resumed with ``Last-Event-ID``."""

    def __init__(self, client: Client, start: dict[str, Any]) -> None:
        super().__init__()
        self._client = client
        self._start = start
        self._response: httpx.Response | None = None
        self._lines: Iterator[str] | None = None
        self._decoder = SSEDecoder()
        self._resumes = 0
        self.stream_id: str | None = None

    def _open(self) -> None:
        response = self._client._request(
            "POST", SSE_PATH, json=self._start, headers={"Accept": "text/event-stream"}, stream=True
        )
        self.stream_id = response.headers.get(STREAM_ID_HEADER)
        self._attach(response)

    def _attach(self, response: httpx.Response) -> None:
        self._response = response
        self._lines = response.iter_lines()
        self._decoder = SSEDecoder()

    def _receive(self) -> dict[str, Any]:
        while True:
            assert self._lines is not None
            try:
                line = next(self._lines)
            except StopIteration:
                self._resume("the event stream ended before its done event")
                continue
            except httpx.TransportError as err:
                self._resume(f"the event stream broke: {err}")
                continue
            event = self._decoder.feed(line)
            if event is not None and event.data:
                return decode(event.data)

    def _resume(self, why: str) -> None:
        if self.stream_id is None or self._resumes >= SSE_RESUMES:
            raise TransportError(why)
        self._resumes += 1
        if self._response is not None:
            self._response.close()
        time.sleep(0.2 * self._resumes)
        headers = {"Accept": "text/event-stream"}
        if self._reader.last_seq:
            headers["Last-Event-ID"] = str(self._reader.last_seq)
        path = f"{SSE_PATH}/{quote(self.stream_id, safe='')}"
        self._attach(self._client._request("GET", path, headers=headers, stream=True))

    def cancel(self) -> None:
        if self.stream_id is not None and not self.done:
            self._client._request("POST", f"{SSE_PATH}/{quote(self.stream_id, safe='')}/cancel").close()

    def _close(self) -> None:
        if self._opened and self._reader.started and not self.done:
            with contextlib.suppress(ClientError):
                self.cancel()
        if self._response is not None:
            self._response.close()
