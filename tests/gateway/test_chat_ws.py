"""Chat over the WebSocket ``/v1/chat/ws``, against the real app under Hypercorn, the real host with test
LLM plugins and the real PostgreSQL: the whole flow with an API key, credentials and scopes, protocol
errors, heartbeats, cancel, a slow reader (4408, bounded memory), a client that drops, the gateway's
shutdown (1001), the host dying mid-answer, and token quotas."""

from __future__ import annotations

import asyncio
import json
import socket
import tracemalloc
import uuid
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from opentier.errors import QuotaExceededError
from opentier.gateway.limits.quotas import QuotaWindow, TokenQuotas, UsageCharge
from opentier.gateway.principal import Principal
from opentier.gateway.routes.chat_ws import ChatConnection
from opentier.gateway.state import gateway_state
from tests.gateway.served import stop_served
from tests.gateway.streaming import (  # noqa: F401 - fixtures
    ChatGateway,
    ChatUser,
    chat_gateway_fixture,
    chat_settings_fixture,
    host_chat_options_fixture,
    ingest_text,
    limits_options_fixture,
    read_turn,
    receive,
    signed_in_key,
    streaming_host_fixture,
    streaming_options_fixture,
    ws_connect,
)

LIFT = (
    "Wings make lift because air flows faster over the curved upper surface. "
    "Flaps raise lift at low speed for landing."
)
#: How a test model sees its stream stopped: closed at a `yield`, or cancelled while it waited.
STOPPED = (["GeneratorExit"], ["CancelledError"])
DRAG = "Induced drag grows with lift: long thin wings have less of it than short stubby ones."


def types(events: list[dict[str, Any]]) -> list[str]:
    return [event["type"] for event in events]


def answer(events: list[dict[str, Any]]) -> str:
    return "".join(event["text"] for event in events if event["type"] == "token")


async def start(ws: ClientConnection, message: str, **fields: Any) -> None:
    await ws.send(json.dumps({"type": "start", "message": message, **fields}))


async def hello(ws: ClientConnection) -> dict[str, Any]:
    greeting = await receive(ws)
    assert greeting["type"] == "hello" and greeting["protocol"] == 1 and "seq" not in greeting
    return greeting


async def closed_with(ws: ClientConnection, timeout: float = 30) -> int | None:  # noqa: ASYNC109
    """Read (and drop) whatever is left until the server's close; its close code."""
    async with asyncio.timeout(timeout):
        try:
            while True:
                await ws.recv()
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd is not None else None


async def stored_status(gateway: ChatGateway, user: ChatUser, conversation_id: str) -> dict[str, Any]:
    """The stored answer (last message) of a conversation, read over REST as a client would."""
    response = await gateway.api.get(f"/v1/conversations/{conversation_id}", headers=user.key_headers)
    assert response.status_code == 200, response.text
    message: dict[str, Any] = response.json()["messages"][-1]
    assert message["role"] == "assistant"
    return message


async def wait_stored(
    gateway: ChatGateway, user: ChatUser, conversation_id: str, status: str
) -> dict[str, Any]:
    async with asyncio.timeout(10):
        while (message := await stored_status(gateway, user, conversation_id))["status"] != status:
            await asyncio.sleep(0.05)
    return message


