"""What both chat transports share, without any I/O: reading the messages of a turn, and the meaning of
the WebSocket protocol's control messages and close codes.

A ``start`` the gateway refuses before the turn starts (an unknown collection, the token quota used up,
the host down...) is answered by one ``error`` event and no ``done``: :class:`TurnReader` raises it as
the typed error (:class:`~opentier.client.errors.QuotaExceededError`...). An ``error`` after ``started``
is part of the turn: it is yielded, and ``done`` follows.
"""

from __future__ import annotations

import json
from typing import Any

from opentier.client.errors import (
    ClientError,
    ProtocolError,
    TransportError,
    api_error,
    error_from_message,
)
from opentier.client.events import ChatEvent, DoneEvent, StartedEvent, parse_event

#: The WebSocket protocol version this client speaks.
PROTOCOL_VERSION = 1
WS_PATH = "/v1/chat/ws"
SSE_PATH = "/v1/chat/stream"
STREAM_ID_HEADER = "OpenTier-Stream-Id"
#: A connection silent for this many heartbeat periods is taken for dead.
SILENT_HEARTBEATS = 3.0

#: What each close code of the WebSocket protocol means, as the error it becomes.
_CLOSE_CODES: dict[int, tuple[str, str]] = {
    1001: ("gateway_shutting_down", "the gateway is shutting down; connect again"),
    1009: ("request_too_large", "a message was larger than the gateway accepts"),
    1011: ("internal", "the gateway failed; see its logs"),
    4401: ("unauthenticated", "the gateway refused the credential"),
    4403: ("permission_denied", "the credential lacks the scope chat"),
    4408: ("slow_consumer", "the client read too slowly; the turn was cancelled"),
    4429: ("rate_limited", "too many requests"),
}
_CLOSE_STATUS = {1001: 503, 4408: 408}


def ws_url(base_url: str) -> str:
    """``ws(s)://…/v1/chat/ws`` of a gateway at ``base_url`` (``http(s)://…``, any path prefix kept)."""
    base = base_url.rstrip("/")
    if base.startswith("https://"):
        return "wss://" + base.removeprefix("https://") + WS_PATH
    if base.startswith("http://"):
        return "ws://" + base.removeprefix("http://") + WS_PATH
    raise ValueError(f"the gateway URL must start with http:// or https://, not {base_url!r}")


def decode(message: str | bytes) -> dict[str, Any]:
    """One JSON message of a stream."""
    try:
        data = json.loads(message)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ProtocolError(f"the gateway sent a message that is not JSON: {err}") from None
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        raise ProtocolError("the gateway sent a message without a type")
    return data


def check_hello(data: dict[str, Any]) -> float | None:
    """The first message of a WebSocket: ``hello`` (its heartbeat period is returned) or a refusal."""
    if data["type"] == "error":
        raise error_from_message(data)
    if data["type"] != "hello":
        raise ProtocolError(f"expected hello from the gateway, got {data['type']!r}")
    if data.get("protocol") != PROTOCOL_VERSION:
        raise ProtocolError(
            f"the gateway speaks chat protocol {data.get('protocol')!r}; "
            f"this client speaks {PROTOCOL_VERSION}"
        )
    heartbeat = data.get("heartbeat_seconds")
    return float(heartbeat) if isinstance(heartbeat, int | float) and heartbeat > 0 else None


def close_error(code: int | None, reason: str, last_error: dict[str, Any] | None = None) -> ClientError:
    """The error of a WebSocket closed before the turn ended (``last_error``: a refusal sent just before)."""
    if last_error is not None:
        return error_from_message(last_error)
    if code in _CLOSE_CODES:
        name, message = _CLOSE_CODES[code]
        return api_error(name, reason or message, status=_CLOSE_STATUS.get(code))
    why = reason or "no reason"
    return TransportError(f"the chat connection closed before the turn ended (code {code}, {why})")


class TurnReader:
    """The events of one turn from decoded messages: refusals raise, ``done`` ends it."""

    def __init__(self) -> None:
        self.started = False
        self.done = False
        #: The last ``seq`` received (where an SSE stream resumes from).
        self.last_seq = 0

    def read(self, data: dict[str, Any]) -> ChatEvent | None:
        """The event of a message, ``None`` for a message that is not one (heartbeat, pong)."""
        if "seq" not in data:
            if data["type"] == "error":
                # An error without seq: the connection itself was refused (rate limited...).
                self.done = True
                raise error_from_message(data)
            return None
        if data["type"] == "error" and not self.started:
            self.done = True  # refused before it started: no done follows
            raise error_from_message(data)
        event = parse_event(data)
        self.last_seq = event.seq
        if isinstance(event, StartedEvent):
            self.started = True
        elif isinstance(event, DoneEvent):
            self.done = True
        return event
