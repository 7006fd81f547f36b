"""The OpenAI-compatible API: ``POST /v1/chat/completions`` and ``GET /v1/models``; scope ``chat``.

Any OpenAI client (the official SDKs, LangChain, curl) can chat with a collection: ``model`` names the
collection (its name or id), or ``opentier`` for a chat without documents; the API key goes in
``Authorization: Bearer``. A completion is one chat turn relayed from the host
(:class:`~opentier.gateway.chat.turn.ChatTurn`), stored as usual in a new conversation unless
``metadata.conversation_id`` or the ``OpenTier-Conversation-Id`` header names one. The messages the
client sends before the question are the turn's history (``ChatStart.history``); system messages are
ignored. Errors on these routes use OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``,
so that the SDKs raise their own exception classes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from pydantic import BaseModel
from quart import Blueprint, Response, jsonify, request
from quart_schema import (
    RequestSchemaValidationError,
    document_response,
    tag,
    validate_request,
    validate_response,
)
from werkzeug.exceptions import HTTPException

from opentier.db.faults import database_fault
from opentier.errors import NotFoundError, OpenTierError
from opentier.gateway import rpc
from opentier.gateway.chat.events import TurnEvent
from opentier.gateway.errors import (
    DEFAULT_RETRY_AFTER_SECONDS,
    HTTP_CODES,
    RETRYABLE_STATUSES,
    STATUS_BY_CODE,
    status_for,
    validation_message,
)
from opentier.gateway.principal import require
from opentier.gateway.request_id import current_request_id, new_request_id
from opentier.gateway.routes.chat_sse import close_events, start_turn, stream_metrics
from opentier.gateway.routes.context import caller, host_client
from opentier.gateway.schemas.conversations import Citation
from opentier.gateway.schemas.openai import (
    CONVERSATION_HEADER,
    CONVERSATION_KEY,
    PLAIN_MODEL,
    AssistantMessage,
    ChatCompletion,
    ChatCompletionRequest,
    Choice,
    CompletionUsage,
    FinishReason,
    Model,
    ModelList,
    OpenAIError,
    OpenAIErrorDetail,
    error_type,
    to_start,
)
from opentier.gateway.state import gateway_state
from opentier.generated.intelligence.v1 import collections_pb2, common_pb2

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

blueprint = Blueprint("openai_compat", __name__, url_prefix="/v1")
TAGS = ["OpenAI-compatible"]
#: Collections listed per host call while resolving a model name.
PAGE_SIZE = 500
#: ``created`` of the ``opentier`` model.
STARTED_AT = int(time.time())
KEEPALIVE = b": keepalive\n\n"
DONE = b"data: [DONE]\n\n"


def blueprints() -> list[Blueprint]:
    return [blueprint]


class ModelNotFoundError(NotFoundError):
    """``model`` names no collection of the caller (nor ``opentier``)."""

    code = "model_not_found"


# -- errors in OpenAI's shape ----------------------------------------------------------------------


def openai_error(message: str, status: int, code: str, *, retry_after: float | None = None) -> Response:
    """An error response in OpenAI's shape, with ``X-Request-ID`` and, on 429/503, ``Retry-After``."""
    body = OpenAIError(error=OpenAIErrorDetail(message=message, type=error_type(status), code=code))
    response = jsonify(body.model_dump())
    response.status_code = status
    response.headers["X-Request-ID"] = current_request_id() or new_request_id()
    if status in RETRYABLE_STATUSES:
        seconds = DEFAULT_RETRY_AFTER_SECONDS if retry_after is None else retry_after
        response.headers["Retry-After"] = str(max(1, math.ceil(seconds)))
    return response


@blueprint.errorhandler(OpenTierError)
async def _opentier_error(error: OpenTierError) -> Response:
    status = status_for(error)
    if status >= 500 and status not in RETRYABLE_STATUSES:
        log.error("request failed with %s: %s", error.code, error.message)
    retry_after = getattr(error, "retry_after", None)
    return openai_error(
        error.message,
        status,
        error.code,
        retry_after=retry_after if isinstance(retry_after, (int, float)) else None,
    )


@blueprint.errorhandler(RequestSchemaValidationError)
async def _invalid(error: RequestSchemaValidationError) -> Response:
    return openai_error(validation_message(error.validation_error), 400, "invalid_request")


@blueprint.errorhandler(Exception)
async def _unexpected(error: Exception) -> Response:
    fault = database_fault(error)
    if fault is not None:
        log.warning("request failed: %s (%s)", fault.message, error.__class__.__name__)
        return await _opentier_error(fault)
    log.exception("unexpected error while handling the request")
    return openai_error("internal error; the request id identifies it in the logs", 500, "internal")


@blueprint.errorhandler(UnicodeDecodeError)
async def _undecodable(error: UnicodeDecodeError) -> Response:
    return openai_error("invalid request: the body is not valid UTF-8", 400, "invalid_request")


