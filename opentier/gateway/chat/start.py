"""What a client sends to start a chat turn: the ``start`` message of the WebSocket protocol and the body
of ``POST /v1/chat/stream`` (the OpenAI-compatible route builds one from its own request)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from opentier.gateway.schemas.common import struct_of
from opentier.generated.intelligence.v1 import chat_pb2


class ChatOptions(BaseModel):
    """Generation settings; an absent one means the server's default."""

    model_config = ConfigDict(extra="forbid")

    max_output_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    temperature: float | None = Field(default=None, ge=0, le=2)
    history_messages: int | None = Field(
        default=None, ge=0, le=1000, description="Earlier messages of the conversation put in the prompt."
    )
    llm_options: dict[str, Any] | None = Field(default=None, description="Passed to the LLM component.")


class ChatStartRequest(BaseModel):
    """Start one turn: a message, in a new conversation or an existing one."""

    model_config = ConfigDict(extra="forbid")

    conversation_id: str | None = Field(
        default=None, max_length=100, description="The conversation to continue; absent starts a new one."
    )
    message: str = Field(min_length=1, max_length=100_000, description="The user's message.")
    collection_ids: list[str] = Field(
        default_factory=list,
        max_length=100,
        description="Collections to answer from; empty: the conversation's (none: no retrieval).",
    )
    retriever: str | None = Field(default=None, max_length=200, description="Retriever component.")
    filters: dict[str, Any] | None = Field(default=None, description="Metadata filter (as in search).")
    llm: str | None = Field(default=None, max_length=200, description="LLM component.")
    top_k: int | None = Field(default=None, ge=1, le=1000, description="Sources to retrieve.")
    options: ChatOptions | None = None
    metadata: dict[str, Any] | None = Field(default=None, description="Stored with the user message.")

    def to_pb(self) -> chat_pb2.ChatStart:
        """The host's ``ChatStart`` for this request."""
        start = chat_pb2.ChatStart(
            conversation_id=self.conversation_id or "",
            message=self.message,
            collection_ids=self.collection_ids,
            retriever=self.retriever or "",
            llm=self.llm or "",
            top_k=self.top_k or 0,
        )
        if self.filters is not None:
            start.filters.CopyFrom(struct_of(self.filters))
        if self.metadata is not None:
            start.metadata.CopyFrom(struct_of(self.metadata))
        if self.options is not None:
            o = self.options
            if o.max_output_tokens is not None:
                start.options.max_output_tokens = o.max_output_tokens
            if o.temperature is not None:
                start.options.temperature = o.temperature
            if o.history_messages is not None:
                start.options.history_messages = o.history_messages
            if o.llm_options is not None:
                start.options.llm_options.CopyFrom(struct_of(o.llm_options))
        return start
