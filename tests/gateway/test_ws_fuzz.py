"""Hostile clients of the WebSocket ``/v1/chat/ws`` (docs/streaming.md, section WebSocket), against the
real app under Hypercorn, the real host with the test LLMs and the real PostgreSQL.

Every bad message gets the documented ``error`` event (``invalid_request``; the connection stays) or the
documented close code (1009 for a frame over ``streaming.max_frame_bytes``, 4408 for a client that
floods without reading), never 1011 or a stuck connection: every wait is bounded. A seeded generator
mutates valid messages a few hundred times; afterwards a new connection still gets a normal turn.

Already covered elsewhere (tests/gateway/test_chat_ws.py): not-JSON, an unknown ``type``, a JSON list,
an invalid ``start``, a second ``start`` while a turn runs (``turn_in_progress``), ``cancel`` of a
running turn, a text frame over the limit (1009), a client that stops reading during an answer (4408).

A frame over the limit *followed by another frame* used to leave the connection open (a Hypercorn 0.18
bug, fixed by opentier/gateway/hypercorn_fix.py); its test closes with 1009 and the handler ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
from collections.abc import Callable
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from opentier.gateway.routes.chat_ws import ChatConnection
from opentier.gateway.state import gateway_state
from tests.gateway.streaming import (  # noqa: F401 - fixtures
    ChatGateway,
    ChatUser,
    chat_gateway_fixture,
    chat_settings_fixture,
    host_chat_options_fixture,
    limits_options_fixture,
    read_turn,
    receive,
    signed_in_key,
    streaming_host_fixture,
    streaming_options_fixture,
    ws_connect,
)

#: Codes a hostile ``start`` may be refused with before its turn starts (docs/streaming.md).
REFUSALS = {"invalid_request", "not_found", "component_unknown", "permission_denied"}
FRAME = 8192
SMALL_FRAMES = {"max_frame_bytes": FRAME, "heartbeat_seconds": 30.0}
#: Fuzz rounds; the seed makes every run send the same messages.
ROUNDS = 300
SEED = 20261127


async def hello(ws: ClientConnection) -> None:
    greeting = await receive(ws)
    assert greeting["type"] == "hello" and greeting["max_frame_bytes"] == FRAME


async def closed_with(ws: ClientConnection, timeout: float = 15) -> int | None:  # noqa: ASYNC109
    """Drop what is left until the server's close; its close code."""
    async with asyncio.timeout(timeout):
        try:
            while True:
                await ws.recv()
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd is not None else None


def kind_of(frame: str | bytes) -> object:
    """The ``type`` the gateway reads in ``frame`` (None when it is not a JSON object)."""
    try:
        message = json.loads(frame)
    except (ValueError, RecursionError):
        return None
    return message.get("type") if isinstance(message, dict) else None


async def answers(ws: ClientConnection, frame: str | bytes, timeout: float = 10) -> list[dict[str, Any]]:  # noqa: ASYNC109
    """Send ``frame``, then a ping; every message up to the ping's pong and, after a ``start``, its
    refusal or its whole turn. The pong proves the gateway handled ``frame`` (messages are handled in
    order); a turn runs on its own, so its events may come after the pong. Pongs are not returned."""
    kind = kind_of(frame)
    await ws.send(frame)
    await ws.send(json.dumps({"type": "ping"}))
    got: list[dict[str, Any]] = []
    pongs, waiting = 2 if kind == "ping" else 1, kind == "start"
    async with asyncio.timeout(timeout):
        while pongs or waiting:
            message = await receive(ws, timeout)
            if message == {"type": "pong"}:
                pongs -= 1
                continue
            if message["type"] == "heartbeat":
                continue
            got.append(message)
            if message["type"] == "error" and not any(m["type"] == "started" for m in got):
                waiting = False  # refused before it started: no `done` follows
            elif message["type"] == "done":
                waiting = False
    return got


