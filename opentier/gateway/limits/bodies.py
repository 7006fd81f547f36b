"""Request body limits per route: uploads up to ``gateway.max_upload_bytes`` (read as they stream, see
:mod:`opentier.gateway.uploads`), every other body up to ``gateway.max_json_bytes``.

A body is refused with 413 on its declared ``Content-Length`` before it is read; a body sent without
one (chunked) is refused as soon as what arrived passes the route's limit. The app-wide
``MAX_CONTENT_LENGTH`` is the upload bound; each request lowers its own body's limit once its route is
known, which covers what arrived before that too.
"""

from __future__ import annotations

from quart import Quart, request
from quart.wrappers import Body, Request
from werkzeug.exceptions import RequestEntityTooLarge

from opentier.config import GatewaySettings
from opentier.gateway.uploads import ENVELOPE_LIMIT

#: Endpoints that read their body as a stream with a limit of their own (``gateway.max_upload_bytes``).
STREAMED_BODY_ENDPOINTS = frozenset({"documents.upload_document"})


class LimitedBody(Body):
    """A request body whose limit can be lowered after the request started arriving."""

    too_large_message: str | None = None

    def limit(self, max_bytes: int, message: str) -> None:
        """Refuse (413, ``message``) the body once more than ``max_bytes`` of it were received."""
        self.too_large_message = message
        self._max_content_length = max_bytes
        if len(self._data) > max_bytes and self._must_raise is None:
            self._must_raise = RequestEntityTooLarge(message)
            self.set_complete()

    def append(self, data: bytes) -> None:
        super().append(data)
        if isinstance(self._must_raise, RequestEntityTooLarge) and self.too_large_message:
            self._must_raise = RequestEntityTooLarge(self.too_large_message)


class LimitedRequest(Request):
    body_class = LimitedBody


def install(app: Quart, gateway: GatewaySettings) -> None:
    """Make every route of ``app`` refuse bodies over its limit with 413 ``request_too_large``."""
    app.request_class = LimitedRequest
    app.config["MAX_CONTENT_LENGTH"] = max(gateway.max_upload_bytes + ENVELOPE_LIMIT, gateway.max_json_bytes)
    message = f"the request body is larger than {gateway.max_json_bytes} bytes (gateway.max_json_bytes)"

    @app.before_request
    async def _json_limit() -> None:
        if request.endpoint in STREAMED_BODY_ENDPOINTS:
            return
        if request.content_length is not None and request.content_length > gateway.max_json_bytes:
            raise RequestEntityTooLarge(message)
        body = request.body
        if isinstance(body, LimitedBody):
            body.limit(gateway.max_json_bytes, message)
