"""One id per request: honoured from ``X-Request-ID`` when sane, else generated.

The id is in the response header, in every JSON error body and in every log record written while the
request runs (the log setup reads :func:`current_request_id`), so a user's report can be matched with
the logs. It is also what the gateway sends to the host as the caller's request id.
"""

from __future__ import annotations

import re
import uuid
from contextvars import ContextVar

from quart import Quart, Response, g, has_request_context, has_websocket_context, request, websocket

REQUEST_ID_HEADER = "X-Request-ID"
#: A client's id is kept when it is short and made of harmless characters (no log or header injection).
_SANE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_current: ContextVar[str | None] = ContextVar("opentier_request_id", default=None)


def new_request_id() -> str:
    """A fresh random id (32 hex digits)."""
    return uuid.uuid4().hex


def accept_request_id(value: str | None) -> str:
    """``value`` when it is a sane id, otherwise a fresh one."""
    if value is not None and _SANE.match(value):
        return value
    return new_request_id()


def current_request_id() -> str | None:
    """The id of the request (or WebSocket) being handled; ``None`` outside one."""
    if has_request_context() or has_websocket_context():
        found = getattr(g, "request_id", None)
        if isinstance(found, str):
            return found
    return _current.get()


def install(app: Quart) -> None:
    """Give every request and WebSocket of ``app`` an id, and echo it in the response header."""

    @app.before_request
    async def _assign() -> None:
        _bind(accept_request_id(request.headers.get(REQUEST_ID_HEADER)))

    @app.before_websocket
    async def _assign_websocket() -> None:
        _bind(accept_request_id(websocket.headers.get(REQUEST_ID_HEADER)))

    @app.after_request
    async def _echo(response: Response) -> Response:
        request_id = current_request_id()
        if request_id is not None:
            response.headers[REQUEST_ID_HEADER] = request_id
        return response


def _bind(request_id: str) -> None:
    g.request_id = request_id
    _current.set(request_id)
