"""A whole answer, gathered from the events of one turn: what :meth:`AsyncClient.ask` returns."""

from __future__ import annotations

from dataclasses import dataclass, field

from opentier.client.errors import ChatError, api_error
from opentier.client.events import (
    ChatEvent,
    CitationEvent,
    DoneEvent,
    ErrorEvent,
    QuotaEvent,
    StartedEvent,
    TokenEvent,
    UsageEvent,
)
from opentier.client.models import Citation, Timings, Usage


@dataclass
class Answer:
    """The answer of one turn: its text (with ``[n]`` markers), the sources it cites, and how it ended.

    >>> answer = client.ask("How do flaps work?", collection_ids=[manuals.id])
    >>> answer.text
    'Flaps raise lift at low speed [1]'
    >>> [(c.source_number, c.source, c.page) for c in answer.citations]
    [(1, 'wing-design.pdf', 4)]
    """

    text: str = ""
    citations: list[Citation] = field(default_factory=list)
    conversation_id: str = ""
    message_id: str = ""
    #: ``complete``, ``cancelled`` (you, a disconnect or your token quota stopped it) or ``failed``.
    status: str = "in_progress"
    finish_reason: str | None = None
    llm: str = ""
    retriever: str | None = None
    usage: Usage | None = None
    timings: Timings | None = None
    #: Set when your token quota ended the turn.
    quota: QuotaEvent | None = None
    #: Set when the turn failed after it started.
    error: ErrorEvent | None = None

    @property
    def complete(self) -> bool:
        return self.status == "complete"

    def add(self, event: ChatEvent) -> None:
        """Take one event of the turn into account."""
        if isinstance(event, StartedEvent):
            self.conversation_id = event.conversation_id
            self.message_id = event.assistant_message_id
            self.llm = event.llm
            self.retriever = event.retriever
        elif isinstance(event, TokenEvent):
            self.text += event.text
        elif isinstance(event, CitationEvent):
            self.citations.append(event.citation())
        elif isinstance(event, UsageEvent):
            self.usage = Usage.model_validate(event.model_dump(exclude={"type", "seq"}))
        elif isinstance(event, QuotaEvent):
            self.quota = event
        elif isinstance(event, ErrorEvent):
            self.error = event
        elif isinstance(event, DoneEvent):
            self.status = event.status
            self.finish_reason = event.finish_reason
            self.timings = event.timings
            self.message_id = event.message_id or self.message_id
            self.conversation_id = event.conversation_id or self.conversation_id

    def raise_for_failure(self) -> None:
        """Raise :class:`ChatError` (with this answer) when the turn failed."""
        if self.status != "failed" and self.error is None:
            return
        code = self.error.code if self.error else "internal"
        message = self.error.message if self.error else "the chat turn failed"
        typed = api_error(code, message)
        raise ChatError(
            message,
            answer=self,
            code=code,
            status=typed.status,
            retry_after=self.error.retry_after if self.error else None,
        )
