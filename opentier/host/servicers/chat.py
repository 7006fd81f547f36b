"""ChatService: one chat turn per call, streamed, through :class:`~opentier.engine.chat.Chat`.

The call's first message starts the turn, once it has one of the places of
``chat.max_concurrent_turns``: until then it waits in arrival order, at most until its deadline
(``host_busy`` after that, or at once when ``chat.max_queued_turns`` wait already). Meanwhile a reader
task watches the client's side: a ``cancel`` message stops the turn (the partial answer is stored,
``done`` says CANCELLED), and ends its wait in the queue; a half-close changes nothing. When the
client goes away, gRPC cancels this handler: a waiting turn leaves the queue, a running one has its
events closed, which stops the model and stores the partial answer, shielded from that cancellation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Literal

import grpc.aio

from opentier.components import ChatMessage
from opentier.engine.chat import Chat, Turn, TurnRequest
from opentier.engine.chat.events import (
    ChatEvent,
    Citation,
    Failure,
    Finished,
    Retrieved,
    Started,
    Token,
    UsageReport,
)
from opentier.errors import InvalidRequestError
from opentier.generated.intelligence.v1 import chat_pb2, chat_pb2_grpc, common_pb2, conversations_pb2
from opentier.host.errors import error_info
from opentier.host.servicers.conversations import FINISH, STATUS, citation_pb, timings_pb
from opentier.host.servicers.convert import dict_of, tenant_of, user_of

log = logging.getLogger(__name__)

#: Kept of the caller's own deadline, so that the error and ``done`` still reach it in time.
DEADLINE_MARGIN_SECONDS = 1.0


class ChatServicer(chat_pb2_grpc.ChatServiceServicer):
    def __init__(self, chat: Chat) -> None:
        self._chat = chat

    # Writes through context.write rather than yielding: when the client goes away, the cancellation
    # lands in this coroutine and the turn's events are closed here, deterministically.
    async def Chat(  # type: ignore[override]
        self, request_iterator: AsyncIterator[chat_pb2.ChatRequest], context: grpc.aio.ServicerContext
    ) -> None:
        loop = asyncio.get_running_loop()
        arrived = loop.time()
        first = await anext(aiter(request_iterator), None)
        if first is None or first.WhichOneof("action") != "start":
            raise InvalidRequestError("the first message of a Chat call must be `start`")
        request = turn_request(first.start, first.caller)
        limit = self._chat.time_limit(_deadline(context))
        cancel = _CancelRequest()
        reader = asyncio.ensure_future(_watch(request_iterator, cancel))
        try:
            async with self._chat.admission.place(
                limit - (loop.time() - arrived), unless=cancel.requested
            ) as waited:
                turn = await self._chat.start(request, deadline_seconds=limit, began=arrived)
                if waited >= 1.0:
                    log.info("chat turn %s waited %.1f s for a place", turn.message_id, waited)
                cancel.attach(turn)
                try:
                    sequence = 0
                    async with contextlib.aclosing(turn.events()) as events:
                        async for event in events:
                            sequence += 1
                            await context.write(event_pb(event, sequence))
                finally:
                    await _stop(reader)
                    await turn.abandon()
        finally:
            await _stop(reader)


class _CancelRequest:
    """The client's ``cancel``: it ends the wait for a place and cancels the turn once there is one."""

    def __init__(self) -> None:
        self.requested = asyncio.Event()
        self.reason = ""
        self._turn: Turn | None = None

    def __call__(self, reason: str) -> None:
        self.reason = reason
        self.requested.set()
        if self._turn is not None:
            self._turn.cancel(reason)

    def attach(self, turn: Turn) -> None:
        self._turn = turn
        if self.requested.is_set():
            turn.cancel(self.reason)


