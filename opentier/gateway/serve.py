"""Serving the gateway app with Hypercorn, and stopping it gracefully.

On SIGINT or SIGTERM (or when :attr:`GatewayServer.stop` is set), Hypercorn stops accepting connections,
lets the requests in flight finish for up to ``gateway.shutdown_grace_seconds``, then runs the app's
shutdown, which closes the channel pool to the host and the database. Long-lived streams (WebSocket, SSE)
learn that the server is stopping from :func:`draining`, so that they end at once (WebSocket close 1001)
rather than holding the grace period. The listening socket is bound here,
before Hypercorn starts, so that port 0 works and the bound port is known (:attr:`GatewayServer.port`).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket

from hypercorn.asyncio import serve
from hypercorn.config import Config
from quart import Quart

from opentier.config import Settings
from opentier.errors import ConfigError
from opentier.gateway import hypercorn_fix
from opentier.gateway.state import gateway_state

log = logging.getLogger(__name__)

#: Key of ``gateway_state(app).extras`` holding the app's :func:`draining` event.
DRAINING_KEY = "draining"


def draining(app: Quart | None = None) -> asyncio.Event:
    """Set when the server serving ``app`` (default: the current app) begins to stop."""
    extras = gateway_state(app).extras
    event = extras.get(DRAINING_KEY)
    if not isinstance(event, asyncio.Event):
        event = extras[DRAINING_KEY] = asyncio.Event()
    return event


def bind_socket(address: str, port: int) -> socket.socket:
    """A listening TCP socket on ``address:port`` (IPv6 when the address is one); ConfigError when taken."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        sock = socket.create_server((address.strip("[]"), port), family=family, backlog=1024)
    except OSError as err:
        raise ConfigError(
            f"the gateway cannot listen on {address}:{port} (gateway.address, gateway.port): {err.strerror}"
        ) from None
    sock.set_inheritable(True)
    return sock


def hypercorn_config(settings: Settings, fd: int) -> Config:
    """Hypercorn's settings for the gateway: our socket (Hypercorn takes it over and closes it), our
    grace period, no access log of its own."""
    config = Config()
    config.bind = [f"fd://{fd}"]
    config.graceful_timeout = settings.gateway.shutdown_grace_seconds
    config.accesslog = None  # the observability middleware logs each request, with its request id
    # Through the process's own handlers (JSON lines), not a stream handler of Hypercorn's.
    config.errorlog = logging.getLogger("hypercorn.error")
    config.include_server_header = False
    # A larger client message is refused by Hypercorn with close code 1009 before it is buffered whole,
    # and (with our fix of a Hypercorn bug) whatever the client sends after it cannot keep it open.
    config.websocket_max_message_size = settings.streaming.max_frame_bytes
    hypercorn_fix.install()
    return config


class GatewayServer:
    """One gateway app served on one socket until :meth:`request_stop` (or a signal)."""

    def __init__(self, app: Quart, settings: Settings, *, sock: socket.socket | None = None) -> None:
        self.app = app
        self.settings = settings
        self._socket: socket.socket | None = sock or bind_socket(
            settings.gateway.address, settings.gateway.port
        )
        host, port = self._socket.getsockname()[:2]
        #: The port actually bound (differs from ``gateway.port`` when that is 0).
        self.port: int = port
        self.url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
        self._stop = asyncio.Event()

    def request_stop(self) -> None:
        """Begin the graceful shutdown (what SIGINT and SIGTERM do)."""
        self._stop.set()

    async def serve(self, *, handle_signals: bool = False) -> None:
        """Serve until stopped; with ``handle_signals``, SIGINT and SIGTERM stop it."""
        if self._socket is None:
            raise RuntimeError("this GatewayServer has served already")
        fd, self._socket = self._socket.detach(), None
        loop = asyncio.get_running_loop()
        signals = (signal.SIGINT, signal.SIGTERM) if handle_signals else ()
        for signum in signals:
            loop.add_signal_handler(signum, self._on_signal, signum)
        try:
            await serve(self.app, hypercorn_config(self.settings, fd), shutdown_trigger=self._stopping)
        finally:
            for signum in signals:
                loop.remove_signal_handler(signum)
        log.info("gateway stopped")

    async def _stopping(self) -> None:
        await self._stop.wait()
        draining(self.app).set()

    def _on_signal(self, signum: int) -> None:
        log.info(
            "gateway stopping on %s: finishing requests in flight (up to %.1fs)",
            signal.Signals(signum).name,
            self.settings.gateway.shutdown_grace_seconds,
        )
        self._stop.set()