async def normal_turn_works(gateway: ChatGateway, user: ChatUser) -> None:
    """A new connection of the same user greets and answers a question to the end."""
    async with ws_connect(gateway, key=user.key) as ws:
        await hello(ws)
        await ws.send(json.dumps({"type": "start", "message": "Hello after the storm?"}))
        turn = await read_turn(ws)
        assert turn[0]["type"] == "started" and turn[-1]["status"] == "complete"


DEEP = "[" * 3000 + "]" * 3000

#: (what is sent, a piece of the error message): each is refused with `invalid_request`, nothing else.
MALFORMED: list[tuple[str | bytes, str]] = [
    ("{not json", "not JSON"),
    ("", "not JSON"),
    ("null", "JSON object"),
    ("42", "JSON object"),
    ('"start"', "JSON object"),
    ("{}", "JSON object"),
    ('{"type": 7}', "JSON object"),
    ('{"type": null}', "JSON object"),
    ('{"type": ["start"]}', "JSON object"),
    ('{"type": "START"}', "'START'"),
    ('{"type": "start"}', "message"),
    ('{"type": "start", "message": 7}', "message"),
    ('{"type": "start", "message": "hi", "extra": 1}', "extra"),
    ('{"type": "start", "message": "hi", "top_k": 0}', "top_k"),
    ('{"type": "start", "message": "hi", "top_k": 1e400}', "top_k"),
    ('{"type": "start", "message": "hi", "top_k": NaN}', "top_k"),
    ('{"type": "start", "message": "hi", "collection_ids": "abc"}', "collection_ids"),
    ('{"type": "start", "message": "hi", "options": {"temperature": "hot"}}', "temperature"),
    ('{"type": "start", "message": "hi", "conversation_id": "' + "c" * 101 + '"}', "conversation_id"),
    # Deeply nested JSON, an integer of 5,000 digits: errors of Python's json module besides its own.
    (DEEP, "not JSON"),
    ('{"type": "ping", "n": ' + "9" * 5000 + "}", "not JSON"),
    # A lone surrogate, echoed back in the error's message, must not break the UTF-8 of the reply.
    ('{"type": "\\ud800"}', "unknown message type"),
    # Binary frames: not UTF-8 at all, or JSON in UTF-16 (not a protocol message either way).
    (b"\xff\xfe\xfa\x00\x01", "not JSON"),
    (b"\x80" * 100, "not JSON"),
]


@pytest.mark.parametrize("streaming_options", [SMALL_FRAMES], indirect=True)
async def test_malformed_messages_each_get_invalid_request_and_the_connection_stays(
    chat_gateway: ChatGateway,
) -> None:
    user = await signed_in_key(chat_gateway)
    async with ws_connect(chat_gateway, key=user.key) as ws:
        await hello(ws)
        for seq, (frame, expected) in enumerate(MALFORMED, start=1):
            [error] = await answers(ws, frame)
            assert error["type"] == "error" and error["code"] == "invalid_request", (frame[:40], error)
            assert expected in error["message"], (frame[:40], error)
            assert error["seq"] == seq and error["retryable"] is False

        # A binary frame holding a JSON message is read as that message; `cancel` without a turn
        # does nothing at all.
        assert await answers(ws, json.dumps({"type": "cancel"}).encode()) == []
        assert await answers(ws, json.dumps({"type": "cancel"})) == []
        turn = await answers(ws, json.dumps({"type": "start", "message": "still there?"}).encode())
        assert turn[0]["type"] == "started" and turn[-1]["status"] == "complete"

        # A message at the limit is read; one byte more (text or binary) closes the connection.
        padding = FRAME - len(json.dumps({"type": "ping", "pad": ""}))
        await ws.send(json.dumps({"type": "ping", "pad": "p" * padding}))
        assert await receive(ws) == {"type": "pong"}
        await ws.send(b'{"type": "ping", "pad": "' + b"p" * FRAME + b'"}')
        assert await closed_with(ws) == 1009
        # What the client sends after the close goes nowhere: it is told, at once.
        with pytest.raises(ConnectionClosed):
            async with asyncio.timeout(5):
                await ws.send(json.dumps({"type": "ping"}))
    await normal_turn_works(chat_gateway, user)


