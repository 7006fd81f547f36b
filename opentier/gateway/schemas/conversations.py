"""Conversations: the stored history of chats, with the citations and usage of every answer."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from opentier.gateway.schemas.common import Problem, Span, dict_of, problem_of, time_of
from opentier.generated.intelligence.v1 import conversations_pb2

Role = Literal["user", "assistant", "system"]
MessageStatus = Literal["in_progress", "complete", "cancelled", "failed"]
FinishReason = Literal["stop", "length", "cancelled", "error", "content_filter"]

_ROLE: dict[int, Role] = {
    conversations_pb2.MESSAGE_ROLE_USER: "user",
    conversations_pb2.MESSAGE_ROLE_ASSISTANT: "assistant",
    conversations_pb2.MESSAGE_ROLE_SYSTEM: "system",
}
_STATUS: dict[int, MessageStatus] = {
    conversations_pb2.MESSAGE_STATUS_IN_PROGRESS: "in_progress",
    conversations_pb2.MESSAGE_STATUS_COMPLETE: "complete",
    conversations_pb2.MESSAGE_STATUS_CANCELLED: "cancelled",
    conversations_pb2.MESSAGE_STATUS_FAILED: "failed",
}
_FINISH: dict[int, FinishReason] = {
    conversations_pb2.FINISH_REASON_STOP: "stop",
    conversations_pb2.FINISH_REASON_LENGTH: "length",
    conversations_pb2.FINISH_REASON_CANCELLED: "cancelled",
    conversations_pb2.FINISH_REASON_ERROR: "error",
    conversations_pb2.FINISH_REASON_CONTENT_FILTER: "content_filter",
}


class Conversation(BaseModel):
    id: str
    title: str
    user_id: str = Field(description="The user that owns it.")
    collection_ids: list[str] = Field(description="Collections searched when a turn names none.")
    message_count: int
    metadata: dict[str, Any]
    created_at: datetime | None
    updated_at: datetime | None = Field(description="Time of the latest message.")

    @classmethod
    def from_pb(cls, message: conversations_pb2.Conversation) -> Conversation:
        return cls(
            id=message.id,
            title=message.title,
            user_id=message.user_id,
            collection_ids=list(message.collection_ids),
            message_count=message.message_count,
            metadata=dict_of(message.metadata),
            created_at=time_of(message, "created_at"),
            updated_at=time_of(message, "updated_at"),
        )


class Citation(BaseModel):
    """Source `[n]` of an answer: the chunk given to the model, and where it comes from."""

    source_number: int
    chunk_id: str
    document_id: str
    collection_id: str
    source: str
    title: str
    page: int | None
    span: Span | None
    text: str
    heading_path: list[str]
    score: float

    @classmethod
    def from_pb(cls, citation: conversations_pb2.Citation) -> Citation:
        return cls(
            source_number=citation.source_number,
            chunk_id=citation.chunk_id,
            document_id=citation.document_id,
            collection_id=citation.collection_id,
            source=citation.source,
            title=citation.title,
            page=citation.page if citation.HasField("page") else None,
            span=Span.from_pb(citation.span) if citation.HasField("span") else None,
            text=citation.text,
            heading_path=list(citation.heading_path),
            score=citation.score,
        )


class Usage(BaseModel):
    input_tokens: int
    output_tokens: int
    llm: str
    model: str


class Timings(BaseModel):
    time_to_first_token_ms: int | None
    total_ms: int


class Message(BaseModel):
    id: str
    role: Role | None
    content: str
    status: MessageStatus | None = Field(
        description="`cancelled` and `failed` answers keep their partial text."
    )
    citations: list[Citation] = Field(description="The sources the answer cites.")
    sources: list[Citation] = Field(description="Every source given to the model.")
    usage: Usage | None
    finish_reason: FinishReason | None
    error: Problem | None
    metadata: dict[str, Any]
    created_at: datetime | None
    timings: Timings | None

    @classmethod
    def from_pb(cls, message: conversations_pb2.Message) -> Message:
        usage = message.usage if message.HasField("usage") else None
        timings = message.timings if message.HasField("timings") else None
        return cls(
            id=message.id,
            role=_ROLE.get(message.role),
            content=message.content,
            status=_STATUS.get(message.status),
            citations=[Citation.from_pb(item) for item in message.citations],
            sources=[Citation.from_pb(item) for item in message.sources],
            usage=Usage(
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                llm=usage.llm,
                model=usage.model,
            )
            if usage is not None
            else None,
            finish_reason=_FINISH.get(message.finish_reason),
            error=problem_of(message),
            metadata=dict_of(message.metadata),
            created_at=time_of(message, "created_at"),
            timings=Timings(
                time_to_first_token_ms=timings.time_to_first_token_ms
                if timings.HasField("time_to_first_token_ms")
                else None,
                total_ms=timings.total_ms,
            )
            if timings is not None
            else None,
        )


class ConversationList(BaseModel):
    conversations: list[Conversation] = Field(description="Your conversations, most recently updated first.")
    next_page_token: str | None = Field(
        description="Pass as `page_token` for the next page; null on the last."
    )


class ConversationWithMessages(BaseModel):
    conversation: Conversation
    messages: list[Message] = Field(description="Oldest first.")

    @classmethod
    def from_pb(cls, response: conversations_pb2.GetConversationResponse) -> ConversationWithMessages:
        return cls(
            conversation=Conversation.from_pb(response.conversation),
            messages=[Message.from_pb(item) for item in response.messages],
        )


class ConversationDeleted(BaseModel):
    messages_deleted: int
