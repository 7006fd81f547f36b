"""The events of one chat turn as every gateway transport sends them.

A turn yields :class:`TurnEvent` values in this order: ``started``, ``retrieval`` (when retrieval ran),
``citation`` and ``token`` pieces, ``usage``, ``quota`` (when the caller's token quota ended the turn),
``error`` (when it failed), and ``done`` last, always. A transport numbers them: :meth:`TurnEvent.wire`
gives the JSON object sent, ``{"type": ..., "seq": n, ...data}``, ``seq`` increasing by one per event
within a stream (a WebSocket connection, an SSE stream). Heartbeats are not events: they carry no
``seq`` and are never replayed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from opentier.gateway.schemas.common import Problem
from opentier.gateway.schemas.conversations import Citation, Timings, Usage
from opentier.generated.intelligence.v1 import chat_pb2, conversations_pb2

EventType = Literal["started", "retrieval", "citation", "token", "usage", "quota", "error", "done"]
#: The event types, in the order they may come.
EVENT_TYPES: tuple[EventType, ...] = (
    "started",
    "retrieval",
    "citation",
    "token",
    "usage",
    "quota",
    "error",
    "done",
)

_STATUS = {
    conversations_pb2.MESSAGE_STATUS_COMPLETE: "complete",
    conversations_pb2.MESSAGE_STATUS_CANCELLED: "cancelled",
    conversations_pb2.MESSAGE_STATUS_FAILED: "failed",
}
_FINISH = {
    conversations_pb2.FINISH_REASON_STOP: "stop",
    conversations_pb2.FINISH_REASON_LENGTH: "length",
    conversations_pb2.FINISH_REASON_CANCELLED: "cancelled",
    conversations_pb2.FINISH_REASON_ERROR: "error",
    conversations_pb2.FINISH_REASON_CONTENT_FILTER: "content_filter",
}


@dataclass(frozen=True, slots=True)
class TurnEvent:
    """One event of a turn, before a transport numbers it."""

    type: EventType
    data: dict[str, Any] = field(default_factory=dict)

    def wire(self, seq: int) -> dict[str, Any]:
        """The JSON object a transport sends: type and sequence number first, then the data."""
        return {"type": self.type, "seq": seq, **self.data}

    @property
    def terminal(self) -> bool:
        return self.type == "done"


def from_host(event: chat_pb2.ChatEvent) -> TurnEvent:
    """The gateway's form of one host event (the host's own ``sequence`` is dropped)."""
    kind = event.WhichOneof("event")
    if kind == "started":
        s = event.started
        return TurnEvent(
            "started",
            {
                "conversation_id": s.conversation_id,
                "conversation_created": s.conversation_created,
                "user_message_id": s.user_message_id,
                "assistant_message_id": s.assistant_message_id,
                "llm": s.llm,
                "retriever": s.retriever or None,
            },
        )
    if kind == "retrieval":
        return TurnEvent(
            "retrieval", {"query": event.retrieval.query, "source_count": event.retrieval.source_count}
        )
    if kind == "token":
        return TurnEvent("token", {"text": event.token.text})
    if kind == "citation":
        return TurnEvent("citation", Citation.from_pb(event.citation).model_dump(mode="json"))
    if kind == "usage":
        u = event.usage
        usage = Usage(input_tokens=u.input_tokens, output_tokens=u.output_tokens, llm=u.llm, model=u.model)
        return TurnEvent("usage", usage.model_dump(mode="json"))
    if kind == "error":
        return error_event(event.error.code, event.error.message, retryable=event.error.retryable)
    if kind == "done":
        d = event.done
        timings = Timings(
            time_to_first_token_ms=(
                d.timings.time_to_first_token_ms if d.timings.HasField("time_to_first_token_ms") else None
            ),
            total_ms=d.timings.total_ms,
        )
        return TurnEvent(
            "done",
            {
                "message_id": d.message_id,
                "conversation_id": d.conversation_id,
                "status": _STATUS.get(d.status, "failed"),
                "finish_reason": _FINISH.get(d.finish_reason),
                "timings": timings.model_dump(mode="json"),
            },
        )
    raise ValueError(f"unknown chat event {kind!r} from the host")


def error_event(code: str, message: str, *, retryable: bool = False) -> TurnEvent:
    """An ``error`` event: the stable code, a message for people, whether trying again may work."""
    problem = Problem(code=code, message=message).model_dump(mode="json")
    return TurnEvent("error", {**problem, "retryable": retryable})


def quota_event(scope: str, period: str, limit: int, used: int, resets_at: str) -> TurnEvent:
    """The caller's token quota ended the turn: which one (``tenant``/``user``, ``day``/``month``), its
    limit, the tokens used in the period, and when the period ends (ISO 8601, UTC)."""
    return TurnEvent(
        "quota", {"scope": scope, "period": period, "limit": limit, "used": used, "resets_at": resets_at}
    )
