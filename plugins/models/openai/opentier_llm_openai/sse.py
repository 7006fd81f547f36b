"""Server-sent events from lines of text, as the WHATWG HTML standard defines them.

Chat completion servers send ``data: {json}`` events and end with ``data: [DONE]``; some add ``event:``
names, ``:`` comments (keep-alives) or split one event's data over several ``data:`` lines.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Event:
    data: str
    event: str = "message"


async def events(lines: AsyncIterator[str]) -> AsyncIterator[Event]:
    """The events of a stream of lines (line ends already removed), in order."""
    data: list[str] = []
    name = ""
    async for line in lines:
        if not line:
            if data:
                yield Event(data="\n".join(data), event=name or "message")
            data, name = [], ""
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "data":
            data.append(value)
        elif field == "event":
            name = value
    if data:
        yield Event(data="\n".join(data), event=name or "message")
