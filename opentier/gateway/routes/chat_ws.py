"""``/v1/chat/ws``: chat over a WebSocket, protocol version 1 (docs/streaming.md, section WebSocket).

Each connection runs three tasks: a reader of the client's messages (``start``, ``cancel``, ``ping``),
the current turn (at most one), and a sender. The turn and the reader hand what is to be sent to the
sender through a queue of ``streaming.send_buffer_events``; a full queue pauses the turn, and so the
host's gRPC stream (backpressure), and one that stays full for ``streaming.slow_client_seconds`` closes
the connection with 4408 and cancels the turn. Memory per connection is therefore bounded, whatever
the client does. The sender numbers the events (``seq``, 1, 2, … across the connection's turns) and
sends a heartbeat when nothing was sent for ``streaming.heartbeat_seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from quart import Blueprint, Quart, g, websocket
from quart.blueprints import BlueprintSetupState

from opentier.config import StreamingSettings
from opentier.errors import (
    AuthenticationError,
    OpenTierError,
    PermissionDeniedError,
    QuotaExceededError,
    RateLimitedError,
)
from opentier.gateway.chat.events import TurnEvent, error_event
from opentier.gateway.chat.revocation import TENANT_ENDINGS
from opentier.gateway.chat.start import ChatStartRequest
from opentier.gateway.chat.turn import ChatTurn
from opentier.gateway.host import HostClient
from opentier.gateway.limits.quotas import EXTRAS_KEY as QUOTAS_EXTRAS_KEY
from opentier.gateway.limits.quotas import TokenQuotas
from opentier.gateway.observability.metrics import GatewayMetrics
from opentier.gateway.principal import (
    Principal,
    authenticate,
    check_scopes,
    credential_from_headers,
)
from opentier.gateway.routes.context import caller, host_client
from opentier.gateway.serve import draining
from opentier.gateway.state import gateway_state

log = logging.getLogger(__name__)

blueprint = Blueprint("chat_ws", __name__)

PATH = "/v1/chat/ws"
PROTOCOL_VERSION = 1
#: Query parameter carrying the credential for clients that cannot set headers (browsers).
TOKEN_PARAMETER = "access_token"
#: Key of ``gateway_state().extras`` holding the open connections (a set of :class:`ChatConnection`).
SOCKETS_KEY = "chat_sockets"

# Close codes (RFC 6455 and the 4xxx range of this protocol).
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL = 1011
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_SLOW_CONSUMER = 4408
CLOSE_RATE_LIMITED = 4429

#: Error code of a ``start`` sent while a turn runs (a protocol error: the connection stays).
TURN_IN_PROGRESS = "turn_in_progress"
INVALID_REQUEST = "invalid_request"
#: Longest wait, at shutdown, for a cancelled turn to send its ``done`` before the socket closes.
SHUTDOWN_TURN_SECONDS = 2.0
#: Longest wait for the close handshake to be handed to a client that does not read.
CLOSE_SECONDS = 2.0


def blueprints() -> list[Blueprint]:
    return [blueprint]


@blueprint.record_once
def _install(setup: BlueprintSetupState) -> None:
    app = setup.app
    assert isinstance(app, Quart)
    gateway_state(app).extras.setdefault(SOCKETS_KEY, set())


class SlowConsumer(Exception):
    """The client's send buffer stayed full for ``streaming.slow_client_seconds``."""


@dataclass(frozen=True, slots=True)
class Control:
    """A message outside the numbered events: ``hello``, ``pong``, ``heartbeat``."""

    data: dict[str, Any]


Outgoing = TurnEvent | Control


@blueprint.websocket(PATH)
async def chat_socket() -> None:
    """One client connection: authenticate, greet, then relay turns until either side closes."""
    await websocket.accept()
    try:
        principal = await authenticate(_credential())
        check_scopes(principal, ("chat",))
    except (AuthenticationError, PermissionDeniedError) as err:
        code = CLOSE_UNAUTHENTICATED if isinstance(err, AuthenticationError) else CLOSE_FORBIDDEN
        await websocket.send(_encode({"type": "error", "code": err.code, "message": err.message}))
        await websocket.close(code, err.code)
        return
    g.principal = principal
    state = gateway_state()
    quotas = state.extras.get(QUOTAS_EXTRAS_KEY)
    observability = state.extras.get("observability")
    connection = ChatConnection(
        state.settings.streaming,
        host_client(),
        principal,
        quotas if isinstance(quotas, TokenQuotas) else None,
        getattr(observability, "metrics", None),
    )
    sockets: set[ChatConnection] = state.extras[SOCKETS_KEY]
    sockets.add(connection)
    try:
        await connection.run(draining())
    finally:
        sockets.discard(connection)


def _credential() -> str:
    """The bearer credential from the headers, else from the ``access_token`` query parameter."""
    token = websocket.args.get(TOKEN_PARAMETER, "").strip()
    has_header = "Authorization" in websocket.headers or "X-API-Key" in websocket.headers
    if token and not has_header:
        return token
    return credential_from_headers()