async def test_an_api_key_chats_over_a_websocket_with_citations_and_a_follow_up(
    chat_gateway: ChatGateway,
) -> None:
    user = await signed_in_key(chat_gateway)
    lift = await ingest_text(chat_gateway, user, LIFT, filename="lift.txt")
    await ingest_text(chat_gateway, user, DRAG, filename="drag.txt", collection_id=lift.collection_id)

    async with ws_connect(chat_gateway, key=user.key) as ws:
        greeting = await hello(ws)
        assert greeting["max_frame_bytes"] == chat_gateway.settings.streaming.max_frame_bytes
        await start(ws, "Why do wings make lift?", collection_ids=[lift.collection_id])
        first = await read_turn(ws)

        kinds = types(first)
        assert kinds[:2] == ["started", "retrieval"] and kinds[-2:] == ["usage", "done"]
        assert set(kinds[2:-2]) == {"citation", "token"}
        assert [event["seq"] for event in first] == list(range(1, len(first) + 1))
        started, done = first[0], first[-1]
        assert started["conversation_created"] is True and started["llm"] == "citing"
        assert done["status"] == "complete" and done["message_id"] == started["assistant_message_id"]
        # The answer quotes the document and cites it as source [1].
        assert answer(first) == "Wings make lift because air flows faster over the curved upper surface. [1]"
        [citation] = [event for event in first if event["type"] == "citation"]
        assert citation["source_number"] == 1 and citation["document_id"] == lift.document_id
        assert citation["source"] == "lift.txt" and "curved upper surface" in citation["text"]

        # The same connection, the same conversation: numbering goes on, the model sees the history.
        await start(ws, "And what about drag?", conversation_id=started["conversation_id"])
        second = await read_turn(ws)
        assert [event["seq"] for event in second] == list(range(len(first) + 1, len(first) + len(second) + 1))
        assert second[0]["conversation_id"] == started["conversation_id"]
        assert second[0]["conversation_created"] is False
        assert second[-1]["status"] == "complete"
        history = [message.content for message in chat_gateway.llms.citing.requests[-1].messages]
        assert any(answer(first) in content for content in history)

    conversation = await chat_gateway.api.get(
        f"/v1/conversations/{started['conversation_id']}", headers=user.key_headers
    )
    messages = conversation.json()["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]
    assert messages[1]["content"] == answer(first) and messages[1]["status"] == "complete"
    assert [c["document_id"] for c in messages[1]["citations"]] == [lift.document_id]


async def test_a_connection_needs_a_credential_with_the_chat_scope(chat_gateway: ChatGateway) -> None:
    user = await signed_in_key(chat_gateway)
    reader = await signed_in_key(chat_gateway, scopes=("read", "ingest"))

    for credentials in ({}, {"key": "otk_not-a-real-key"}, {"query": {"access_token": "nonsense"}}):
        async with ws_connect(chat_gateway, **credentials) as ws:
            refused = await receive(ws)
            assert (
                refused["type"] == "error" and refused["code"] == "unauthenticated" and "seq" not in refused
            )
            assert await closed_with(ws) == 4401

    async with ws_connect(chat_gateway, key=reader.key) as ws:
        refused = await receive(ws)
        assert refused["code"] == "permission_denied" and "chat" in refused["message"]
        assert await closed_with(ws) == 4403

    # A browser cannot set headers: the access token goes in the query string.
    async with ws_connect(chat_gateway, query={"access_token": user.access_token}) as ws:
        await hello(ws)
        await start(ws, "Hello?")
        turn = await read_turn(ws)
        assert turn[-1]["status"] == "complete"
    async with ws_connect(chat_gateway, headers={"X-API-Key": user.key}) as ws:
        await hello(ws)


@pytest.mark.parametrize(
    "streaming_options", [{"heartbeat_seconds": 0.3, "max_frame_bytes": 4096}], indirect=True
)
async def test_protocol_errors_keep_the_connection_and_a_large_frame_closes_it(
    chat_gateway: ChatGateway,
) -> None:
    user = await signed_in_key(chat_gateway)
    endless = chat_gateway.llms.endless
    async with ws_connect(chat_gateway, key=user.key) as ws:
        await hello(ws)
        # Nothing to say: heartbeats, without a number.
        assert await receive(ws) == {"type": "heartbeat"}

        await ws.send("{not json")
        await ws.send(json.dumps({"type": "subscribe"}))
        await ws.send(json.dumps(["start"]))
        await ws.send(json.dumps({"type": "start", "message": ""}))
        await ws.send(json.dumps({"type": "start", "message": "hi", "temperature": 3}))
        await ws.send(json.dumps({"type": "ping"}))
        got = [await receive(ws) for _ in range(6)]
        errors = [message for message in got if message["type"] == "error"]
        assert [e["seq"] for e in errors] == [1, 2, 3, 4, 5]
        assert {e["code"] for e in errors} == {"invalid_request"}
        assert "not JSON" in errors[0]["message"] and "'subscribe'" in errors[1]["message"]
        assert "message" in errors[3]["message"] and "temperature" in errors[4]["message"]
        assert {"type": "pong"} in got

        # One turn at a time; cancel stops it, the partial answer is kept.
        await start(ws, "Talk forever", llm="endless")
        started = await receive(ws)
        assert started["type"] == "started" and started["seq"] == 6
        await start(ws, "Me too")
        while (busy := await receive(ws))["type"] != "error":
            assert busy["type"] in {"token", "heartbeat"}
        assert busy["code"] == "turn_in_progress"
        await ws.send(json.dumps({"type": "cancel"}))
        rest = await read_turn(ws)
        assert types(rest)[-2:] == ["usage", "done"]
        assert rest[-1]["status"] == "cancelled" and rest[-1]["finish_reason"] == "cancelled"
        assert await endless.wait_ended() in STOPPED

        # The connection still works.
        await start(ws, "Hello again")
        assert (await read_turn(ws))[-1]["status"] == "complete"

        await ws.send("x" * 5000)
        assert await closed_with(ws) == 1009


@pytest.mark.parametrize(
    "streaming_options", [{"send_buffer_events": 8, "slow_client_seconds": 1.0}], indirect=True
)
async def test_a_client_that_stops_reading_is_closed_4408_and_memory_stays_bounded(
    chat_gateway: ChatGateway,
) -> None:
    user = await signed_in_key(chat_gateway)
    flood = chat_gateway.llms.flood
    flood.pieces, flood.piece_chars = 12000, 8000  # 96 MB if nothing held it back
    sockets: set[ChatConnection] = gateway_state(chat_gateway.app).extras["chat_sockets"]
    tracemalloc.start()
    try:
        # A client with a small receive buffer that reads nothing while the answer streams.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
        sock.connect(("127.0.0.1", int(chat_gateway.url.rsplit(":", 1)[1])))
        async with ws_connect(chat_gateway, key=user.key, sock=sock, max_queue=2, compression=None) as ws:
            await hello(ws)
            [connection] = sockets
            await start(ws, "Tell me everything", llm="flood")
            async with asyncio.timeout(30):
                while not connection.queue.full():
                    await asyncio.sleep(0.01)
            # The answer pours in; the gateway holds a full buffer (backpressure) until it gives up.
            held = 0
            async with asyncio.timeout(30):
                while sockets:
                    held = max(held, gateway_memory())
                    await asyncio.sleep(0.1)
            # Reading again, the client finds what the network held, then the close.
            code = await closed_with(ws)
    finally:
        tracemalloc.stop()
    assert code == 4408
    assert connection.high_water <= 8
    whole = flood.pieces * flood.piece_chars
    assert held < 2 * 1024 * 1024, f"the gateway held {held / 1e6:.1f} MB of a {whole / 1e6:.0f} MB answer"
    # The turn was cancelled; the host, held back by the gateway (gRPC flow control), had streamed only
    # a small part of the answer.
    turn = connection.turn
    assert turn is not None and turn.conversation_id is not None
    stored = await wait_stored(chat_gateway, user, turn.conversation_id, "cancelled")
    assert 0 < len(stored["content"]) < whole / 4


def gateway_memory() -> int:
    """Bytes allocated now by Python code of the gateway's side: its routes and chat turn, Quart,
    Hypercorn and the WebSocket protocol (the host and the client live in this process too)."""
    gateway = [
        tracemalloc.Filter(True, f"*/{part}/*")
        for part in ("opentier/gateway", "quart", "hypercorn", "wsproto", "h11")
    ]
    return sum(
        stat.size for stat in tracemalloc.take_snapshot().filter_traces(gateway).statistics("filename")
    )


async def test_a_client_that_drops_mid_answer_cancels_the_turn(chat_gateway: ChatGateway) -> None:
    user = await signed_in_key(chat_gateway)
    endless = chat_gateway.llms.endless
    async with ws_connect(chat_gateway, key=user.key) as ws:
        await hello(ws)
        await start(ws, "Talk forever", llm="endless")
        started = await receive(ws)
        assert started["type"] == "started"
        for _ in range(3):
            assert (await receive(ws))["type"] == "token"
        assert ws.transport is not None
        ws.transport.abort()  # the network goes away: no close handshake

    assert await endless.wait_ended() in STOPPED
    stored = await wait_stored(chat_gateway, user, started["conversation_id"], "cancelled")
    assert stored["content"].startswith("tick tick tick")


async def test_shutting_the_gateway_down_closes_sockets_1001_and_cancels_their_turns(
    chat_gateway: ChatGateway, db_engine: AsyncEngine
) -> None:
    user = await signed_in_key(chat_gateway)
    async with ws_connect(chat_gateway, key=user.key) as ws:
        await hello(ws)
        await start(ws, "Talk forever", llm="endless")
        started = await receive(ws)
        assert (await receive(ws))["type"] == "token"
        stopping = asyncio.create_task(stop_served(chat_gateway.served))
        rest = await read_turn(ws)
        assert rest[-1]["status"] == "cancelled"
        assert await closed_with(ws) == 1001
        await stopping
    assert await chat_gateway.llms.endless.wait_ended() in STOPPED
    assert chat_gateway.served.task.done()
    # The partial answer was stored as cancelled (read with SQL: the gateway is gone).
    async with db_engine.connect() as conn:
        status = await conn.scalar(
            text("SELECT status FROM intelligence.messages WHERE id = :id"),
            {"id": uuid.UUID(started["assistant_message_id"])},
        )
    assert status == "cancelled"


async def test_a_host_that_dies_mid_answer_ends_the_turn_with_error_and_done(
    chat_gateway: ChatGateway,
) -> None:
    user = await signed_in_key(chat_gateway)
    async with ws_connect(chat_gateway, key=user.key) as ws:
        await hello(ws)
        await start(ws, "Talk forever", llm="endless")
        assert (await receive(ws))["type"] == "started"
        assert (await receive(ws))["type"] == "token"
        await chat_gateway.host.stop(grace=0)
        rest = await read_turn(ws)
        error, done = rest[-2], rest[-1]
        assert error["type"] == "error" and error["code"] == "host_unavailable" and error["retryable"]
        assert done["type"] == "done" and done["status"] == "failed" and done["finish_reason"] == "error"
        # The socket stays; the next start is refused while the host is down, without a `done`.
        await start(ws, "Still there?")
        refused = await receive(ws)
        assert refused["type"] == "error" and refused["code"] == "host_unavailable"
        assert refused["seq"] == done["seq"] + 1 and refused["retry_after"] > 0


class LedgerQuotas(TokenQuotas):
    """A token quota of ``limit`` tokens a day for everyone, kept in memory."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.charges: list[UsageCharge] = []

    @property
    def used(self) -> int:
        return sum(c.input_tokens + c.output_tokens for c in self.charges)

    async def tightest(self, principal: Principal) -> QuotaWindow | None:
        return QuotaWindow("user", "day", self.limit, self.used, "2030-01-01T00:00:00Z")

    async def check(self, principal: Principal) -> QuotaWindow | None:
        window = await self.tightest(principal)
        if window is not None and window.remaining == 0:
            raise QuotaExceededError("your daily token quota is used up", retry_after=60)
        return window

    def charge(self, principal: Principal, charge: UsageCharge) -> None:
        self.charges.append(charge)


async def test_a_token_quota_ends_a_turn_and_refuses_the_next(chat_gateway: ChatGateway) -> None:
    user = await signed_in_key(chat_gateway)
    quotas = LedgerQuotas(limit=10)
    gateway_state(chat_gateway.app).extras["quotas"] = quotas
    async with ws_connect(chat_gateway, key=user.key) as ws:
        await hello(ws)
        await start(ws, "Talk forever", llm="endless")
        turn = await read_turn(ws)
        assert types(turn)[-3:] == ["usage", "quota", "done"]
        quota = turn[-2]
        assert quota["limit"] == 10 and quota["used"] == 10 and quota["scope"] == "user"
        assert turn[-1]["status"] == "cancelled"
        # "tick " is estimated at 2 tokens: the fifth reaches the limit.
        assert answer(turn) == "tick " * 5
        [charged] = quotas.charges
        usage = turn[-3]
        assert not charged.estimated and charged.output_tokens == usage["output_tokens"]
        assert charged.message_id == turn[0]["assistant_message_id"]

        await start(ws, "Once more")
        refused = await receive(ws)
        assert refused["type"] == "error" and refused["code"] == "quota_exceeded"
        assert refused["retry_after"] == 60
        await ws.send(json.dumps({"type": "ping"}))
        assert await receive(ws) == {"type": "pong"}
    assert len(quotas.charges) == 1
