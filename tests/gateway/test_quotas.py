"""Token quotas: the usage ledger and its UTC periods against the real PostgreSQL, and chat turns over the
real WebSocket (and SSE) of the gateway under Hypercorn in front of the real host."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from websockets.asyncio.client import ClientConnection

from opentier.config import LimitsSettings
from opentier.errors import QuotaExceededError
from opentier.gateway.identity.bootstrap import create_admin
from opentier.gateway.limits.quotas import EXTRAS_KEY, TokenQuotas, UsageCharge, period_bounds
from opentier.gateway.principal import ROLE_SCOPES, Principal
from opentier.gateway.state import gateway_state
from tests.gateway.conftest import PASSWORD
from tests.gateway.streaming import (  # noqa: F401 - fixtures
    ChatGateway,
    ChatUser,
    chat_gateway_fixture,
    chat_settings_fixture,
    host_chat_options_fixture,
    limits_options_fixture,
    read_turn,
    receive,
    streaming_host_fixture,
    streaming_options_fixture,
    ws_connect,
)

# -- the ledger and its periods, directly ----------------------------------------------------------


class Clock:
    """What time the quotas think it is."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def at(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def caller(tenant_id: str | None = None) -> Principal:
    return Principal(
        tenant_id=tenant_id or str(uuid.uuid4()),
        user_id=str(uuid.uuid4()),
        role="member",
        scopes=ROLE_SCOPES["member"],
    )


def turn(tokens: int, output: int = 10) -> UsageCharge:
    return UsageCharge(tokens - output, output, "citing", "test-model", None, None)


async def charged(quotas: TokenQuotas, who: Principal, charge: UsageCharge) -> None:
    """Charge ``who`` and write it to the ledger, so that the periods are read from the database."""
    quotas.charge(who, charge)
    await quotas.flush()
    assert quotas.unwritten == 0


def test_periods_are_utc_days_and_calendar_months() -> None:
    new_york_evening = datetime(2031, 12, 31, 19, 0, tzinfo=timezone(timedelta(hours=-5)))  # 1 Jan UTC
    assert period_bounds("day", new_york_evening) == (at(2032, 1, 1), at(2032, 1, 2))
    assert period_bounds("month", new_york_evening) == (at(2032, 1, 1), at(2032, 2, 1))
    assert period_bounds("month", at(2031, 12, 15, 8)) == (at(2031, 12, 1), at(2032, 1, 1))
    assert period_bounds("month", at(2032, 2, 29, 23, 59)) == (at(2032, 2, 1), at(2032, 3, 1))


async def test_a_quota_counts_its_own_utc_period_and_refuses_until_it_resets(db_engine: AsyncEngine) -> None:
    clock = Clock(at(2031, 3, 31, 23))
    quotas = TokenQuotas(
        LimitsSettings(user_tokens_per_day=100, user_tokens_per_month=250), db_engine, clock=clock
    )
    alice = caller()
    for when, tokens in [
        (at(2031, 2, 28, 23, 59, 59), 1000),  # last month: never counted
        (at(2031, 3, 1), 60),
        (at(2031, 3, 30, 12), 70),
        (at(2031, 3, 31), 40),  # today, from midnight
    ]:
        clock.now = when
        await charged(quotas, alice, turn(tokens))
    clock.now = at(2031, 3, 31, 23)

    windows = {(w.scope, w.period): w for w in await quotas.windows(alice)}
    assert set(windows) == {("user", "day"), ("user", "month")}
    day, month = windows[("user", "day")], windows[("user", "month")]
    assert (day.used, day.remaining, day.resets_at) == (40, 60, "2031-04-01T00:00:00+00:00")
    assert (month.used, month.remaining, month.resets_at) == (170, 80, "2031-04-01T00:00:00+00:00")
    assert await quotas.tightest(alice) == day

    await charged(quotas, alice, turn(50))
    window = await quotas.check(alice)  # still 10 left today
    assert window is not None and (window.period, window.remaining) == ("day", 10)
    await charged(quotas, alice, turn(15))
    with pytest.raises(QuotaExceededError) as refused:
        await quotas.check(alice)
    assert refused.value.code == "quota_exceeded"
    assert refused.value.retry_after == 3600  # 23:00 → midnight UTC
    assert "daily token quota (100 tokens)" in refused.value.message

    # A new day in a new month: both periods start again.
    clock.now = at(2031, 4, 1, 0, 0, 1)
    window = await quotas.check(alice)
    assert window is not None and window.used == 0 and window.remaining == 100