@blueprint.errorhandler(HTTPException)
async def _http(error: HTTPException) -> Response:
    status = error.code or 500
    code = HTTP_CODES.get(status, "internal" if status >= 500 else "invalid_request")
    return openai_error(error.description or error.name, status, code)


def documented_openai_errors(*statuses: int) -> Callable[[F], F]:
    """List :class:`OpenAIError` as the response of each status in the OpenAPI document."""

    def decorator(func: F) -> F:
        for status in statuses:
            func = document_response(OpenAIError, status)(func)
        return func

    return decorator


# -- models ----------------------------------------------------------------------------------------


async def _collections() -> list[collections_pb2.Collection]:
    """Every collection of the caller's tenant, by name."""
    found: list[collections_pb2.Collection] = []
    token = ""
    while True:
        page = common_pb2.PageRequest(page_size=PAGE_SIZE, page_token=token)
        response = await host_client().unary(
            rpc.LIST_COLLECTIONS, collections_pb2.ListCollectionsRequest(page=page), caller()
        )
        found.extend(response.collections)
        token = response.page.next_page_token
        if not token:
            return found


def _model_id(collection: collections_pb2.Collection) -> str:
    # A collection named like the plain model is listed by its id, which names it just as well.
    return collection.id if collection.name == PLAIN_MODEL else collection.name


def _model(collection: collections_pb2.Collection) -> Model:
    created = collection.created_at.seconds if collection.HasField("created_at") else STARTED_AT
    return Model(id=_model_id(collection), created=created)


async def resolve_model(model: str) -> str | None:
    """The id of the collection ``model`` names (None: ``opentier``, no documents)."""
    if model == PLAIN_MODEL:
        return None
    if _is_uuid(model):
        with contextlib.suppress(NotFoundError):
            collection = await host_client().unary(
                rpc.GET_COLLECTION, collections_pb2.GetCollectionRequest(collection_id=model), caller()
            )
            return collection.id
    for collection in await _collections():
        if collection.name == model:
            return collection.id
    raise ModelNotFoundError(
        f"the model {model!r} does not exist: name one of your collections (by name or id), or "
        f"{PLAIN_MODEL!r} to chat without documents; GET /v1/models lists them"
    )


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


@blueprint.get("/models")
@require("chat")
@tag(TAGS)
@documented_openai_errors(401, 403, 429, 500, 503)
@validate_response(ModelList)
async def list_models() -> ModelList:
    """The models you can chat with (scope `chat`): each of your collections (by name) and `opentier`
    (no documents)."""
    models = [Model(id=PLAIN_MODEL, created=STARTED_AT)]
    models += [_model(collection) for collection in await _collections()]
    return ModelList(data=models)


@blueprint.get("/models/<path:model>")
@require("chat")
@tag(TAGS)
@documented_openai_errors(401, 403, 404, 429, 500, 503)
@validate_response(Model)
async def get_model(model: str) -> Model:
    """One model (scope `chat`): a collection by name or id, or `opentier`."""
    collection_id = await resolve_model(model)
    if collection_id is None:
        return Model(id=PLAIN_MODEL, created=STARTED_AT)
    collection = await host_client().unary(
        rpc.GET_COLLECTION, collections_pb2.GetCollectionRequest(collection_id=collection_id), caller()
    )
    return _model(collection)


# -- chat completions ------------------------------------------------------------------------------


@blueprint.post("/chat/completions")
@require("chat")
@tag(TAGS)
@documented_openai_errors(400, 401, 403, 404, 413, 429, 500, 502, 503, 504)
@document_response(ChatCompletion, 200)
@validate_request(ChatCompletionRequest)
async def chat_completions(data: ChatCompletionRequest) -> Response:
    """Answer the last message from the collection `model` names, OpenAI-style (scope `chat`).

    `stream: true` answers `text/event-stream` of `chat.completion.chunk` objects ending with
    `data: [DONE]` (with `stream_options.include_usage`, a last chunk carries the usage). The earlier
    messages are the turn's history; system messages are ignored (the host's system prompt rules).
    The answer is stored in a new conversation, or in the one `metadata.conversation_id` (or the
    `OpenTier-Conversation-Id` header) names; its id is in the `OpenTier-Conversation-Id` response
    header. Citations come as an extra `citations` field of the message (and of the deltas).
    """
    collection_id = await resolve_model(data.model)
    conversation_id = (data.metadata or {}).get(CONVERSATION_KEY) or request.headers.get(CONVERSATION_HEADER)
    turn = start_turn(to_start(data, collection_id, conversation_id or None))
    events = turn.events()
    started = await anext(events)  # an OpenTierError here is answered in OpenAI's shape
    completion = _Completion(data, started)
    if data.stream:
        return completion.streamed(events)
    try:
        async for event in events:
            completion.take(event)
    finally:
        await close_events(events)
    return completion.whole()


