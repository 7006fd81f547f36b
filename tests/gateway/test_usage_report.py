"""``GET /v1/admin/usage``: after chats by two users with two keys, the report's tokens per user, key and
model equal the sums of the ``usage`` events they were streamed; costs follow ``[usage.prices]``; the CSV
export holds the same rows; members are refused; another tenant's usage never shows. Real PostgreSQL,
the real host and the real gateway under Hypercorn."""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
import pytest_asyncio
from openapi_core import OpenAPI

from opentier.config import ModelPrice, Settings, UsageSettings
from opentier.gateway.app import create_app
from opentier.gateway.identity.bootstrap import create_admin
from opentier.gateway.limits.quotas import EXTRAS_KEY, TokenQuotas
from opentier.gateway.state import gateway_state
from tests.gateway.conftest import PASSWORD
from tests.gateway.served import ServedAPI, start_served, stop_served
from tests.gateway.streaming import (  # noqa: F401 - fixtures
    ChatGateway,
    StreamingHost,
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

PRICES = {"citing": ModelPrice(input_per_million=Decimal("2.5"), output_per_million=Decimal("10"))}
REPORT = "/v1/admin/usage"


@pytest_asyncio.fixture(name="chat_gateway")
async def priced_gateway_fixture(
    chat_settings: Settings, streaming_host: StreamingHost
) -> AsyncIterator[ChatGateway]:
    """The served gateway of tests/gateway/streaming.py, with a price for the `citing` model only."""
    settings = chat_settings.model_copy(update={"usage": UsageSettings(currency="EUR", prices=PRICES)})
    served = await start_served(create_app(settings), settings)
    try:
        async with httpx.AsyncClient(base_url=served.url, timeout=30) as client:
            document = await client.get("/openapi.json")
            api = ServedAPI(client, OpenAPI.from_dict(json.loads(document.content)))
            yield ChatGateway(served, settings, api, streaming_host)
    finally:
        await stop_served(served)


async def chat(gateway: ChatGateway, key: str, turns: int, **fields: Any) -> list[dict[str, Any]]:
    """``turns`` turns on one WebSocket with ``key``; the ``usage`` event of each."""
    found = []
    async with ws_connect(gateway, key=key) as ws:
        assert (await receive(ws))["type"] == "hello"
        for number in range(turns):
            await ws.send(json.dumps({"type": "start", "message": f"Question {number}?", **fields}))
            [usage] = [event for event in await read_turn(ws) if event["type"] == "usage"]
            found.append(usage)
    return found


async def login(gateway: ChatGateway, tenant: str, email: str) -> dict[str, str]:
    signed = await gateway.api.post(
        "/v1/auth/login", json={"tenant": tenant, "email": email, "password": PASSWORD}
    )
    assert signed.status_code == 200, signed.text
    return {"Authorization": f"Bearer {signed.json()['access_token']}"}


async def new_key(gateway: ChatGateway, headers: dict[str, str], scopes: list[str]) -> tuple[str, str]:
    created = await gateway.api.post(
        "/v1/keys", json={"name": "usage test", "scopes": scopes}, headers=headers
    )
    assert created.status_code == 201, created.text
    return created.json()["key"], created.json()["id"]


async def flushed(gateway: ChatGateway) -> None:
    """Every charge of the turns so far is in the ledger (the writer would get there within 50 ms)."""
    quotas = gateway_state(gateway.app).extras[EXTRAS_KEY]
    assert isinstance(quotas, TokenQuotas)
    await quotas.flush()


def sums(usages: list[dict[str, Any]]) -> tuple[int, int, int]:
    return (
        sum(u["input_tokens"] for u in usages),
        sum(u["output_tokens"] for u in usages),
        len(usages),
    )


def row_sums(rows: list[dict[str, Any]]) -> tuple[int, int, int]:
    return (
        sum(r["input_tokens"] for r in rows),
        sum(r["output_tokens"] for r in rows),
        sum(r["turns"] for r in rows),
    )


def cost_of(usages: list[dict[str, Any]]) -> Decimal:
    price = PRICES["citing"]
    total = sum(
        (
            Decimal(u["input_tokens"]) * price.input_per_million
            + Decimal(u["output_tokens"]) * price.output_per_million
        )
        for u in usages
    )
    return (Decimal(total) / 1_000_000).quantize(Decimal("0.000001"))


async def report(gateway: ChatGateway, headers: dict[str, str], **params: str) -> list[dict[str, Any]]:
    """Every row of a report, following ``next_page_token``."""
    rows: list[dict[str, Any]] = []
    token = None
    while True:
        sent = params | ({"page_token": token} if token else {})
        answer = await gateway.api.get(REPORT, params=sent, headers=headers)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["currency"] == "EUR"
        rows += body["rows"]
        token = body["next_page_token"]
        if token is None:
            return rows


@dataclass
class Chatted:
    """Tenant A: Alice (a member, her key) and Bob (a member, his key) chatted; so did another tenant."""

    tenant_id: str
    admin: dict[str, str]
    alice_id: str
    alice_key_id: str
    bob_id: str
    bob_key_id: str
    alice_usage: list[dict[str, Any]]
    bob_citing: list[dict[str, Any]]
    bob_scripted: list[dict[str, Any]]


async def chats(gateway: ChatGateway) -> Chatted:
    alice = await signed_in_key(gateway)  # a member of a fresh tenant, with a key
    admin_email = f"boss-{uuid.uuid4().hex[:8]}@example.org"
    await create_admin(gateway.settings, email=admin_email, password=PASSWORD, tenant=alice.tenant)
    admin = await login(gateway, alice.tenant, admin_email)
    bob_email = f"bob-{uuid.uuid4().hex[:8]}@example.org"
    created = await gateway.api.post(
        "/v1/users", json={"email": bob_email, "password": PASSWORD, "role": "member"}, headers=admin
    )
    assert created.status_code == 201, created.text
    bob_key, bob_key_id = await new_key(gateway, await login(gateway, alice.tenant, bob_email), ["chat"])
    stranger = await signed_in_key(gateway)  # another tenant, chatting too

    alice_usage = await chat(gateway, alice.key, 2)
    bob_citing = await chat(gateway, bob_key, 1)
    bob_scripted = await chat(gateway, bob_key, 2, llm="scripted")
    await chat(gateway, stranger.key, 2)
    await flushed(gateway)
    assert {u["llm"] for u in alice_usage + bob_citing} == {"citing"}
    assert {u["llm"] for u in bob_scripted} == {"scripted"}
    return Chatted(
        alice.tenant_id,
        admin,
        alice.user_id,
        alice.key_id,
        created.json()["id"],
        bob_key_id,
        alice_usage,
        bob_citing,
        bob_scripted,
    )


async def test_the_report_sums_the_usage_events_streamed(chat_gateway: ChatGateway) -> None:
    gateway = chat_gateway
    chatted = await chats(gateway)
    admin, alice_usage, bob_citing, bob_scripted = (
        chatted.admin,
        chatted.alice_usage,
        chatted.bob_citing,
        chatted.bob_scripted,
    )
    bob_usage = bob_citing + bob_scripted

    by_user = await report(gateway, admin, group_by="user", page_size="1")  # one row a page
    assert {row["tenant_id"] for row in by_user} == {chatted.tenant_id}  # never the stranger's tenant
    assert Counter(row["user_id"] for row in by_user) == {chatted.alice_id: 1, chatted.bob_id: 1}  # one day
    [alice_row] = [row for row in by_user if row["user_id"] == chatted.alice_id]
    [bob_row] = [row for row in by_user if row["user_id"] == chatted.bob_id]
    assert row_sums([alice_row]) == sums(alice_usage)
    assert row_sums([bob_row]) == sums(bob_usage)
    assert alice_row["total_tokens"] == alice_row["input_tokens"] + alice_row["output_tokens"]
    assert Decimal(alice_row["cost"]) == cost_of(alice_usage)  # only priced turns
    assert bob_row["cost"] is None and bob_row["unpriced_turns"] == 2  # a scripted turn has no price
    assert alice_row["estimated_turns"] == bob_row["estimated_turns"] == 0

    by_key = await report(gateway, admin, group_by="api_key")
    assert {row["api_key_id"]: row_sums([row]) for row in by_key} == {
        chatted.alice_key_id: sums(alice_usage),
        chatted.bob_key_id: sums(bob_usage),
    }

    by_model = await report(gateway, admin, group_by="model", period="month")
    models = {(row["llm"], row["model"]): row for row in by_model}
    citing = [key for key in models if key[0] == "citing"]
    assert row_sums([models[key] for key in citing]) == sums(alice_usage + bob_citing)
    assert sum(Decimal(models[key]["cost"]) for key in citing) == cost_of(alice_usage + bob_citing)
    scripted = [models[key] for key in models if key[0] == "scripted"]
    assert row_sums(scripted) == sums(bob_scripted)
    assert all(row["cost"] is None for row in scripted)

    [tenant_row] = await report(gateway, admin, group_by="tenant", period="month")
    assert row_sums([tenant_row]) == sums(alice_usage + bob_usage)

    # The CSV export: the same rows, every one of them, with the currency.
    exported = await gateway.api.get(REPORT, params={"group_by": "user", "format": "csv"}, headers=admin)
    assert exported.status_code == 200, exported.text
    assert exported.headers["content-type"].startswith("text/csv")
    lines = list(csv.DictReader(io.StringIO(exported.text)))
    assert sorted(
        (line["user_id"], int(line["input_tokens"]), int(line["output_tokens"])) for line in lines
    ) == (sorted((row["user_id"], row["input_tokens"], row["output_tokens"]) for row in by_user))
    assert {line["user_id"]: line["cost"] for line in lines} == {
        chatted.alice_id: alice_row["cost"],
        chatted.bob_id: "",
    }
    assert {line["currency"] for line in lines} == {"EUR"}
    accepted = await gateway.api.get(REPORT, headers=admin | {"Accept": "text/csv"})
    assert accepted.headers["content-type"].startswith("text/csv")
    assert accepted.text == exported.text

    # Days before the first chat: nothing.
    assert await report(gateway, admin, **{"from": "2020-01-01", "to": "2020-01-31"}) == []


async def test_members_are_refused_and_bad_queries_are_invalid_requests(chat_gateway: ChatGateway) -> None:
    gateway = chat_gateway
    member = await signed_in_key(gateway, scopes=("chat", "read"))
    for headers in (member.headers, member.key_headers):
        refused = await gateway.api.get(REPORT, headers=headers)
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"]["code"] == "permission_denied"
    anonymous = await gateway.api.get(REPORT)
    assert anonymous.status_code == 401

    admin_email = f"boss-{uuid.uuid4().hex[:8]}@example.org"
    await create_admin(gateway.settings, email=admin_email, password=PASSWORD, tenant=member.tenant)
    admin = await login(gateway, member.tenant, admin_email)
    for params in (
        {"group_by": "planet"},
        {"from": "2026-02-01", "to": "2026-01-01"},
        {"page_token": "not-ours"},
    ):
        answer = await gateway.api.get(REPORT, params=params, headers=admin)
        assert answer.status_code == 400, (params, answer.text)
        assert answer.json()["error"]["code"] == "invalid_request"