async def test_the_usage_people_read_never_counts_a_charge_being_written_twice(
    db_engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The figures of the admins' limits view and of /v1/usage add the charges not yet written to the
    ledger's sums; a charge whose write commits between those two reads counted twice (an operator
    once saw 228 tokens for a turn of 114). They are now read with the writer held still."""
    quotas = TokenQuotas(LimitsSettings(user_tokens_per_day=10_000), db_engine)
    alice = caller()
    quotas.charge(alice, turn(114))
    committed, release = asyncio.Event(), asyncio.Event()
    insert = quotas._insert

    async def slow_insert(engine: AsyncEngine, batch: Any) -> None:
        await insert(engine, batch)  # in the ledger now, still counted as unwritten
        committed.set()
        await release.wait()

    monkeypatch.setattr(quotas, "_insert", slow_insert)
    flushing = asyncio.create_task(quotas.flush())
    await committed.wait()
    reading = asyncio.create_task(quotas.used(alice.tenant_id, alice.user_id))
    summary = asyncio.create_task(quotas.summary(alice))
    await asyncio.sleep(0.1)
    release.set()
    await flushing
    assert await reading == {"day": 114, "month": 114}
    day = (await summary).day
    assert day.input_tokens + day.output_tokens == 114 and day.turns == 1
    await quotas.close()


async def test_the_month_counts_earlier_days_and_today_as_the_days_go_by(db_engine: AsyncEngine) -> None:
    clock = Clock(at(2031, 5, 10, 9))
    quotas = TokenQuotas(LimitsSettings(tenant_tokens_per_month=1000), db_engine, clock=clock)
    alice = caller()
    bob = caller(alice.tenant_id)
    await charged(quotas, alice, turn(30))
    await charged(quotas, bob, turn(25))
    assert [w.used for w in await quotas.windows(alice)] == [55]

    clock.now = at(2031, 5, 11, 9)  # yesterday's turns now sit in the earlier days of the month
    assert [w.used for w in await quotas.windows(bob)] == [55]
    await charged(quotas, alice, turn(20))
    clock.now = at(2031, 5, 11, 10)
    assert [w.used for w in await quotas.windows(alice)] == [75]
    assert [w.used for w in await quotas.windows(bob)] == [75]


async def test_a_user_quota_spares_the_tenants_other_users_and_a_tenant_quota_stops_them(
    db_engine: AsyncEngine,
) -> None:
    clock = Clock(at(2031, 6, 1, 12))
    settings = LimitsSettings(user_tokens_per_day=50, tenant_tokens_per_day=80)
    quotas = TokenQuotas(settings, db_engine, clock=clock)
    alice = caller()
    bob = caller(alice.tenant_id)
    carol = caller()  # another tenant

    await charged(quotas, alice, turn(50))
    with pytest.raises(QuotaExceededError, match="your daily token quota"):
        await quotas.check(alice)
    bobs = await quotas.check(bob)
    assert bobs is not None and (bobs.scope, bobs.remaining) == ("tenant", 30)

    await charged(quotas, bob, turn(30))
    for who in (alice, bob):
        with pytest.raises(QuotaExceededError, match="your tenant's daily token quota"):
            await quotas.check(who)
    carols = await quotas.check(carol)
    assert carols is not None and carols.used == 0


async def test_without_quotas_nothing_is_read() -> None:
    quotas = TokenQuotas(LimitsSettings())  # no database at all
    assert not quotas.active
    assert await quotas.check(caller()) is None


# -- chat turns through the gateway ----------------------------------------------------------------


async def members_of_one_tenant(gateway: ChatGateway, count: int) -> list[ChatUser]:
    """``count`` signed-in members of a fresh tenant, each with an API key (chat, read)."""
    api = gateway.api
    tenant = f"tenant-{uuid.uuid4().hex[:10]}"
    admin_email = f"admin-{uuid.uuid4().hex[:8]}@example.org"
    await create_admin(gateway.settings, email=admin_email, password=PASSWORD, tenant=tenant)
    login = await api.post(
        "/v1/auth/login", json={"tenant": tenant, "email": admin_email, "password": PASSWORD}
    )
    admin_headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
    members = []
    for _ in range(count):
        email = f"user-{uuid.uuid4().hex[:8]}@example.org"
        created = await api.post(
            "/v1/users",
            json={"email": email, "password": PASSWORD, "role": "member", "display_name": "Member"},
            headers=admin_headers,
        )
        assert created.status_code == 201, created.text
        login = await api.post(
            "/v1/auth/login", json={"tenant": tenant, "email": email, "password": PASSWORD}
        )
        token = login.json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        me = (await api.get("/v1/auth/me", headers=headers)).json()
        key = await api.post(
            "/v1/keys", json={"name": "quota test", "scopes": ["chat", "read"]}, headers=headers
        )
        assert key.status_code == 201, key.text
        members.append(
            ChatUser(
                tenant,
                me["tenant"]["id"],
                me["user"]["id"],
                headers,
                token,
                key.json()["key"],
                key.json()["id"],
            )
        )
    return members


async def start(ws: ClientConnection, message: str, **fields: Any) -> None:
    await ws.send(json.dumps({"type": "start", "message": message, **fields}))


async def chat_turn(gateway: ChatGateway, user: ChatUser, **fields: Any) -> list[dict[str, Any]]:
    async with ws_connect(gateway, key=user.key) as ws:
        assert (await receive(ws))["type"] == "hello"
        await start(ws, "Tell me something", **fields)
        return await read_turn(ws)


async def refused_turn(gateway: ChatGateway, user: ChatUser) -> dict[str, Any]:
    async with ws_connect(gateway, key=user.key) as ws:
        assert (await receive(ws))["type"] == "hello"
        await start(ws, "And now?")
        refusal = await receive(ws)
        await ws.send(json.dumps({"type": "ping"}))
        assert await receive(ws) == {"type": "pong"}  # the connection stays
    return refusal


async def ledger(gateway: ChatGateway, engine: AsyncEngine, user_id: str) -> list[dict[str, Any]]:
    """The user's rows of the ledger, once the gateway's writer has written what it recorded."""
    quotas = gateway_state(gateway.app).extras[EXTRAS_KEY]
    assert isinstance(quotas, TokenQuotas)
    await quotas.flush()
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT tenant_id::text, api_key_id::text, conversation_id, message_id, llm, input_tokens, "
                "output_tokens, estimated FROM gateway.token_usage WHERE user_id = CAST(:user AS uuid) "
                "ORDER BY id"
            ),
            {"user": user_id},
        )
        return [dict(row._mapping) for row in rows]


def next_utc_midnight() -> datetime:
    return period_bounds("day", datetime.now(UTC))[1]


@pytest.mark.parametrize("limits_options", [{"user_tokens_per_day": 30}], indirect=True)
async def test_a_users_daily_quota_ends_the_turn_is_charged_and_refuses_the_next(
    chat_gateway: ChatGateway, db_engine: AsyncEngine
) -> None:
    alice, bob = await members_of_one_tenant(chat_gateway, 2)

    events = await chat_turn(chat_gateway, alice, llm="endless")
    types = [event["type"] for event in events]
    assert types[0] == "started" and types[-3:] == ["usage", "quota", "done"]
    quota, done, usage = events[-2], events[-1], events[-3]
    assert (quota["scope"], quota["period"], quota["limit"], quota["used"]) == ("user", "day", 30, 30)
    assert datetime.fromisoformat(quota["resets_at"]) == next_utc_midnight()
    assert done["status"] == "cancelled"

    # The ledger holds the turn, with the host's counts as the usage event told them.
    [row] = await ledger(chat_gateway, db_engine, alice.user_id)
    assert (row["input_tokens"], row["output_tokens"]) == (usage["input_tokens"], usage["output_tokens"])
    assert row["estimated"] is False and row["llm"] == "endless"
    assert row["tenant_id"] == alice.tenant_id and row["api_key_id"] == alice.key_id
    assert row["conversation_id"] == events[0]["conversation_id"]
    assert row["message_id"] == events[0]["assistant_message_id"] == done["message_id"]

    # The next turn is refused: over the WebSocket (the connection stays), and over HTTP with Retry-After.
    refusal = await refused_turn(chat_gateway, alice)
    assert refusal["type"] == "error" and refusal["code"] == "quota_exceeded" and "seq" in refusal
    assert 0 < refusal["retry_after"] <= 86400
    over_http = await chat_gateway.api.post(
        "/v1/chat/stream", json={"message": "And over SSE?"}, headers=alice.key_headers
    )
    assert over_http.status_code == 429, over_http.text
    assert over_http.json()["error"]["code"] == "quota_exceeded"
    seconds_to_midnight = (next_utc_midnight() - datetime.now(UTC)).total_seconds()
    assert abs(int(over_http.headers["Retry-After"]) - seconds_to_midnight) <= 5
    assert len(await ledger(chat_gateway, db_engine, alice.user_id)) == 1  # refused turns cost nothing

    # Bob, of the same tenant, still chats.
    bobs = await chat_turn(chat_gateway, bob)
    assert bobs[-1]["status"] == "complete" and "quota" not in [event["type"] for event in bobs]

    # Alice sees her usage and her quota.
    report = await chat_gateway.api.get("/v1/usage", headers=alice.key_headers)
    assert report.status_code == 200, report.text
    body = report.json()
    total = usage["input_tokens"] + usage["output_tokens"]
    assert body["day"]["total_tokens"] == body["month"]["total_tokens"] == total
    assert body["day"]["turns"] == 1 and body["day"]["output_tokens"] == usage["output_tokens"]
    [limit] = body["quotas"]
    assert (limit["scope"], limit["period"], limit["limit"], limit["used"], limit["remaining"]) == (
        "user",
        "day",
        30,
        total,
        0,
    )


@pytest.mark.parametrize("limits_options", [{"tenant_tokens_per_month": 30}], indirect=True)
async def test_a_tenants_monthly_quota_stops_every_user_of_the_tenant(
    chat_gateway: ChatGateway, db_engine: AsyncEngine
) -> None:
    alice, bob = await members_of_one_tenant(chat_gateway, 2)
    [outsider] = await members_of_one_tenant(chat_gateway, 1)

    events = await chat_turn(chat_gateway, alice, llm="endless")
    quota = events[-2]
    assert quota["type"] == "quota" and (quota["scope"], quota["period"]) == ("tenant", "month")
    assert datetime.fromisoformat(quota["resets_at"]) == period_bounds("month", datetime.now(UTC))[1]

    for user in (alice, bob):
        refusal = await refused_turn(chat_gateway, user)
        assert refusal["code"] == "quota_exceeded" and "tenant" in refusal["message"]
    assert await ledger(chat_gateway, db_engine, bob.user_id) == []

    bobs_usage = (await chat_gateway.api.get("/v1/usage", headers=bob.key_headers)).json()
    assert bobs_usage["day"]["total_tokens"] == 0  # his own usage: none
    [limit] = bobs_usage["quotas"]
    assert limit["scope"] == "tenant" and limit["remaining"] == 0

    elsewhere = await chat_turn(chat_gateway, outsider)
    assert elsewhere[-1]["status"] == "complete"