class _Completion:
    """One completion being answered from a turn's events."""

    def __init__(self, data: ChatCompletionRequest, started: TurnEvent) -> None:
        self.model = data.model
        self.include_usage = data.include_usage
        self.id = f"chatcmpl-{started.data.get('assistant_message_id') or uuid.uuid4().hex}"
        self.conversation_id = str(started.data.get("conversation_id") or "")
        self.created = int(time.time())
        self.text: list[str] = []
        self.citations: list[dict[str, Any]] = []
        self.usage: dict[str, Any] | None = None
        self.error: dict[str, Any] | None = None
        self.quota = False
        self.finish_reason: FinishReason = "stop"
        self.heartbeat = gateway_state().settings.streaming.heartbeat_seconds

    def take(self, event: TurnEvent) -> None:
        """Keep what the completion needs of ``event``."""
        if event.type == "token":
            self.text.append(str(event.data.get("text", "")))
        elif event.type == "citation":
            self.citations.append(event.data)
        elif event.type == "usage":
            self.usage = event.data
        elif event.type == "quota":
            self.quota = True
        elif event.type == "error" and self.error is None:
            self.error = event.data
        elif event.type == "done":
            reason = event.data.get("finish_reason")
            if reason == "length" or self.quota:
                self.finish_reason = "length"  # a token quota cuts the answer short too
            elif reason == "content_filter":
                self.finish_reason = "content_filter"

    def _failure(self) -> Response:
        assert self.error is not None
        code = str(self.error.get("code") or "internal")
        status = STATUS_BY_CODE.get(code, 500)
        return openai_error(str(self.error.get("message") or "the answer failed"), status, code)

    def whole(self) -> Response:
        if self.error is not None:
            return self._failure()
        completion = ChatCompletion(
            id=self.id,
            created=self.created,
            model=self.model,
            choices=[
                Choice(
                    message=AssistantMessage(
                        content="".join(self.text),
                        citations=[Citation.model_validate(c) for c in self.citations],
                    ),
                    finish_reason=self.finish_reason,
                )
            ],
            usage=CompletionUsage.of(self.usage),
            conversation_id=self.conversation_id,
        )
        response = jsonify(completion.model_dump(mode="json"))
        response.headers[CONVERSATION_HEADER] = self.conversation_id
        return response

    def streamed(self, events: AsyncIterator[TurnEvent]) -> Response:
        metrics = stream_metrics()

        async def body() -> AsyncIterator[bytes]:
            began = time.monotonic()
            try:
                yield self._chunk({"role": "assistant", "content": ""})
                async for event in _with_keepalives(events, self.heartbeat):
                    if event is None:
                        yield KEEPALIVE
                        continue
                    self.take(event)
                    if event.type == "token":
                        yield self._chunk({"content": event.data.get("text", "")})
                    elif event.type == "citation":
                        yield self._chunk({"citations": [event.data]})
                    elif event.type == "error":
                        assert self.error is not None
                        yield self._data(
                            {
                                "error": OpenAIErrorDetail(
                                    message=str(self.error.get("message") or "the answer failed"),
                                    type=error_type(STATUS_BY_CODE.get(str(self.error.get("code")), 500)),
                                    code=str(self.error.get("code") or "internal"),
                                ).model_dump()
                            }
                        )
                    elif event.type == "done":
                        if self.error is None:
                            yield self._chunk({}, finish_reason=self.finish_reason)
                            if self.include_usage:
                                yield self._data(self._frame([], usage=CompletionUsage.of(self.usage)))
                        break
                yield DONE
            finally:
                await close_events(events)
                if metrics is not None:
                    metrics.stream_duration.labels("openai").observe(time.monotonic() - began)

        response = Response(body(), status=200, content_type="text/event-stream; charset=utf-8")
        response.headers["Cache-Control"] = "no-cache"
        response.headers["X-Accel-Buffering"] = "no"
        response.headers[CONVERSATION_HEADER] = self.conversation_id
        response.timeout = None  # the turn's deadline bounds the stream
        return response

    def _frame(self, choices: list[dict[str, Any]], usage: BaseModel | None = None) -> dict[str, Any]:
        frame: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": choices,
        }
        if self.include_usage:
            frame["usage"] = usage.model_dump() if usage is not None else None
        return frame

    def _chunk(self, delta: dict[str, Any], *, finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
        return self._data(self._frame([choice]))

    @staticmethod
    def _data(payload: dict[str, Any]) -> bytes:
        return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()


async def _with_keepalives(
    events: AsyncIterator[TurnEvent], seconds: float
) -> AsyncIterator[TurnEvent | None]:
    """``events``, with ``None`` after each ``seconds`` without one. The pending read is never cancelled
    by a timeout (that would end the turn), only when the consumer stops."""
    iterator = aiter(events)
    pending: asyncio.Future[TurnEvent] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(iterator))
            done, _ = await asyncio.wait({pending}, timeout=seconds)
            if not done:
                yield None
                continue
            try:
                event = pending.result()
            except StopAsyncIteration:
                return
            pending = None
            yield event
    finally:
        if pending is not None and not pending.done():
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration, Exception):
                await pending
