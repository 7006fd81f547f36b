"""ConversationService: a caller's stored chats, through :class:`~opentier.engine.chat.Conversations`.

Also the proto conversions of conversations, messages and citations, which the chat servicer shares.
A caller with a ``user_id`` sees their own conversations; a caller without one (the tenant itself)
sees all of the tenant's.
"""

from __future__ import annotations

import grpc.aio

from opentier.db.models.intelligence import MessageRole, MessageStatus
from opentier.engine.chat import Chat, ConversationInfo, MessageInfo, Owner
from opentier.engine.chat.events import FinishReason, Timings
from opentier.engine.chat.sources import NumberedSource
from opentier.generated.intelligence.v1 import common_pb2, conversations_pb2, conversations_pb2_grpc
from opentier.host.servicers.convert import dict_of, error, struct_of, tenant_of, timestamp, user_of

ROLE: dict[str, conversations_pb2.MessageRole.ValueType] = {
    MessageRole.USER: conversations_pb2.MESSAGE_ROLE_USER,
    MessageRole.ASSISTANT: conversations_pb2.MESSAGE_ROLE_ASSISTANT,
    MessageRole.SYSTEM: conversations_pb2.MESSAGE_ROLE_SYSTEM,
}
STATUS: dict[str, conversations_pb2.MessageStatus.ValueType] = {
    MessageStatus.IN_PROGRESS: conversations_pb2.MESSAGE_STATUS_IN_PROGRESS,
    MessageStatus.COMPLETE: conversations_pb2.MESSAGE_STATUS_COMPLETE,
    MessageStatus.CANCELLED: conversations_pb2.MESSAGE_STATUS_CANCELLED,
    MessageStatus.FAILED: conversations_pb2.MESSAGE_STATUS_FAILED,
}
FINISH: dict[str, conversations_pb2.FinishReason.ValueType] = {
    FinishReason.STOP: conversations_pb2.FINISH_REASON_STOP,
    FinishReason.LENGTH: conversations_pb2.FINISH_REASON_LENGTH,
    FinishReason.CANCELLED: conversations_pb2.FINISH_REASON_CANCELLED,
    FinishReason.ERROR: conversations_pb2.FINISH_REASON_ERROR,
}


def owner_of(caller: common_pb2.Caller) -> Owner:
    return Owner(tenant_of(caller), user_of(caller))


def conversation_pb(info: ConversationInfo) -> conversations_pb2.Conversation:
    return conversations_pb2.Conversation(
        id=str(info.id),
        title=info.title,
        user_id=info.user_id or "",
        collection_ids=[str(key) for key in info.collection_ids],
        message_count=info.message_count,
        metadata=struct_of(info.metadata),
        created_at=timestamp(info.created_at),
        updated_at=timestamp(info.updated_at),
    )


def citation_pb(source: NumberedSource) -> conversations_pb2.Citation:
    span = None
    if source.char_start is not None and source.char_end is not None:
        span = common_pb2.TextSpan(char_start=source.char_start, char_end=source.char_end)
    return conversations_pb2.Citation(
        source_number=source.number,
        chunk_id=source.chunk_id,
        document_id=source.document_id,
        collection_id=source.collection_id,
        source=source.source,
        title=source.title or "",
        page=source.page,
        span=span,
        text=source.text,
        heading_path=list(source.heading_path),
        score=source.score,
    )


def timings_pb(timings: Timings) -> conversations_pb2.Timings:
    return conversations_pb2.Timings(
        time_to_first_token_ms=timings.time_to_first_token_ms, total_ms=timings.total_ms
    )


def message_pb(info: MessageInfo) -> conversations_pb2.Message:
    answer = info.role == MessageRole.ASSISTANT
    usage = None
    if answer and (info.input_tokens is not None or info.output_tokens is not None):
        usage = conversations_pb2.Usage(
            input_tokens=info.input_tokens or 0, output_tokens=info.output_tokens or 0, llm=info.llm or ""
        )
    timings = None
    if info.total_ms is not None:
        timings = timings_pb(Timings(info.time_to_first_token_ms, info.total_ms))
    return conversations_pb2.Message(
        id=str(info.id),
        conversation_id=str(info.conversation_id),
        role=ROLE.get(info.role, conversations_pb2.MESSAGE_ROLE_UNSPECIFIED),
        content=info.content,
        status=STATUS.get(info.status, conversations_pb2.MESSAGE_STATUS_UNSPECIFIED),
        citations=[citation_pb(source) for source in info.cited_sources],
        usage=usage,
        finish_reason=FINISH.get(info.finish_reason or "", conversations_pb2.FINISH_REASON_UNSPECIFIED),
        error=error(info.error_code, info.error_message) if info.status == MessageStatus.FAILED else None,
        metadata=struct_of(info.metadata),
        created_at=timestamp(info.created_at),
        sources=[citation_pb(source) for source in info.sources],
        timings=timings,
    )


class ConversationServicer(conversations_pb2_grpc.ConversationServiceServicer):
    def __init__(self, chat: Chat) -> None:
        self._chat = chat
        self._conversations = chat.conversations

    async def CreateConversation(
        self, request: conversations_pb2.CreateConversationRequest, context: grpc.aio.ServicerContext
    ) -> conversations_pb2.Conversation:
        info = await self._chat.create_conversation(
            owner_of(request.caller),
            title=request.title,
            collection_ids=list(request.collection_ids),
            metadata=dict_of(request.metadata),
        )
        return conversation_pb(info)

    async def ListConversations(
        self, request: conversations_pb2.ListConversationsRequest, context: grpc.aio.ServicerContext
    ) -> conversations_pb2.ListConversationsResponse:
        page = await self._conversations.list(
            owner_of(request.caller), request.page.page_size, request.page.page_token
        )
        return conversations_pb2.ListConversationsResponse(
            conversations=[conversation_pb(info) for info in page.items],
            page=common_pb2.PageResponse(next_page_token=page.next_token),
        )

    async def GetConversation(
        self, request: conversations_pb2.GetConversationRequest, context: grpc.aio.ServicerContext
    ) -> conversations_pb2.GetConversationResponse:
        owner = owner_of(request.caller)
        conversation = await self._conversations.get(owner, request.conversation_id)
        messages = await self._conversations.messages(owner, conversation.id)
        return conversations_pb2.GetConversationResponse(
            conversation=conversation_pb(conversation), messages=[message_pb(m) for m in messages]
        )

    async def UpdateConversation(
        self, request: conversations_pb2.UpdateConversationRequest, context: grpc.aio.ServicerContext
    ) -> conversations_pb2.Conversation:
        info = await self._conversations.update(
            owner_of(request.caller),
            request.conversation_id,
            title=request.title if request.HasField("title") else None,
            metadata=dict_of(request.metadata) if request.HasField("metadata") else None,
        )
        return conversation_pb(info)

    async def DeleteConversation(
        self, request: conversations_pb2.DeleteConversationRequest, context: grpc.aio.ServicerContext
    ) -> conversations_pb2.DeleteConversationResponse:
        deleted = await self._conversations.delete(owner_of(request.caller), request.conversation_id)
        return conversations_pb2.DeleteConversationResponse(messages_deleted=deleted)
