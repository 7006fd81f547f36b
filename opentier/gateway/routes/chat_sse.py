"""``/v1/chat/stream``: a chat turn as server-sent events, resumable with ``Last-Event-ID``; scope ``chat``.

``POST /v1/chat/stream`` starts a turn (body: :class:`~opentier.gateway.chat.start.ChatStartRequest`)
and answers ``text/event-stream``; problems found before ``started`` are ordinary JSON errors. Each
event is ``id: <seq>``, ``event: <type>``, ``data: <the event's JSON>``; an idle stream gets a comment
(``: heartbeat``) every ``streaming.heartbeat_seconds``. The turn runs in the gateway apart from the
response (:mod:`opentier.gateway.chat.replay`): a client that lost its connection resumes with
``GET /v1/chat/stream/{stream_id}`` and ``Last-Event-ID``, within ``streaming.resume_window_seconds``.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, ClassVar

from pydantic import BaseModel, Field, RootModel
from quart import Blueprint, Quart, Response, request
from quart.blueprints import BlueprintSetupState
from quart_schema import document_headers, document_response, tag, validate_request, validate_response

from opentier.errors import HostUnavailableError, InvalidRequestError
from opentier.gateway.chat.events import TurnEvent
from opentier.gateway.chat.replay import STREAMS_KEY, EventsExpiredError, LiveStream, SSEStreams
from opentier.gateway.chat.start import ChatStartRequest
from opentier.gateway.chat.turn import ChatTurn
from opentier.gateway.errors import documented_errors
from opentier.gateway.limits.quotas import TokenQuotas
from opentier.gateway.observability.metrics import GatewayMetrics
from opentier.gateway.principal import current_principal, require
from opentier.gateway.routes.context import caller, host_client
from opentier.gateway.state import gateway_state

blueprint = Blueprint("chat_sse", __name__, url_prefix="/v1/chat/stream")
TAGS = ["Chat"]
#: Response header naming the stream (also ``stream_id`` in the ``started`` event).
STREAM_ID_HEADER = "OpenTier-Stream-Id"
HEARTBEAT = b": heartbeat\n\n"
#: Sent before the response ends when its reader fell further behind than the stream keeps.
TOO_SLOW = b": this reader fell behind what the stream keeps; its missed events are gone\n\n"


def blueprints() -> list[Blueprint]:
    return [blueprint]


@blueprint.record_once
def _install(setup: BlueprintSetupState) -> None:
    app = setup.app
    assert isinstance(app, Quart)
    install_streams(app)


def install_streams(app: Quart) -> SSEStreams:
    """The app's registry of SSE streams; its turns are cancelled when the app stops serving."""
    state = gateway_state(app)
    found = state.extras.get(STREAMS_KEY)
    if isinstance(found, SSEStreams):
        return found
    streams = SSEStreams(state.settings.streaming)
    state.extras[STREAMS_KEY] = streams

    @app.while_serving
    async def _close_streams() -> AsyncGenerator[None, None]:
        yield
        await streams.close()

    return streams


class EventStream(RootModel[str]):
    """`text/event-stream`: for each event `id: <seq>`, `event: <type>` and `data: <the event as JSON>`
    (`started`, `retrieval`, `citation`, `token`, `usage`, `quota`, `error`, `done`; see
    docs/streaming.md); `: heartbeat` comments while idle. The `OpenTier-Stream-Id` header names the
    stream."""

    openapi_media_types: ClassVar[dict[str, dict[str, Any] | None]] = {
        "text/event-stream": {"description": "Server-sent events, one per turn event, `id` = `seq`."}
    }


class ResumeHeaders(BaseModel):
    last_event_id: int | None = Field(
        default=None, ge=0, description="The `id` of the last event received; the stream resumes after it."
    )


class StreamCancelled(BaseModel):
    """The turn is asked to stop; the stream still ends with `usage` and `done` (status `cancelled`)."""

    stream_id: str
    ended: bool = Field(description="Whether the turn had already ended (nothing to cancel).")


@blueprint.post("")
@require("chat")
@tag(TAGS)
@documented_errors(400, 401, 403, 404, 413, 429, 500, 503)
@document_response(EventStream, 200)
@validate_request(ChatStartRequest)
async def start_stream(data: ChatStartRequest) -> Response:
    """Start a chat turn and stream its events (scope `chat`).

    Errors found before the turn starts (unknown conversation or collection, quota used up, host down)
    are JSON errors with their status. Once `started` is sent the turn runs to `done` even if the client
    goes away: resume with `GET /v1/chat/stream/{stream_id}` and `Last-Event-ID` within
    `streaming.resume_window_seconds`, after which an unread turn is cancelled.
    """
    streams = _streams()
    if streams.closing:
        raise HostUnavailableError(
            "the gateway is shutting down; start the turn again",
            retry_after=gateway_state().settings.gateway.retry_after_seconds,
        )
    principal = current_principal()
    streams.make_room(principal)  # refuse before the turn starts
    turn = start_turn(data)
    events = turn.events()
    started = await anext(events)  # an OpenTierError here is still a JSON answer with its status
    try:
        stream = streams.open(principal, turn, started, events)
    except BaseException:
        await close_events(events)  # cancels the host's turn
        raise
    return _event_stream(streams, stream, after=0)