@pytest.mark.parametrize("streaming_options", [SMALL_FRAMES], indirect=True)
async def test_a_flood_of_small_frames_is_answered_in_order(chat_gateway: ChatGateway) -> None:
    user = await signed_in_key(chat_gateway)
    count = 2000
    async with ws_connect(chat_gateway, key=user.key) as ws:
        await hello(ws)

        async def flood() -> None:
            for index in range(count):
                await ws.send("{bad" if index % 2 else '{"type": "ping"}')

        sending = asyncio.create_task(flood())
        got: list[dict[str, Any]] = []
        async with asyncio.timeout(30):
            while len(got) < count:
                got.append(await receive(ws))
        await sending
        pongs = [message for message in got if message == {"type": "pong"}]
        errors = [message for message in got if message.get("code") == "invalid_request"]
        assert len(pongs) == len(errors) == count // 2
        assert [error["seq"] for error in errors] == list(range(1, count // 2 + 1))
        assert await answers(ws, json.dumps({"type": "ping"})) == []


@pytest.mark.parametrize(
    "streaming_options", [SMALL_FRAMES | {"send_buffer_events": 8, "slow_client_seconds": 1.0}], indirect=True
)
async def test_a_flood_by_a_client_that_never_reads_is_closed_4408(chat_gateway: ChatGateway) -> None:
    """Each bad frame queues an error event for the client; one that never reads them is closed once
    its buffer stayed full, so what the gateway holds for it stays bounded."""
    user = await signed_in_key(chat_gateway)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    sock.connect(("127.0.0.1", int(chat_gateway.url.rsplit(":", 1)[1])))
    # Every frame makes the gateway echo a 4 kB type name back in its error.
    junk = json.dumps({"type": "x" * 4000})
    sockets: set[ChatConnection] = gateway_state(chat_gateway.app).extras["chat_sockets"]
    async with ws_connect(chat_gateway, key=user.key, sock=sock, max_queue=1, compression=None) as ws:
        await hello(ws)

        async def flood() -> None:
            with contextlib.suppress(ConnectionClosed):
                for _ in range(4000):  # 16 MB of errors if the gateway kept them all
                    await ws.send(junk)

        flooding = asyncio.create_task(flood())
        try:
            async with asyncio.timeout(30):
                while not sockets:
                    await asyncio.sleep(0.01)
                [connection] = sockets
                while sockets:  # the gateway gave up on this client
                    await asyncio.sleep(0.05)
            # Reading at last, the client finds what the network held, then the close.
            assert await closed_with(ws) == 4408
        finally:
            flooding.cancel()
            await asyncio.gather(flooding, return_exceptions=True)
    assert connection.high_water <= 8
    await normal_turn_works(chat_gateway, user)


# -- seeded mutations of valid messages -----------------------------------------------------------

VALID: list[dict[str, Any]] = [
    {"type": "ping"},
    {"type": "cancel"},
    {"type": "start", "message": "What is lift?"},
    {
        "type": "start",
        "message": "More?",
        "top_k": 3,
        "options": {"temperature": 0.5, "max_output_tokens": 20},
    },
    {"type": "start", "message": "Filtered", "filters": {"lang": "en"}, "metadata": {"from": "fuzz"}},
    {"type": "start", "message": "Models", "llm": "citing", "collection_ids": []},
]
WEIRD: list[Any] = [
    None,
    True,
    -1,
    0,
    2**63,
    1e308,
    -0.0,
    "",
    "\u0000",
    "\ud83d",
    "é" * 50,
    "start",
    [],
    {},
    [[[]]],
    {"type": "start"},
    "x" * 3000,
    [1, "a", None],
    {"$where": "1"},
    "' OR 1=1 --",
]


def _mutate_value(rng: random.Random, message: dict[str, Any]) -> dict[str, Any]:
    mutated = dict(message)
    key = rng.choice([*mutated, "message", "type", "options", "top_k", "llm", "conversation_id", "zz"])
    action = rng.random()
    if action < 0.2 and key in mutated:
        del mutated[key]
    elif action < 0.3 and isinstance(mutated.get("options"), dict):
        mutated["options"] = {
            **mutated["options"],
            rng.choice(["temperature", "x", "history_messages"]): rng.choice(WEIRD),
        }
    else:
        mutated[key] = rng.choice(WEIRD)
    return mutated


def _mutate_text(rng: random.Random, text: str) -> str | bytes:
    action = rng.randrange(6)
    cut = rng.randrange(len(text) + 1)
    if action == 0:
        return text[:cut]
    if action == 1:
        return text[:cut] + rng.choice('{}[]",:\\\x00\u2028') + text[cut:]
    if action == 2:
        return text[:cut] + text[cut + 1 :]
    if action == 3:
        return text.encode()[:cut] + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 8)))
    if action == 4:
        return text * rng.randrange(2, 4)
    return "[" * rng.randrange(1, 3000) + text


