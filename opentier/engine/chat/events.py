"""What a chat turn produces, in order: the engine's side of the ``ChatEvent`` stream.

``Started`` comes first (the user message is stored), then ``Retrieved`` when retrieval ran, then
``Citation`` / ``Token`` pieces, then ``UsageReport``, a ``Failure`` when the turn failed, and
``Finished`` last, always. The host numbers
them (``sequence``) and turns them into protobuf messages.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum

from opentier.db.models.intelligence import MessageStatus
from opentier.engine.chat.sources import NumberedSource
from opentier.errors import OpenTierError


class FinishReason(StrEnum):
    STOP = "stop"
    LENGTH = "length"
    CANCELLED = "cancelled"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class Timings:
    #: Milliseconds from the turn's arrival to its first token; ``None`` when there was none.
    time_to_first_token_ms: int | None
    total_ms: int


@dataclass(frozen=True, slots=True)
class Started:
    conversation_id: uuid.UUID
    conversation_created: bool
    user_message_id: uuid.UUID
    assistant_message_id: uuid.UUID
    llm: str
    #: Empty when retrieval is skipped (no collection in the request or the conversation).
    retriever: str


@dataclass(frozen=True, slots=True)
class Retrieved:
    """Retrieval ran: the query searched and how many sources the model gets (0: none relevant)."""

    query: str
    source_count: int


@dataclass(frozen=True, slots=True)
class Token:
    text: str


@dataclass(frozen=True, slots=True)
class Citation:
    """The answer cites ``source`` for the first time (sent before the text holding the marker)."""

    source: NumberedSource


@dataclass(frozen=True, slots=True)
class UsageReport:
    input_tokens: int
    output_tokens: int
    llm: str
    #: True when the model reported the counts; False when the host counted them.
    reported: bool


@dataclass(frozen=True, slots=True)
class Failure:
    error: OpenTierError


@dataclass(frozen=True, slots=True)
class Finished:
    message_id: uuid.UUID
    conversation_id: uuid.UUID
    status: MessageStatus
    finish_reason: FinishReason
    timings: Timings


ChatEvent = Started | Retrieved | Token | Citation | UsageReport | Failure | Finished