def _encode(message: dict[str, Any]) -> str:
    encoded = json.dumps(message, ensure_ascii=False, separators=(",", ":"))
    if not encoded.isascii():
        try:
            encoded.encode()
        except UnicodeEncodeError:
            # A lone surrogate (a client may send one, JSON-escaped, and see it echoed in an error) is
            # not UTF-8: escape it, or sending the text frame would fail and take the connection down.
            return json.dumps(message, separators=(",", ":"))
    return encoded


class ChatConnection:
    """The state of one connection: its queue, its sequence numbers and its current turn."""

    def __init__(
        self,
        settings: StreamingSettings,
        client: HostClient,
        principal: Principal,
        quotas: TokenQuotas | None,
        metrics: GatewayMetrics | None,
    ) -> None:
        self.settings = settings
        self.client = client
        self.principal = principal
        self.quotas = quotas
        self.metrics = metrics
        self.queue: asyncio.Queue[Outgoing] = asyncio.Queue(maxsize=settings.send_buffer_events)
        #: The largest the queue has been (tests check the bound; a gauge could export it).
        self.high_water = 0
        self.seq = 0
        self.turn: ChatTurn | None = None
        self.turn_task: asyncio.Task[None] | None = None
        #: A turn is running: its ``done`` is not queued yet (its task may still be ending after that).
        self.turn_active = False
        self._turn_tasks: set[asyncio.Task[None]] = set()
        self._close_code: int | None = None
        self._close_reason = ""
        self._ended = asyncio.Event()
        self._turn_began = 0.0
        self._first_token_seen = False

    # -- lifecycle --------------------------------------------------------------------------------

    async def run(self, draining: asyncio.Event) -> None:
        began = time.monotonic()
        await self.put(
            Control(
                {
                    "type": "hello",
                    "protocol": PROTOCOL_VERSION,
                    "heartbeat_seconds": self.settings.heartbeat_seconds,
                    "max_frame_bytes": self.settings.max_frame_bytes,
                }
            )
        )
        sender = asyncio.create_task(self._send_loop(), name="chat-ws-sender")
        reader = asyncio.create_task(self._read_loop(), name="chat-ws-reader")
        ended = asyncio.create_task(self._ended.wait(), name="chat-ws-ended")
        drain = asyncio.create_task(draining.wait(), name="chat-ws-draining")
        tasks = {sender, reader, ended, drain}
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            if self._close_code is None and drain in done:
                await self._shut_down_turn()
                self.end(CLOSE_GOING_AWAY, "the gateway is shutting down")
            for task in done & {sender, reader}:
                if not task.cancelled() and task.exception() is not None:
                    log.error("chat socket failed", exc_info=task.exception())
                    self.end(CLOSE_INTERNAL, "internal error")
        finally:
            # Also reached when the client went away (Quart cancels this handler): the turn's gRPC
            # call is cancelled with its task, and the host stores the partial answer as cancelled.
            await self._stop_tasks([*self._turn_tasks, sender, reader, ended, drain])
            if self.metrics is not None:
                self.metrics.stream_duration.labels("websocket").observe(time.monotonic() - began)
        code = self._close_code or CLOSE_NORMAL
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_SECONDS):
                await websocket.close(code, self._close_reason)

    def end(self, code: int, reason: str) -> None:
        """Close the connection with ``code`` (the first reason given wins)."""
        if self._close_code is None:
            # A close frame's reason is at most 123 bytes.
            self._close_code = code
            self._close_reason = reason.encode()[:120].decode(errors="ignore")
            log.info("chat socket closing: %d %s", code, reason)
        self._ended.set()

    async def _shut_down_turn(self) -> None:
        """Cancel the running turn and let its last events (``usage``, ``done``) go out, briefly."""
        if self.turn is None or self.turn_task is None or not self.turn_active:
            return
        await self.turn.cancel("the gateway is shutting down")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(SHUTDOWN_TURN_SECONDS):
                await asyncio.shield(self.turn_task)
                await self.queue.join()

    @staticmethod
    async def _stop_tasks(tasks: Sequence[asyncio.Task[Any] | None]) -> None:
        running = [task for task in tasks if task is not None]
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)

    # -- sending ----------------------------------------------------------------------------------

    async def put(self, item: Outgoing) -> None:
        """Queue ``item`` for the sender; waits while the buffer is full, at most slow_client_seconds."""
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            try:
                async with asyncio.timeout(self.settings.slow_client_seconds):
                    await self.queue.put(item)
            except TimeoutError:
                raise SlowConsumer from None
        self.high_water = max(self.high_water, self.queue.qsize())

    async def _send_loop(self) -> None:
        heartbeat = _encode({"type": "heartbeat"})
        while True:
            try:
                async with asyncio.timeout(self.settings.heartbeat_seconds):
                    item = await self.queue.get()
            except TimeoutError:
                await websocket.send(heartbeat)
                continue
            if isinstance(item, Control):
                await websocket.send(_encode(item.data))
            else:
                self.seq += 1
                await websocket.send(_encode(item.wire(self.seq)))
                self._observe(item)
            self.queue.task_done()

    def _observe(self, event: TurnEvent) -> None:
        if self.metrics is None or event.type != "token":
            return
        self.metrics.tokens_streamed.inc()
        if not self._first_token_seen:
            self._first_token_seen = True
            self.metrics.time_to_first_token.observe(time.monotonic() - self._turn_began)

    # -- reading ----------------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        try:
            while True:
                data = await websocket.receive()
                if _size(data, self.settings.max_frame_bytes) > self.settings.max_frame_bytes:
                    self.end(CLOSE_TOO_BIG, f"messages are limited to {self.settings.max_frame_bytes} bytes")
                    return
                await self._handle(data)
        except SlowConsumer:
            self._slow_consumer()

    async def _handle(self, data: str | bytes) -> None:
        try:
            message = json.loads(data)
        except (ValueError, RecursionError) as err:
            # ValueError: not UTF-8, not JSON, or an integer of too many digits; RecursionError: nested
            # too deeply for the parser. Either way the client's message, not the gateway, is at fault.
            problem = "nested too deeply" if isinstance(err, RecursionError) else str(err)
            await self.put(error_event(INVALID_REQUEST, f"the message is not JSON: {problem}"))
            return
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "ping":
            await self.put(Control({"type": "pong"}))
        elif kind == "cancel":
            if self.turn is not None and self.turn_active:
                await self.turn.cancel("the client cancelled")
        elif kind == "start":
            await self._start(message)
        else:
            await self.put(
                error_event(
                    INVALID_REQUEST,
                    f"unknown message type {kind!r}; expected start, cancel or ping"
                    if isinstance(kind, str)
                    else "a message must be a JSON object with a `type`",
                )
            )

    async def _start(self, message: dict[str, Any]) -> None:
        if self.turn_active:
            await self.put(
                error_event(TURN_IN_PROGRESS, "a turn is running: wait for its `done`, or send `cancel`")
            )
            return
        fields = {key: value for key, value in message.items() if key != "type"}
        try:
            start = ChatStartRequest.model_validate(fields)
        except ValidationError as err:
            await self.put(error_event(INVALID_REQUEST, _validation_message(err)))
            return
        self.turn = ChatTurn(
            self.client,
            self.principal,
            caller(),
            start,
            quotas=self.quotas,
            deadline_seconds=self.settings.turn_deadline_seconds,
        )
        self._turn_began = time.monotonic()
        self._first_token_seen = False
        self.turn_active = True
        self.turn_task = asyncio.create_task(self._run_turn(self.turn), name="chat-ws-turn")
        self._turn_tasks.add(self.turn_task)
        self.turn_task.add_done_callback(self._turn_tasks.discard)

    # -- the turn ---------------------------------------------------------------------------------

    async def _run_turn(self, turn: ChatTurn) -> None:
        try:
            await self._relay(turn)
        except SlowConsumer:
            self._slow_consumer()
        finally:
            self._turn_over(turn)

    def _turn_over(self, turn: ChatTurn) -> None:
        if self.turn is turn:
            self.turn_active = False

    async def _relay(self, turn: ChatTurn) -> None:
        try:
            async with contextlib.aclosing(turn.events()) as events:
                async for event in events:
                    await self.put(event)
                    if event.terminal:
                        # The client may start the next turn once it sees `done`, while this one
                        # still closes its call and charges its tokens.
                        self._turn_over(turn)
        except SlowConsumer:
            raise
        except OpenTierError as err:
            # Refused before `started`: one error event, no `done`; the connection stays.
            await self.put(_refusal(err))
            if isinstance(err, RateLimitedError) and not isinstance(err, QuotaExceededError):
                self.end(CLOSE_RATE_LIMITED, err.message)
        except Exception:
            log.exception("chat turn failed in the gateway")
            await self.put(error_event("internal", "the turn failed inside the gateway"))
        if turn.ending is not None:
            # The connection's credential no longer works: close once the turn's last events are out,
            # with the code a new connection would get (docs/admin-users.md).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CLOSE_SECONDS):
                    await self.queue.join()
            forbidden = turn.ending.code in TENANT_ENDINGS
            self.end(CLOSE_FORBIDDEN if forbidden else CLOSE_UNAUTHENTICATED, turn.ending.code)

    def _slow_consumer(self) -> None:
        self.end(
            CLOSE_SLOW_CONSUMER,
            f"the client read too slowly (buffer full for {self.settings.slow_client_seconds:g}s)",
        )


def _refusal(err: OpenTierError) -> TurnEvent:
    retry_after = getattr(err, "retry_after", None)
    event = error_event(err.code, err.message, retryable=retry_after is not None)
    if retry_after is not None:
        return TurnEvent("error", {**event.data, "retry_after": retry_after})
    return event


def _size(data: str | bytes, limit: int) -> int:
    """Bytes of a message (a str is encoded only when it could be over ``limit``)."""
    if isinstance(data, bytes):
        return len(data)
    return len(data) if len(data) * 4 <= limit else len(data.encode())


def _validation_message(err: ValidationError) -> str:
    parts = []
    for problem in err.errors()[:5]:
        where = ".".join(str(part) for part in problem["loc"]) or "message"
        parts.append(f"{where}: {problem['msg']}")
    return "invalid start: " + "; ".join(parts)