async def _watch(requests: AsyncIterator[chat_pb2.ChatRequest], cancel: _CancelRequest) -> None:
    """Call ``cancel`` when the client sends ``cancel``; anything else after ``start`` is ignored."""
    async for message in requests:
        action = message.WhichOneof("action")
        if action == "cancel":
            cancel(message.cancel.reason or "the client cancelled")
            return
        log.warning("chat call: ignoring a %r message after start", action)


async def _stop(reader: asyncio.Future[None]) -> None:
    reader.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await reader


def _deadline(context: grpc.aio.ServicerContext) -> float | None:
    remaining = context.time_remaining()
    if remaining is None:
        return None
    return max(0.1, float(remaining) - min(DEADLINE_MARGIN_SECONDS, float(remaining) * 0.1))


def turn_request(start: chat_pb2.ChatStart, caller: common_pb2.Caller) -> TurnRequest:
    options = start.options
    return TurnRequest(
        tenant_id=tenant_of(caller),
        user_id=user_of(caller),
        message=start.message,
        conversation_id=start.conversation_id or None,
        collection_ids=list(start.collection_ids),
        retriever=start.retriever or None,
        filters=dict_of(start.filters) if start.HasField("filters") else None,
        llm=start.llm or None,
        top_k=start.top_k,
        max_output_tokens=options.max_output_tokens if options.HasField("max_output_tokens") else None,
        temperature=options.temperature if options.HasField("temperature") else None,
        history_messages=options.history_messages if options.HasField("history_messages") else None,
        llm_options=dict_of(options.llm_options) if options.HasField("llm_options") else {},
        metadata=dict_of(start.metadata) if start.HasField("metadata") else {},
        history=[_history_message(index, item) for index, item in enumerate(start.history)],
    )


_ROLES: dict[int, Literal["system", "user", "assistant"]] = {
    conversations_pb2.MESSAGE_ROLE_USER: "user",
    conversations_pb2.MESSAGE_ROLE_ASSISTANT: "assistant",
    conversations_pb2.MESSAGE_ROLE_SYSTEM: "system",
}


def _history_message(index: int, message: chat_pb2.HistoryMessage) -> ChatMessage:
    role = _ROLES.get(message.role)
    if role is None:
        raise InvalidRequestError(f"history[{index}] has no role: USER or ASSISTANT")
    return ChatMessage(role, message.content)


def event_pb(event: ChatEvent, sequence: int) -> chat_pb2.ChatEvent:
    if isinstance(event, Token):
        return chat_pb2.ChatEvent(sequence=sequence, token=chat_pb2.TokenDelta(text=event.text))
    if isinstance(event, Citation):
        return chat_pb2.ChatEvent(sequence=sequence, citation=citation_pb(event.source))
    if isinstance(event, Started):
        return chat_pb2.ChatEvent(
            sequence=sequence,
            started=chat_pb2.ChatStarted(
                conversation_id=str(event.conversation_id),
                conversation_created=event.conversation_created,
                user_message_id=str(event.user_message_id),
                assistant_message_id=str(event.assistant_message_id),
                llm=event.llm,
                retriever=event.retriever,
            ),
        )
    if isinstance(event, Retrieved):
        return chat_pb2.ChatEvent(
            sequence=sequence,
            retrieval=chat_pb2.Retrieval(query=event.query, source_count=event.source_count),
        )
    if isinstance(event, UsageReport):
        return chat_pb2.ChatEvent(
            sequence=sequence,
            usage=conversations_pb2.Usage(
                input_tokens=event.input_tokens, output_tokens=event.output_tokens, llm=event.llm
            ),
        )
    if isinstance(event, Failure):
        return chat_pb2.ChatEvent(sequence=sequence, error=error_info(event.error))
    assert isinstance(event, Finished)
    return chat_pb2.ChatEvent(
        sequence=sequence,
        done=chat_pb2.Done(
            message_id=str(event.message_id),
            conversation_id=str(event.conversation_id),
            status=STATUS[event.status],
            finish_reason=FINISH[event.finish_reason],
            timings=timings_pb(event.timings),
        ),
    )
