"""Server-sent events at ``/v1/chat/stream`` through the real gateway under Hypercorn and the real host:
event order and ids, resuming with ``Last-Event-ID``, ownership, cancel, the resume window, and the
replay buffer's bound."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from opentier.errors import InvalidRequestError
from opentier.gateway.chat.events import TurnEvent
from opentier.gateway.chat.replay import STREAMS_KEY, EventsExpiredError, ReplayBuffer, SSEStreams
from opentier.gateway.state import gateway_state
from tests.engine.chatting import Step
from tests.gateway.streaming import (  # noqa: F401 - fixtures
    ChatGateway,
    ChatUser,
    chat_gateway_fixture,
    chat_settings_fixture,
    host_chat_options_fixture,
    ingest_text,
    limits_options_fixture,
    signed_in_key,
    streaming_host_fixture,
    streaming_options_fixture,
)

STREAM = "/v1/chat/stream"
WINGS = (
    "Wings make lift because air flows faster over the curved upper surface.\n\n"
    "Flaps and slats raise lift at low speed, for take-off and landing."
)


@dataclass
class Read:
    """What a client read of one SSE response: its events (wire JSON, with the SSE id and event name
    checked against it) and its comments."""

    headers: httpx.Headers
    events: list[dict[str, Any]] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    source: AsyncIterator[dict[str, Any] | str] | None = None

    @property
    def ids(self) -> list[int]:
        return [event["seq"] for event in self.events]

    @property
    def types(self) -> list[str]:
        return [event["type"] for event in self.events]


def parsed(lines: list[str]) -> list[dict[str, Any] | str]:
    """The events (decoded ``data``) and comments of SSE ``lines``."""
    found: list[dict[str, Any] | str] = []
    fields: dict[str, str] = {}
    for line in lines:
        if line.startswith(":"):
            found.append(line[1:].strip())
        elif line:
            name, _, value = line.partition(": ")
            fields[name] = value
        elif fields:
            data = json.loads(fields["data"])
            assert fields["id"] == str(data["seq"]) and fields["event"] == data["type"], fields
            found.append(data)
            fields = {}
    return found


async def frames(response: httpx.Response) -> AsyncIterator[dict[str, Any] | str]:
    """:func:`parsed` frames of an SSE response, as they arrive."""
    lines: list[str] = []
    async for line in response.aiter_lines():
        lines.append(line)
        if not line:
            for item in parsed(lines):
                yield item
            lines = []


def reading(response: httpx.Response) -> Read:
    return Read(response.headers, source=frames(response))


async def read(got: Read, *, events: int | None = None) -> Read:
    """Read on into ``got``, until ``done`` or ``events`` more events."""
    assert got.source is not None
    wanted = len(got.events) + events if events is not None else None
    async with asyncio.timeout(30):
        async for item in got.source:
            if isinstance(item, str):
                got.comments.append(item)
                continue
            got.events.append(item)
            if item["type"] == "done" or (wanted is not None and len(got.events) >= wanted):
                break
    return got


async def whole(gateway: ChatGateway, method: str, path: str, **options: Any) -> Read:
    """A whole SSE response (until the stream ended), checked against /openapi.json."""
    response = await gateway.api.request(method, path, **options)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    got = Read(response.headers)
    for item in parsed(response.text.split("\n")):
        if isinstance(item, str):
            got.comments.append(item)
        else:
            got.events.append(item)
    assert got.types[-1] == "done" and got.types.count("done") == 1
    return got


def answer(events: list[dict[str, Any]]) -> str:
    return "".join(event["text"] for event in events if event["type"] == "token")


async def stored(gateway: ChatGateway, user: ChatUser, conversation_id: str) -> dict[str, Any]:
    """The stored answer (the conversation's last message)."""
    found = await gateway.api.get(f"/v1/conversations/{conversation_id}", headers=user.key_headers)
    assert found.status_code == 200, found.text
    message: dict[str, Any] = found.json()["messages"][-1]
    return message


def streams_of(gateway: ChatGateway) -> SSEStreams:
    found = gateway_state(gateway.app).extras[STREAMS_KEY]
    assert isinstance(found, SSEStreams)
    return found


def script(pieces: int, pause: float) -> list[Step]:
    steps: list[Step] = []
    for index in range(pieces):
        steps += [f"w{index} ", pause]
    return steps


# -- the replay buffer on its own ----------------------------------------------------------------


def token(text: str) -> TurnEvent:
    return TurnEvent("token", {"text": text})


async def test_the_replay_buffer_keeps_the_last_events_and_refuses_what_it_dropped() -> None:
    buffer = ReplayBuffer(4)
    for index in range(10):
        buffer.append(token(str(index)))
    assert len(buffer) == 4 and (buffer.first_seq, buffer.last_seq) == (7, 10)
    assert [wire["seq"] for wire in buffer.since(6)] == [7, 8, 9, 10]
    assert [wire["text"] for wire in buffer.since(8)] == ["8", "9"]
    assert buffer.since(10) == []
    with pytest.raises(EventsExpiredError):
        buffer.since(5)
    with pytest.raises(InvalidRequestError):
        buffer.check(11)


async def test_a_follower_gets_every_event_once_and_a_heartbeat_while_idle() -> None:
    buffer = ReplayBuffer(8)
    buffer.append(token("a"))
    seen: list[dict[str, Any] | None] = []

    async def follow() -> None:
        async for item in buffer.follow(0, heartbeat=0.05):
            seen.append(item)

    reader = asyncio.create_task(follow())
    await asyncio.sleep(0.12)  # idle: heartbeats
    buffer.append(token("b"))
    buffer.append(TurnEvent("done", {"status": "complete"}))
    await asyncio.wait_for(reader, 5)
    events = [item for item in seen if item is not None]
    assert [(e["seq"], e["type"]) for e in events] == [(1, "token"), (2, "token"), (3, "done")]
    assert None in seen[1:-2]


async def test_a_follower_that_falls_behind_what_is_kept_loses_its_place() -> None:
    buffer = ReplayBuffer(4)
    buffer.append(token("0"))
    follower = buffer.follow(0, heartbeat=5)
    assert (await anext(follower) or {})["seq"] == 1
    for index in range(1, 10):  # the follower does not read meanwhile
        buffer.append(token(str(index)))
    with pytest.raises(EventsExpiredError):
        await anext(follower)
    assert len(buffer) == 4


# -- through the served gateway ------------------------------------------------------------------


async def test_a_turn_streams_its_events_in_order_with_increasing_ids(chat_gateway: ChatGateway) -> None:
    user = await signed_in_key(chat_gateway)
    docs = await ingest_text(chat_gateway, user, WINGS, filename="wings.txt")
    body = {"message": "How do wings make lift?", "collection_ids": [docs.collection_id]}
    got = await whole(chat_gateway, "POST", STREAM, json=body, headers=user.key_headers)

    assert got.ids == list(range(1, len(got.events) + 1))
    assert got.types[:2] == ["started", "retrieval"] and got.types[-2:] == ["usage", "done"]
    middle = got.types[2:-2]
    assert "citation" in middle and set(middle) == {"citation", "token"}
    started, done = got.events[0], got.events[-1]
    assert started["stream_id"] == got.headers["OpenTier-Stream-Id"]
    assert done["status"] == "complete" and done["finish_reason"] == "stop"
    [citation] = [e for e in got.events if e["type"] == "citation"]
    assert citation["document_id"] == docs.document_id and citation["source"] == "wings.txt"
    text = answer(got.events)
    assert text.startswith("Wings make lift") and text.endswith("[1]")
    message = await stored(chat_gateway, user, started["conversation_id"])
    assert message["content"] == text and message["status"] == "complete"


async def test_errors_before_the_turn_starts_are_json_with_their_status(chat_gateway: ChatGateway) -> None:
    user = await signed_in_key(chat_gateway)
    missing = "00000000-0000-4000-8000-000000000000"
    unknown = await chat_gateway.api.post(
        STREAM, json={"message": "Hi", "conversation_id": missing}, headers=user.key_headers
    )
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"
    empty = await chat_gateway.api.post(STREAM, json={"message": ""}, headers=user.key_headers)
    assert empty.status_code == 400 and empty.json()["error"]["code"] == "invalid_request"
    reader = await signed_in_key(chat_gateway, scopes=("read",))
    refused = await chat_gateway.api.post(STREAM, json={"message": "Hi"}, headers=reader.key_headers)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "permission_denied"
    anonymous = await chat_gateway.api.post(STREAM, json={"message": "Hi"})
    assert anonymous.status_code == 401


async def test_a_client_that_drops_and_resumes_gets_exactly_the_missed_events(
    chat_gateway: ChatGateway,
) -> None:
    user = await signed_in_key(chat_gateway)
    chat_gateway.llms.scripted.script = script(30, 0.02)
    client = chat_gateway.api.client
    body = {"message": "Tell me a story.", "llm": "scripted"}
    async with client.stream("POST", STREAM, json=body, headers=user.key_headers) as response:
        assert response.status_code == 200
        first = await read(reading(response), events=5)
    stream_id = first.headers["OpenTier-Stream-Id"]
    assert first.ids == [1, 2, 3, 4, 5]
    await asyncio.sleep(0.2)  # the turn goes on while nobody reads

    resumed = await whole(
        chat_gateway, "GET", f"{STREAM}/{stream_id}", headers=user.key_headers | {"Last-Event-ID": "5"}
    )
    # no duplicate, no gap: the next id is 6, then one more each, up to `done`
    assert resumed.ids == list(range(6, 6 + len(resumed.events)))
    assert resumed.types[-1] == "done" and resumed.events[-1]["status"] == "complete"
    everything = first.events + resumed.events
    text = answer(everything)
    assert text == "".join(f"w{index} " for index in range(30))
    assert (await stored(chat_gateway, user, first.events[0]["conversation_id"]))["content"] == text

    # the stream can be read again from the start while it is kept: the same events
    again = await whole(chat_gateway, "GET", f"{STREAM}/{stream_id}", headers=user.key_headers)
    assert again.events == everything


async def test_another_users_stream_does_not_exist_for_them(chat_gateway: ChatGateway) -> None:
    owner = await signed_in_key(chat_gateway)
    other = await signed_in_key(chat_gateway)
    got = await whole(chat_gateway, "POST", STREAM, json={"message": "Hello"}, headers=owner.key_headers)
    stream_id = got.headers["OpenTier-Stream-Id"]

    for path in (f"{STREAM}/{stream_id}", f"{STREAM}/no-such-stream"):
        found = await chat_gateway.api.get(path, headers=other.key_headers)
        assert found.status_code == 404 and found.json()["error"]["code"] == "not_found"
    cancel = await chat_gateway.api.post(f"{STREAM}/{stream_id}/cancel", headers=other.key_headers)
    assert cancel.status_code == 404
    # the owner still gets it, with a session token as well as with the key
    mine = await whole(chat_gateway, "GET", f"{STREAM}/{stream_id}", headers=owner.headers)
    assert mine.events == got.events


async def test_cancel_ends_the_stream_with_done_cancelled(chat_gateway: ChatGateway) -> None:
    user = await signed_in_key(chat_gateway)
    client = chat_gateway.api.client
    body = {"message": "Go on forever.", "llm": "endless"}
    async with client.stream("POST", STREAM, json=body, headers=user.key_headers) as response:
        got = await read(reading(response), events=4)
        stream_id = got.headers["OpenTier-Stream-Id"]
        cancelled = await chat_gateway.api.post(f"{STREAM}/{stream_id}/cancel", headers=user.key_headers)
        assert cancelled.status_code == 202 and cancelled.json() == {"stream_id": stream_id, "ended": False}
        await read(got)

    assert got.types[-2:] == ["usage", "done"]
    assert got.events[-1]["status"] == "cancelled" and got.events[-1]["finish_reason"] == "cancelled"
    assert await chat_gateway.llms.endless.wait_ended() != []
    message = await stored(chat_gateway, user, got.events[0]["conversation_id"])
    assert message["status"] == "cancelled" and message["content"] == answer(got.events)


@pytest.mark.parametrize("streaming_options", [{"resume_window_seconds": 0.5}], indirect=True)
async def test_a_turn_nobody_reads_is_cancelled_after_the_resume_window(chat_gateway: ChatGateway) -> None:
    user = await signed_in_key(chat_gateway)
    client = chat_gateway.api.client
    body = {"message": "Go on forever.", "llm": "endless"}
    async with client.stream("POST", STREAM, json=body, headers=user.key_headers) as response:
        got = await read(reading(response), events=3)
    stream_id = got.headers["OpenTier-Stream-Id"]
    endless = chat_gateway.llms.endless

    assert await endless.wait_ended(timeout=10) != []  # cancelled, within the window and a bit
    message = await stored(chat_gateway, user, got.events[0]["conversation_id"])
    assert message["status"] == "cancelled" and message["content"].startswith("tick tick")
    # once the turn ended and the window passed again, the stream is gone
    async with asyncio.timeout(10):
        while stream_id in streams_of(chat_gateway):
            await asyncio.sleep(0.05)
    gone = await chat_gateway.api.get(f"{STREAM}/{stream_id}", headers=user.key_headers)
    assert gone.status_code == 404


@pytest.mark.parametrize("streaming_options", [{"heartbeat_seconds": 0.1}], indirect=True)
async def test_an_idle_stream_gets_heartbeat_comments(chat_gateway: ChatGateway) -> None:
    user = await signed_in_key(chat_gateway)
    chat_gateway.llms.scripted.script = ["Thinking", 0.5, " done."]
    body = {"message": "Think.", "llm": "scripted"}
    got = await whole(chat_gateway, "POST", STREAM, json=body, headers=user.key_headers)
    assert "heartbeat" in got.comments
    assert answer(got.events) == "Thinking done." and got.ids == list(range(1, len(got.events) + 1))


@pytest.mark.parametrize("streaming_options", [{"replay_events": 16}], indirect=True)
async def test_the_replay_buffer_stays_bounded(chat_gateway: ChatGateway) -> None:
    user = await signed_in_key(chat_gateway)
    chat_gateway.llms.scripted.script = [f"p{index} " for index in range(200)]
    body = {"message": "Many pieces.", "llm": "scripted"}
    got = await whole(chat_gateway, "POST", STREAM, json=body, headers=user.key_headers)
    stream_id = got.headers["OpenTier-Stream-Id"]
    last = got.ids[-1]
    assert last > 200 and got.ids == list(range(1, last + 1))  # the live reader missed nothing

    stream = streams_of(chat_gateway).find(stream_id)
    assert stream is not None
    assert len(stream.buffer) == 16 and stream.buffer.first_seq == last - 15
    headers = user.key_headers | {"Last-Event-ID": str(last - 16)}
    tail = await whole(chat_gateway, "GET", f"{STREAM}/{stream_id}", headers=headers)
    assert tail.events == got.events[-16:]
    expired = await chat_gateway.api.get(
        f"{STREAM}/{stream_id}", headers=user.key_headers | {"Last-Event-ID": "3"}
    )
    assert expired.status_code == 404 and expired.json()["error"]["code"] == "stream_events_expired"
    future = await chat_gateway.api.get(
        f"{STREAM}/{stream_id}", headers=user.key_headers | {"Last-Event-ID": str(last + 1)}
    )
    assert future.status_code == 400
