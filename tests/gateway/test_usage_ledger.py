"""The usage ledger's writer: charges are counted by quota checks the moment a turn is charged, written
to ``gateway.token_usage`` in batches by a background writer (one INSERT for many turns), retried while
the database refuses, and all written when the gateway stops gracefully. Real PostgreSQL, and the real
gateway under Hypercorn in front of the real host."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from opentier.config import LimitsSettings
from opentier.gateway.limits.quotas import EXTRAS_KEY, TokenQuotas, UsageCharge
from opentier.gateway.principal import ROLE_SCOPES, Principal
from opentier.gateway.state import gateway_state
from tests.gateway.served import stop_served
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

# -- helpers ---------------------------------------------------------------------------------------


def caller(tenant_id: str | None = None) -> Principal:
    return Principal(
        tenant_id=tenant_id or str(uuid.uuid4()),
        user_id=str(uuid.uuid4()),
        role="member",
        scopes=ROLE_SCOPES["member"],
    )


def usage(input_tokens: int, output_tokens: int) -> UsageCharge:
    return UsageCharge(input_tokens, output_tokens, "citing", "test-model", None, None)


async def rows_of(engine: AsyncEngine, *user_ids: str) -> list[dict[str, Any]]:
    """The ledger's rows of these users, oldest first."""
    async with engine.connect() as conn:
        found = await conn.execute(
            text(
                "SELECT user_id::text, message_id, llm, input_tokens, output_tokens, estimated "
                "FROM gateway.token_usage WHERE user_id = ANY(CAST(:users AS uuid[])) ORDER BY id"
            ),
            {"users": list(user_ids)},
        )
        return [dict(row._mapping) for row in found]


async def wait_for_rows(engine: AsyncEngine, count: int, *user_ids: str) -> list[dict[str, Any]]:
    """The users' rows once there are ``count`` of them (the writer's doing, nobody flushes)."""
    async with asyncio.timeout(10):
        while len(rows := await rows_of(engine, *user_ids)) < count:
            await asyncio.sleep(0.02)
    return rows


def quotas_of(gateway: ChatGateway) -> TokenQuotas:
    quotas = gateway_state(gateway.app).extras[EXTRAS_KEY]
    assert isinstance(quotas, TokenQuotas)
    return quotas


@pytest.fixture
def inserts(db_engine: AsyncEngine) -> Iterator[list[str]]:
    """The INSERT statements into the ledger that ``db_engine`` sends, as they are sent."""
    sent: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO GATEWAY.TOKEN_USAGE"):
            sent.append(statement)

    event.listen(db_engine.sync_engine, "before_cursor_execute", record)
    yield sent
    event.remove(db_engine.sync_engine, "before_cursor_execute", record)


