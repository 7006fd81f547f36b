"""The events of a chat turn, typed: what :meth:`AsyncClient.chat` yields, on either transport.

A turn is ``started → retrieval? → (citation | token)* → usage → quota? → error? → done`` (see
docs/streaming.md). Each event has its ``seq`` (its number in the stream) and the fields of its type::

    async for event in client.chat("How do flaps work?", collection_ids=[manuals.id]):
        match event:
            case TokenEvent(text=text):
                print(text, end="")
            case CitationEvent(source_number=n, source=source):
                print(f"\\n[{n}] {source}")
            case DoneEvent(status=status):
                print(f"\\n({status})")

An event type this client does not know yet arrives as :class:`UnknownEvent`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter, ValidationError

from opentier.client.errors import ProtocolError
from opentier.client.models import Citation, Model, Timings, Usage


class Event(Model):
    """Base of the turn events."""

    type: str
    seq: int


class StartedEvent(Event):
    """The question is stored; always first."""

    type: Literal["started"] = "started"
    conversation_id: str
    conversation_created: bool = False
    user_message_id: str = ""
    assistant_message_id: str = ""
    llm: str = ""
    retriever: str | None = None
    #: The SSE stream's id (SSE only): resume it with ``GET /v1/chat/stream/{stream_id}``.
    stream_id: str | None = None


class RetrievalEvent(Event):
    """Retrieval ran: what was searched and how many sources the model got."""

    type: Literal["retrieval"] = "retrieval"
    query: str = ""
    source_count: int = 0


class CitationEvent(Event, Citation):
    """The answer cites source ``[source_number]``; sent once per source."""

    type: Literal["citation"] = "citation"

    def citation(self) -> Citation:
        """The cited source without the event's ``type`` and ``seq``."""
        return Citation.model_validate(self.model_dump(exclude={"type", "seq"}))


class TokenEvent(Event):
    """The next piece of the answer."""

    type: Literal["token"] = "token"
    text: str


class UsageEvent(Event, Usage):
    """The tokens the turn used, as the host counted them."""

    type: Literal["usage"] = "usage"


class QuotaEvent(Event):
    """Your token quota ended the turn (it was cancelled)."""

    type: Literal["quota"] = "quota"
    scope: str
    period: str
    limit: int
    used: int
    resets_at: str


class ErrorEvent(Event):
    """The turn failed after it started; ``done`` (status ``failed``) follows."""

    type: Literal["error"] = "error"
    code: str
    message: str
    retryable: bool = False
    retry_after: float | None = None


class DoneEvent(Event):
    """Always last: the stored answer's id and how the turn ended."""

    type: Literal["done"] = "done"
    message_id: str = ""
    conversation_id: str = ""
    status: Literal["complete", "cancelled", "failed"]
    finish_reason: str | None = None
    timings: Timings | None = None


class UnknownEvent(Event):
    """An event type this client does not know; its fields are in ``model_extra``."""


KnownEvent = Annotated[
    StartedEvent
    | RetrievalEvent
    | CitationEvent
    | TokenEvent
    | UsageEvent
    | QuotaEvent
    | ErrorEvent
    | DoneEvent,
    Field(discriminator="type"),
]
ChatEvent = (
    StartedEvent
    | RetrievalEvent
    | CitationEvent
    | TokenEvent
    | UsageEvent
    | QuotaEvent
    | ErrorEvent
    | DoneEvent
    | UnknownEvent
)

_KNOWN: TypeAdapter[KnownEvent] = TypeAdapter(KnownEvent)
_TYPES = frozenset({"started", "retrieval", "citation", "token", "usage", "quota", "error", "done"})


def parse_event(data: dict[str, Any]) -> ChatEvent:
    """The typed event of one decoded message that has a ``seq``."""
    try:
        if data.get("type") in _TYPES:
            event: ChatEvent = _KNOWN.validate_python(data)
            return event
        return UnknownEvent.model_validate(data)
    except ValidationError as err:
        raise ProtocolError(f"the gateway sent a malformed {data.get('type')!r} event: {err}") from None