MUTATIONS: list[Callable[[random.Random, dict[str, Any]], str | bytes]] = [
    lambda rng, message: json.dumps(_mutate_value(rng, message)),
    lambda rng, message: json.dumps(_mutate_value(rng, _mutate_value(rng, message))),
    lambda rng, message: _mutate_text(rng, json.dumps(message)),
]


@pytest.mark.parametrize("streaming_options", [SMALL_FRAMES], indirect=True)
async def test_seeded_random_mutations_get_documented_answers_only(chat_gateway: ChatGateway) -> None:
    rng = random.Random(SEED)
    user = await signed_in_key(chat_gateway)
    seen: dict[str, int] = {}
    async with asyncio.timeout(60):
        async with ws_connect(chat_gateway, key=user.key) as ws:
            await hello(ws)
            for _ in range(ROUNDS):
                frame = rng.choice(MUTATIONS)(rng, rng.choice(VALID))
                if len(frame) > FRAME:
                    continue  # the size limit has its own test
                for message in await answers(ws, frame):
                    assert "seq" in message, (frame, message)
                    kind = message["type"]
                    if kind == "error":
                        assert message["code"] in REFUSALS | {"llm_failed"}, (frame, message)
                        kind = f"error:{message['code']}"
                    elif kind == "done":
                        assert message["status"] in {"complete", "failed"}, (frame, message)
                    seen[kind] = seen.get(kind, 0) + 1
    # The generator reached both sides: refusals and real turns.
    assert seen.get("error:invalid_request", 0) > ROUNDS // 3 and seen.get("done", 0) > 5, seen
    await normal_turn_works(chat_gateway, user)


#: An oversized message, whole or in fragments each under the limit, then more frames before the close.
OVERSIZED_THEN_MORE = {
    "one frame, then a ping": (["[" * (FRAME + 1)], 1),
    "three fragments, then three pings": ([["[" * (FRAME // 2)] * 3], 3),
}


@pytest.mark.parametrize("streaming_options", [SMALL_FRAMES], indirect=True)
@pytest.mark.parametrize("oversized", OVERSIZED_THEN_MORE.values(), ids=OVERSIZED_THEN_MORE.keys())
async def test_a_message_over_the_limit_closes_1009_whatever_follows(
    chat_gateway: ChatGateway, oversized: tuple[list[str | list[str]], int]
) -> None:
    """Close 1009 and the gateway's handler ends, even when frames follow the oversized message (Hypercorn
    0.18 left that connection open; opentier/gateway/hypercorn_fix.py); a new connection works."""
    messages, pings = oversized
    user = await signed_in_key(chat_gateway)
    sockets: set[ChatConnection] = gateway_state(chat_gateway.app).extras["chat_sockets"]
    async with ws_connect(chat_gateway, key=user.key, close_timeout=1) as ws:
        await hello(ws)
        for message in messages:
            await ws.send(message if isinstance(message, str) else iter(message))
        for _ in range(pings):
            await ws.send(json.dumps({"type": "ping"}))
        assert await closed_with(ws, timeout=3) == 1009
    async with asyncio.timeout(3):
        while sockets:
            await asyncio.sleep(0.05)
    async with ws_connect(chat_gateway, key=user.key) as ws:
        await hello(ws)
        await ws.send(json.dumps({"type": "ping"}))
        assert (await receive(ws))["type"] == "pong"
