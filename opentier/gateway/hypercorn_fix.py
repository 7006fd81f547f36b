"""A fix for Hypercorn's handling of a WebSocket message over ``websocket_max_message_size``.

Hypercorn 0.17 and 0.18 close such a connection with code 1009, as they should, but keep the oversized
message in the stream's buffer and stop reading the events already received. When the client sent
another frame before it saw the close (a pipelined client, or a fuzzer), that frame raises again, and
the client's close reply, queued behind it, is never read: the TCP connection stays open and the app's
handler never ends. This is the "stuck connection" that docs/reliability.md lists under hostile input.

:func:`install` replaces ``WSStream._handle_events`` with the same loop, changed in two places: the
buffer is emptied when the limit is crossed, and once our side has sent its close, data frames are
dropped (RFC 6455 §5.5.1 lets an endpoint that sent a close discard what follows) while the client's
close reply is still read, which ends the stream. Pings and closes are handled as before.

The fix is applied to the class, once per process, when the gateway builds its Hypercorn settings
(:func:`opentier.gateway.serve.hypercorn_config`). ``pyproject.toml`` pins Hypercorn below 0.19, and
``tests/gateway/test_ws_fuzz.py`` checks the behaviour through a real server, so an upgrade that
changes this method is caught by a failing test rather than by a stuck connection.
"""

from __future__ import annotations

from typing import Any

from hypercorn.protocol import ws_stream
from hypercorn.protocol.events import StreamClosed
from wsproto.connection import ConnectionState
from wsproto.events import CloseConnection, Message, Ping
from wsproto.frame_protocol import CloseReason

_INSTALLED = "_opentier_frame_limit_fix"


async def _handle_events(self: Any) -> None:
    """``WSStream._handle_events`` that recovers from an oversized message (see the module's text)."""
    for event in self.connection.events():
        if isinstance(event, Message):
            if self.connection.state is not ConnectionState.OPEN:
                continue  # we have sent our close: what the client sent before reading it is dropped
            try:
                self.buffer.extend(event)
            except ws_stream.FrameTooLargeError:
                self.buffer.clear()
                await self._send_wsproto_event(CloseConnection(code=CloseReason.MESSAGE_TOO_BIG))
                continue
            if event.message_finished:
                await self.app_put(self.buffer.to_message())
                self.buffer.clear()
        elif isinstance(event, Ping):
            await self._send_wsproto_event(event.response())
        elif isinstance(event, CloseConnection):
            if self.connection.state == ConnectionState.REMOTE_CLOSING:
                await self._send_wsproto_event(event.response())
            await self.send(StreamClosed(stream_id=self.stream_id))


def install() -> None:
    """Patch Hypercorn's WebSocket stream class (idempotent)."""
    stream_class: Any = ws_stream.WSStream
    if getattr(stream_class, _INSTALLED, False):
        return
    stream_class._handle_events = _handle_events
    setattr(stream_class, _INSTALLED, True)
