"""Server-sent events, decoded line by line (the WHATWG rules the gateway's ``/v1/chat/stream`` follows).

Feed :meth:`SSEDecoder.feed` each line of the response without its line ending; it returns a
:class:`ServerSentEvent` when a blank line ends one. Comments (``: heartbeat``) are skipped.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServerSentEvent:
    event: str
    data: str
    id: str | None


class SSEDecoder:
    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None
        #: The id of the last event dispatched (what ``Last-Event-ID`` resumes from).
        self.last_event_id: str | None = None

    def feed(self, line: str) -> ServerSentEvent | None:
        if not line:
            if not self._data and not self._event:
                return None
            event = ServerSentEvent(self._event or "message", "\n".join(self._data), self._id)
            if self._id is not None:
                self.last_event_id = self._id
            self._event, self._data, self._id = "", [], None
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self._id = value
        return None