@blueprint.get("/<stream_id>")
@require("chat")
@tag(TAGS)
@documented_errors(400, 401, 403, 404, 500)
@document_headers(ResumeHeaders)
@document_response(EventStream, 200)
async def resume_stream(stream_id: str) -> Response:
    """Resume a stream of yours after a lost connection (scope `chat`).

    Sends the kept events with an `id` above the `Last-Event-ID` header (all kept events without it),
    then the rest as they come. Another user's stream, an unknown one and one whose resume window has
    passed are 404 `not_found`; events no longer kept are 404 `stream_events_expired`.
    """
    streams = _streams()
    stream = streams.get(current_principal(), stream_id)
    after = _last_event_id()
    stream.buffer.check(after)
    return _event_stream(streams, stream, after=after)


@blueprint.post("/<stream_id>/cancel")
@require("chat")
@tag(TAGS)
@documented_errors(401, 403, 404, 500)
@validate_response(StreamCancelled, 202)
async def cancel_stream(stream_id: str) -> tuple[StreamCancelled, int]:
    """Stop a stream's turn (scope `chat`): the partial answer is stored as cancelled, and the stream
    ends with `usage` and `done` (status `cancelled`)."""
    streams = _streams()
    stream = streams.get(current_principal(), stream_id)
    ended = stream.ended
    await streams.cancel(stream, "the client cancelled")
    return StreamCancelled(stream_id=stream.id, ended=ended), 202


def start_turn(start: ChatStartRequest) -> ChatTurn:
    """A turn for the caller of the current request, with its token quotas and the turn deadline."""
    state = gateway_state()
    quotas = state.extras.get("quotas")
    return ChatTurn(
        host_client(),
        current_principal(),
        caller(),
        start,
        quotas=quotas if isinstance(quotas, TokenQuotas) else None,
        deadline_seconds=state.settings.streaming.turn_deadline_seconds,
    )


async def close_events(events: AsyncIterator[TurnEvent]) -> None:
    """Close a turn's events: an unfinished turn's gRPC call is cancelled (the host stops the LLM and
    stores the partial answer)."""
    close = getattr(events, "aclose", None)
    if close is not None:
        with contextlib.suppress(Exception):
            await close()


def stream_metrics() -> GatewayMetrics | None:
    """The app's metrics (None when ``gateway.metrics`` is off)."""
    seen = gateway_state().extras.get("observability")
    metrics = getattr(seen, "metrics", None)
    return metrics if isinstance(metrics, GatewayMetrics) else None


def sse_frame(wire: dict[str, Any]) -> bytes:
    """One event as a server-sent event (``id``, ``event``, one ``data`` line)."""
    data = json.dumps(wire, separators=(",", ":"))
    return f"id: {wire['seq']}\nevent: {wire['type']}\ndata: {data}\n\n".encode()


def _streams() -> SSEStreams:
    found = gateway_state().extras.get(STREAMS_KEY)
    if not isinstance(found, SSEStreams):
        raise RuntimeError("the SSE streams are not installed on this app")
    return found


def _last_event_id() -> int:
    raw = request.headers.get("Last-Event-ID", "").strip()
    if not raw:
        return 0
    try:
        return int(raw)
    except ValueError:
        raise InvalidRequestError(f"Last-Event-ID must be the id of an event, not {raw[:40]!r}") from None


def _event_stream(streams: SSEStreams, stream: LiveStream, *, after: int) -> Response:
    metrics = stream_metrics()

    async def body() -> AsyncIterator[bytes]:
        began = time.monotonic()
        try:
            async for item in streams.follow(stream, after):
                yield HEARTBEAT if item is None else sse_frame(item)
        except EventsExpiredError:
            yield TOO_SLOW
        finally:
            if metrics is not None:
                metrics.stream_duration.labels("sse").observe(time.monotonic() - began)

    response = Response(body(), status=200, content_type="text/event-stream; charset=utf-8")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"  # proxies such as nginx must not hold events back
    response.headers[STREAM_ID_HEADER] = stream.id
    response.timeout = None  # the turn's deadline bounds the stream, not Quart's response timeout
    return response