def database_down() -> AsyncEngine:
    """An engine of a database that is down: nothing listens on its loopback port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return create_async_engine(f"postgresql+asyncpg://opentier@127.0.0.1:{port}/opentier")


async def chat(gateway: ChatGateway, user: ChatUser, turns: int, **fields: Any) -> list[list[dict[str, Any]]]:
    """``turns`` turns in a row on one WebSocket; the events of each."""
    found = []
    async with ws_connect(gateway, key=user.key) as ws:
        assert (await receive(ws))["type"] == "hello"
        for number in range(turns):
            await ws.send(json.dumps({"type": "start", "message": f"Question {number}", **fields}))
            found.append(await read_turn(ws))
    return found


def usage_of(turn: list[dict[str, Any]]) -> dict[str, Any]:
    [found] = [event for event in turn if event["type"] == "usage"]
    return found


# -- the writer, directly --------------------------------------------------------------------------


async def test_many_charges_are_counted_at_once_and_written_in_one_insert(
    db_engine: AsyncEngine, inserts: list[str]
) -> None:
    quotas = TokenQuotas(LimitsSettings(user_tokens_per_day=10_000), flush_seconds=0.05, flush_rows=1000)
    quotas.open(db_engine)
    try:
        alice = caller()
        bob = caller(alice.tenant_id)
        for number in range(300):
            quotas.charge(alice if number % 3 else bob, usage(number % 7, 2))
        assert quotas.unwritten == 300  # recorded without touching the database
        # A check counts them whether or not the writer got to them.
        [alices] = await quotas.windows(alice)
        expected_alice = sum(n % 7 + 2 for n in range(300) if n % 3)
        assert alices.used == expected_alice

        rows = await wait_for_rows(db_engine, 300, alice.user_id, bob.user_id)
        assert quotas.unwritten == 0
        assert len(inserts) == 1  # one statement for all 300 rows
        alice_rows = [row for row in rows if row["user_id"] == alice.user_id]
        assert len(alice_rows) == 200
        assert sum(row["input_tokens"] + row["output_tokens"] for row in alice_rows) == expected_alice
        assert [w.used for w in await quotas.windows(alice)] == [expected_alice]  # counted once, not twice
    finally:
        await quotas.close()


async def test_a_refused_write_is_retried_until_the_database_answers(
    db_engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    down = database_down()
    quotas = TokenQuotas(LimitsSettings(user_tokens_per_day=100))
    quotas.open(down)
    alice = caller()
    try:
        with caplog.at_level(logging.WARNING, logger="opentier.gateway.limits.quotas"):
            quotas.charge(alice, usage(60, 40))
            async with asyncio.timeout(10):
                while "retrying" not in caplog.text:
                    await asyncio.sleep(0.02)
        assert quotas.unwritten == 1
        assert await rows_of(db_engine, alice.user_id) == []
        # The database is back: the writer's next try writes the charge, kept meanwhile.
        quotas.engine = db_engine
        [row] = await wait_for_rows(db_engine, 1, alice.user_id)
        assert (row["input_tokens"], row["output_tokens"]) == (60, 40)
    finally:
        await quotas.close()
        await down.dispose()


async def test_a_stop_while_the_database_is_down_logs_every_charge_it_could_not_write(
    caplog: pytest.LogCaptureFixture,
) -> None:
    down = database_down()
    quotas = TokenQuotas(LimitsSettings())
    quotas.open(down)
    alice = caller()
    try:
        quotas.charge(alice, usage(11, 22))
        quotas.charge(alice, usage(33, 44))
        with caplog.at_level(logging.ERROR, logger="opentier.gateway.limits.quotas"):
            await quotas.close(timeout=0.5)
    finally:
        await down.dispose()
    lost = [record.getMessage() for record in caplog.records if "token usage lost" in record.getMessage()]
    assert len(lost) == 2
    assert f"user_id={alice.user_id}" in lost[0] and "input_tokens=11 output_tokens=22" in lost[0]
    assert "input_tokens=33 output_tokens=44" in lost[1]
    assert quotas.unwritten == 0


async def test_a_charge_of_yesterday_written_after_midnight_still_counts_in_the_month(
    db_engine: AsyncEngine,
) -> None:
    now = datetime(2031, 7, 14, 23, 59, 59, tzinfo=UTC)
    quotas = TokenQuotas(LimitsSettings(user_tokens_per_month=1000), db_engine, clock=lambda: now)
    alice = caller()
    quotas.charge(alice, usage(5, 5))
    await quotas.flush()
    quotas.charge(alice, usage(20, 20))  # recorded just before midnight, written after
    now = datetime(2031, 7, 15, 0, 0, 1, tzinfo=UTC)
    assert [w.used for w in await quotas.windows(alice)] == [50]  # the month's earlier days, now cached
    await quotas.flush()
    assert [w.used for w in await quotas.windows(alice)] == [50]  # not lost from the cached sum
    quotas.charge(alice, usage(1, 1))
    assert [w.used for w in await quotas.windows(alice)] == [52]
    await quotas.flush()
    assert len(await rows_of(db_engine, alice.user_id)) == 3


# -- through the gateway ---------------------------------------------------------------------------


async def test_every_turn_lands_in_the_ledger_with_the_tokens_of_its_usage_event(
    chat_gateway: ChatGateway, db_engine: AsyncEngine
) -> None:
    users = [await signed_in_key(chat_gateway) for _ in range(4)]
    turns_by_user = await asyncio.gather(*(chat(chat_gateway, user, 5) for user in users))

    ids = [user.user_id for user in users]
    rows = await wait_for_rows(db_engine, 20, *ids)  # written by the gateway's writer on its own
    assert len(rows) == 20
    for user, turns in zip(users, turns_by_user, strict=True):
        own = [row for row in rows if row["user_id"] == user.user_id]
        assert {row["message_id"] for row in own} == {turn[-1]["message_id"] for turn in turns}
        assert sum(row["input_tokens"] for row in own) == sum(usage_of(t)["input_tokens"] for t in turns)
        assert sum(row["output_tokens"] for row in own) == sum(usage_of(t)["output_tokens"] for t in turns)
        assert all(row["llm"] == "citing" and not row["estimated"] for row in own)
    assert quotas_of(chat_gateway).unwritten == 0


@pytest.mark.parametrize("limits_options", [{"user_tokens_per_day": 30}], indirect=True)
async def test_a_used_up_quota_refuses_before_the_charge_is_written_and_a_stop_writes_it(
    chat_gateway: ChatGateway, db_engine: AsyncEngine
) -> None:
    quotas = quotas_of(chat_gateway)
    quotas.flush_seconds = 120.0  # the writer holds what it gets until the gateway stops
    alice = await signed_in_key(chat_gateway)
    bob = await signed_in_key(chat_gateway)

    [alices] = await chat(chat_gateway, alice, 1, llm="endless")
    assert [event["type"] for event in alices][-3:] == ["usage", "quota", "done"]
    [bobs] = await chat(chat_gateway, bob, 1)
    assert bobs[-1]["status"] == "complete"
    assert quotas.unwritten == 2
    assert await rows_of(db_engine, alice.user_id, bob.user_id) == []

    # Alice's quota is used up by tokens the ledger does not hold yet: her next turn is refused.
    async with ws_connect(chat_gateway, key=alice.key) as ws:
        assert (await receive(ws))["type"] == "hello"
        await ws.send(json.dumps({"type": "start", "message": "And now?"}))
        refusal = await receive(ws)
    assert refusal["type"] == "error" and refusal["code"] == "quota_exceeded"
    over_http = await chat_gateway.api.post(
        "/v1/chat/stream", json={"message": "Over SSE?"}, headers=alice.key_headers
    )
    assert over_http.status_code == 429 and over_http.json()["error"]["code"] == "quota_exceeded"
    report = (await chat_gateway.api.get("/v1/usage", headers=alice.key_headers)).json()
    used = usage_of(alices)["input_tokens"] + usage_of(alices)["output_tokens"]
    assert report["day"]["total_tokens"] == used and report["day"]["turns"] == 1
    assert report["quotas"][0]["used"] == used and report["quotas"][0]["remaining"] == 0
    assert quotas.unwritten == 2

    # A graceful stop writes both turns before the database closes.
    await stop_served(chat_gateway.served)
    rows = await rows_of(db_engine, alice.user_id, bob.user_id)
    assert {(row["user_id"], row["input_tokens"], row["output_tokens"]) for row in rows} == {
        (alice.user_id, usage_of(alices)["input_tokens"], usage_of(alices)["output_tokens"]),
        (bob.user_id, usage_of(bobs)["input_tokens"], usage_of(bobs)["output_tokens"]),
    }
