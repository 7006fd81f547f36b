"""The OpenAI chat completions API as the gateway speaks it (``/v1/chat/completions``, ``/v1/models``).

Requests are read leniently (unknown fields are ignored, as OpenAI clients send many), answers follow
OpenAI's shapes with OpenTier's extras where clients ignore them: ``citations`` on the message (and on
the stream's deltas), ``conversation_id`` on the completion. :func:`to_start` translates a request into
the gateway's :class:`~opentier.gateway.chat.start.ChatStartRequest`: the last message is the question,
the earlier user and assistant messages become the turn's history, system (and developer) messages are
ignored because the host's system prompt rules.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from opentier.errors import InvalidRequestError
from opentier.gateway.chat.start import ChatOptions, ChatStartRequest
from opentier.gateway.schemas.conversations import Citation
from opentier.generated.intelligence.v1 import chat_pb2, conversations_pb2

#: The model that chats without documents (no retrieval).
PLAIN_MODEL = "opentier"
#: Who ``/v1/models`` says owns the models.
OWNER = "opentier"
#: Metadata key (and header) naming the conversation a completion continues.
CONVERSATION_KEY = "conversation_id"
CONVERSATION_HEADER = "OpenTier-Conversation-Id"

_HISTORY_ROLES = {
    "user": conversations_pb2.MESSAGE_ROLE_USER,
    "assistant": conversations_pb2.MESSAGE_ROLE_ASSISTANT,
}


# -- the request -----------------------------------------------------------------------------------


class ContentPart(BaseModel):
    """A part of a message's content; only ``text`` parts are understood."""

    model_config = ConfigDict(extra="ignore")

    type: str
    text: str | None = None


class InputMessage(BaseModel):
    """One message of the conversation the client sends."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None

    def text(self, index: int) -> str:
        """The message's text; parts other than text are refused (no images, audio or files)."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        pieces = []
        for part in self.content:
            if part.type != "text" or part.text is None:
                raise InvalidRequestError(
                    f"messages[{index}] has a {part.type!r} content part; only text is supported"
                )
            pieces.append(part.text)
        return "".join(pieces)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """``POST /v1/chat/completions``: OpenAI's request; ``model`` names the collection to answer from
    (its name or id) or ``opentier`` for a chat without documents."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, max_length=200, description="A collection (name or id), or `opentier`.")
    messages: list[InputMessage] = Field(
        min_length=1, max_length=10_000, description="The conversation; the last message is the question."
    )
    stream: bool = Field(default=False, description="Answer as `chat.completion.chunk` server-sent events.")
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=1_000_000, description="Deprecated by OpenAI.")
    max_completion_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    temperature: float | None = Field(default=None, ge=0, le=2)
    n: int | None = Field(default=None, ge=1, le=1, description="Only 1 choice is supported.")
    metadata: dict[str, str] | None = Field(
        default=None, description="`conversation_id` continues a stored conversation; the rest is stored."
    )
    user: str | None = Field(default=None, max_length=200, description="Ignored: the credential says who.")

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


class HistoryStart(ChatStartRequest):
    """A :class:`ChatStartRequest` that also carries the earlier messages the client kept."""

    history: list[tuple[Literal["user", "assistant"], str]] = Field(default_factory=list, exclude=True)

    def to_pb(self) -> chat_pb2.ChatStart:
        start = super().to_pb()
        start.history.extend(
            chat_pb2.HistoryMessage(role=_HISTORY_ROLES[role], content=content)
            for role, content in self.history
        )
        return start


def to_start(
    request: ChatCompletionRequest, collection_id: str | None, conversation_id: str | None
) -> HistoryStart:
    """The turn a completion request asks for (``collection_id`` resolved from its model)."""
    texts = [(message.role, message.text(index)) for index, message in enumerate(request.messages)]
    last_role, question = texts[-1]
    if last_role != "user":
        raise InvalidRequestError(
            f"the last message must be the user's question, not a {last_role!r} message"
        )
    if not question.strip():
        raise InvalidRequestError("the last message (the question) is empty")
    history: list[tuple[Literal["user", "assistant"], str]] = []
    for role, text in texts[:-1]:
        if role == "user":
            history.append(("user", text))
        elif role == "assistant":
            history.append(("assistant", text))
        # system/developer: the host's system prompt rules; tool messages have no place in a RAG turn
    options = ChatOptions(
        max_output_tokens=request.max_completion_tokens or request.max_tokens,
        temperature=request.temperature,
    )
    metadata = {k: v for k, v in (request.metadata or {}).items() if k != CONVERSATION_KEY}
    return HistoryStart(
        conversation_id=conversation_id,
        message=question,
        collection_ids=[collection_id] if collection_id else [],
        options=options,
        metadata=metadata or None,
        history=[(role, text) for role, text in history if text.strip()],
    )


# -- the answers -----------------------------------------------------------------------------------

FinishReason = Literal["stop", "length", "content_filter"]


class CompletionUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    @classmethod
    def of(cls, usage: dict[str, Any] | None) -> CompletionUsage:
        prompt = int((usage or {}).get("input_tokens", 0))
        completion = int((usage or {}).get("output_tokens", 0))
        return cls(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str
    refusal: None = None
    citations: list[Citation] = Field(
        default_factory=list, description="OpenTier: the sources the answer cites, as `[n]` in its text."
    )


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: FinishReason
    logprobs: None = None


class ChatCompletion(BaseModel):
    """A whole answer (`stream` false); with `stream` true, `text/event-stream` of
    `chat.completion.chunk` objects in `data:` lines, ending with `data: [DONE]`."""

    openapi_media_types: ClassVar[dict[str, dict[str, Any] | None]] = {
        "application/json": None,
        "text/event-stream": {
            "description": "`data: <chat.completion.chunk JSON>` events, then `data: [DONE]`."
        },
    }

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: CompletionUsage
    system_fingerprint: None = None
    conversation_id: str = Field(description="OpenTier: the stored conversation (continue it with metadata).")


class ChunkDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    citations: list[dict[str, Any]] | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: ChunkDelta
    finish_reason: FinishReason | None = None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: CompletionUsage | None = None
    system_fingerprint: None = None


class Model(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = OWNER


class ModelList(BaseModel):
    """The models the caller may name: each of their collections (by name) and `opentier`."""

    object: Literal["list"] = "list"
    data: list[Model]


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None


class OpenAIError(BaseModel):
    """OpenAI's error shape (only on the OpenAI-compatible routes)."""

    error: OpenAIErrorDetail


def error_type(status: int) -> str:
    """OpenAI's error ``type`` for an HTTP status."""
    if status == 401:
        return "authentication_error"
    if status == 403:
        return "permission_error"
    if status == 404:
        return "not_found_error"
    if status == 429:
        return "rate_limit_error"
    if status >= 500:
        return "server_error"
    return "invalid_request_error"
