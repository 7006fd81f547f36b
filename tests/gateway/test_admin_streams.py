"""Open chat streams end when an admin takes the access away, against the real gateway under Hypercorn,
the real host (the endless test LLM) and the real PostgreSQL: a user disabled, a forced logout, a key
revoked (WebSocket and SSE), and — as another gateway would — a tenant suspended by a plain SQL update,
noticed by the turn's periodic re-check. Each stream ends with an `error` event carrying the code, after
`usage` and before `done`, and the host stores the partial answer as cancelled."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from opentier.gateway.chat.revocation import open_streams
from opentier.gateway.identity.bootstrap import create_admin
from opentier.gateway.state import gateway_state
from tests.gateway.conftest import PASSWORD
from tests.gateway.streaming import (  # noqa: F401 - fixtures
    ChatGateway,
    chat_gateway_fixture,
    chat_settings_fixture,
    host_chat_options_fixture,
    limits_options_fixture,
    receive,
    streaming_host_fixture,
    streaming_options_fixture,
    ws_connect,
)

STREAM = "/v1/chat/stream"
ENDLESS = {"message": "Go on forever.", "llm": "endless"}


@dataclass
class Tenant:
    """A fresh tenant: its admin and a member, signed in, the member with an API key."""

    name: str
    tenant_id: str
    admin: dict[str, str]
    member_id: str
    member_token: str
    member_key: str
    member_key_id: str


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


def engine_of(gateway: ChatGateway) -> AsyncEngine:
    engine = gateway_state(gateway.app).engine
    assert engine is not None
    return engine


async def new_tenant(gateway: ChatGateway) -> Tenant:
    api = gateway.api
    name = f"tenant-{uuid.uuid4().hex[:10]}"
    admin_email = f"admin-{uuid.uuid4().hex[:8]}@example.org"
    await create_admin(gateway.settings, email=admin_email, password=PASSWORD, tenant=name)
    login = await api.post(
        "/v1/auth/login", json={"tenant": name, "email": admin_email, "password": PASSWORD}
    )
    assert login.status_code == 200, login.text
    admin = bearer(login.json()["access_token"])
    email = f"member-{uuid.uuid4().hex[:8]}@example.org"
    created = await api.post(
        "/v1/users", json={"email": email, "password": PASSWORD, "role": "member"}, headers=admin
    )
    assert created.status_code == 201, created.text
    login = await api.post("/v1/auth/login", json={"tenant": name, "email": email, "password": PASSWORD})
    assert login.status_code == 200, login.text
    token = login.json()["access_token"]
    key = await api.post("/v1/keys", json={"name": "chat", "scopes": ["chat", "read"]}, headers=bearer(token))
    assert key.status_code == 201, key.text
    async with engine_of(gateway).connect() as conn:
        tenant_id = await conn.scalar(text("SELECT id FROM gateway.tenants WHERE name = :n"), {"n": name})
    return Tenant(
        name,
        str(tenant_id),
        admin,
        created.json()["id"],
        token,
        key.json()["key"],
        key.json()["id"],
    )


async def hello_and_start(ws: ClientConnection) -> list[dict[str, Any]]:
    """Greet, start an endless turn, and return its first events once a few tokens came."""
    greeting = await receive(ws)
    assert greeting["type"] == "hello"
    await ws.send(json.dumps({"type": "start", **ENDLESS}))
    events: list[dict[str, Any]] = []
    while sum(event["type"] == "token" for event in events) < 3:
        message = await receive(ws)
        if "seq" in message:
            events.append(message)
    return events


async def rest_and_close(ws: ClientConnection) -> tuple[list[dict[str, Any]], int | None]:
    """The events after what was read, up to the server's close, and its close code."""
    events: list[dict[str, Any]] = []
    async with asyncio.timeout(30):
        try:
            while True:
                message = json.loads(await ws.recv())
                if "seq" in message:
                    events.append(message)
        except ConnectionClosed as closed:
            return events, closed.rcvd.code if closed.rcvd is not None else None


def ending_of(events: list[dict[str, Any]]) -> list[str]:
    """The types after the last token."""
    kinds = [event["type"] for event in events]
    last_token = max((i for i, kind in enumerate(kinds) if kind == "token"), default=-1)
    return kinds[last_token + 1 :]


async def stored_answer(engine: AsyncEngine, message_id: str) -> tuple[str, str]:
    """(status, content) of the stored answer, once the host stored it as other than streaming."""
    async with asyncio.timeout(10):
        while True:
            async with engine.connect() as conn:
                row = (
                    await conn.execute(
                        text("SELECT status, content FROM intelligence.messages WHERE id = :id"),
                        {"id": message_id},
                    )
                ).one()
            if row[0] != "streaming":
                return str(row[0]), str(row[1])
            await asyncio.sleep(0.05)


async def ended_turn(
    gateway: ChatGateway, ws: ClientConnection, first: list[dict[str, Any]], code: str
) -> tuple[list[dict[str, Any]], int | None]:
    """Read the rest of a turn that an admin operation ended; check its last events."""
    rest, close_code = await rest_and_close(ws)
    events = first + rest
    assert ending_of(events) == ["usage", "error", "done"], [e["type"] for e in events]
    error, done = events[-2], events[-1]
    assert error["code"] == code and error["retryable"] is False and error["message"]
    assert done["status"] == "cancelled" and done["finish_reason"] == "cancelled"
    return events, close_code


async def test_disabling_a_user_ends_their_open_websocket_stream(
    chat_gateway: ChatGateway, db_engine: AsyncEngine
) -> None:
    tenant = await new_tenant(chat_gateway)
    async with ws_connect(chat_gateway, key=tenant.member_token) as ws:
        first = await hello_and_start(ws)
        changed = await chat_gateway.api.patch(
            f"/v1/users/{tenant.member_id}", json={"disabled": True}, headers=tenant.admin
        )
        assert changed.status_code == 200, changed.text
        events, close_code = await ended_turn(chat_gateway, ws, first, "account_disabled")
    # The connection's credential is dead: it is closed as a new connection would be refused.
    assert close_code == 4401
    status, content = await stored_answer(db_engine, first[0]["assistant_message_id"])
    streamed = "".join(event["text"] for event in events if event["type"] == "token")
    assert status == "cancelled" and content == streamed and content.startswith("tick tick tick")
    assert await chat_gateway.llms.endless.wait_ended() != []
    assert len(open_streams(chat_gateway.app)) == 0


async def test_a_forced_logout_ends_the_session_streams_and_leaves_api_key_streams(
    chat_gateway: ChatGateway, db_engine: AsyncEngine
) -> None:
    tenant = await new_tenant(chat_gateway)
    async with (
        ws_connect(chat_gateway, key=tenant.member_token) as by_token,
        ws_connect(chat_gateway, key=tenant.member_key) as by_key,
    ):
        first = await hello_and_start(by_token)
        await hello_and_start(by_key)
        logout = await chat_gateway.api.post(
            f"/v1/users/{tenant.member_id}/logout", json={}, headers=tenant.admin
        )
        assert logout.status_code == 200, logout.text
        assert logout.json()["sessions_ended"] == 1 and logout.json()["streams_ended"] == 1
        assert logout.json()["api_keys_revoked"] == []
        _, close_code = await ended_turn(chat_gateway, by_token, first, "session_ended")
        assert close_code == 4401
        # The API key was not revoked: its stream goes on.
        for _ in range(5):
            assert (await receive(by_key))["type"] == "token"
    assert (await stored_answer(db_engine, first[0]["assistant_message_id"]))[0] == "cancelled"
    # The session's token no longer works; the key still does.
    assert (
        await chat_gateway.api.client.get("/v1/auth/me", headers=bearer(tenant.member_token))
    ).status_code == 401
    assert (
        await chat_gateway.api.client.get("/v1/auth/me", headers=bearer(tenant.member_key))
    ).status_code == 200


async def test_revoking_an_api_key_ends_its_open_websocket_stream(
    chat_gateway: ChatGateway, db_engine: AsyncEngine
) -> None:
    tenant = await new_tenant(chat_gateway)
    async with ws_connect(chat_gateway, key=tenant.member_key) as ws:
        first = await hello_and_start(ws)
        revoked = await chat_gateway.api.delete(
            f"/v1/admin/keys/{tenant.member_key_id}", headers=tenant.admin
        )
        assert revoked.status_code == 200 and revoked.json()["state"] == "revoked", revoked.text
        _, close_code = await ended_turn(chat_gateway, ws, first, "api_key_revoked")
    assert close_code == 4401
    assert (await stored_answer(db_engine, first[0]["assistant_message_id"]))[0] == "cancelled"


async def test_a_forced_logout_that_revokes_keys_ends_an_sse_stream(
    chat_gateway: ChatGateway, db_engine: AsyncEngine
) -> None:
    tenant = await new_tenant(chat_gateway)
    client = chat_gateway.api.client
    events: list[dict[str, Any]] = []
    async with client.stream("POST", STREAM, json=ENDLESS, headers=bearer(tenant.member_key)) as response:
        assert response.status_code == 200
        logged_out = False
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                continue
            events.append(json.loads(line.removeprefix("data: ")))
            if not logged_out and sum(event["type"] == "token" for event in events) >= 3:
                logged_out = True
                logout = await chat_gateway.api.post(
                    f"/v1/users/{tenant.member_id}/logout",
                    json={"revoke_api_keys": True},
                    headers=tenant.admin,
                )
                assert logout.status_code == 200, logout.text
                assert logout.json()["api_keys_revoked"] == [tenant.member_key_id]
    assert ending_of(events) == ["usage", "error", "done"]
    assert events[-2]["code"] == "api_key_revoked" and events[-1]["status"] == "cancelled"
    assert [event["seq"] for event in events] == list(range(1, len(events) + 1))
    assert (await stored_answer(db_engine, events[0]["assistant_message_id"]))[0] == "cancelled"
    assert (
        await chat_gateway.api.client.get("/v1/auth/me", headers=bearer(tenant.member_key))
    ).status_code == 401


@pytest.mark.parametrize("streaming_options", [{"revalidate_seconds": 0.2}], indirect=True)
async def test_a_tenant_suspended_elsewhere_ends_the_stream_at_the_next_check(
    chat_gateway: ChatGateway, db_engine: AsyncEngine
) -> None:
    tenant = await new_tenant(chat_gateway)
    other = await new_tenant(chat_gateway)
    async with (
        ws_connect(chat_gateway, key=tenant.member_key) as ws,
        ws_connect(chat_gateway, key=other.member_key) as bystander,
    ):
        first = await hello_and_start(ws)
        await hello_and_start(bystander)
        # What another gateway's suspension leaves behind: only the row, no message to this gateway.
        async with db_engine.begin() as conn:
            await conn.execute(
                text("UPDATE gateway.tenants SET status = 'suspended' WHERE id = :id"),
                {"id": tenant.tenant_id},
            )
        events, close_code = await ended_turn(chat_gateway, ws, first, "tenant_suspended")
        assert "suspended" in events[-2]["message"]
        # Another tenant's stream goes on.
        for _ in range(5):
            assert (await receive(bystander))["type"] == "token"
    assert close_code == 4403
    assert (await stored_answer(db_engine, first[0]["assistant_message_id"]))[0] == "cancelled"


@pytest.mark.parametrize("streaming_options", [{"revalidate_seconds": 0.2}], indirect=True)
async def test_a_tenant_being_deleted_ends_the_stream_with_tenant_deleted(
    chat_gateway: ChatGateway, db_engine: AsyncEngine
) -> None:
    tenant = await new_tenant(chat_gateway)
    async with ws_connect(chat_gateway, key=tenant.member_token) as ws:
        first = await hello_and_start(ws)
        async with db_engine.begin() as conn:
            await conn.execute(
                text("UPDATE gateway.tenants SET status = 'deleting' WHERE id = :id"),
                {"id": tenant.tenant_id},
            )
        _, close_code = await ended_turn(chat_gateway, ws, first, "tenant_deleted")
    assert close_code == 4403


async def test_revoking_your_own_key_ends_the_streams_running_on_it(chat_gateway: ChatGateway) -> None:
    tenant = await new_tenant(chat_gateway)
    async with ws_connect(chat_gateway, key=tenant.member_key) as ws:
        first = await hello_and_start(ws)
        revoked = await chat_gateway.api.delete(
            f"/v1/keys/{tenant.member_key_id}", headers=bearer(tenant.member_token)
        )
        assert revoked.status_code == 200, revoked.text
        _, close_code = await ended_turn(chat_gateway, ws, first, "api_key_revoked")
    assert close_code == 4401


async def test_a_start_on_a_connection_whose_key_was_revoked_meanwhile_is_refused(
    chat_gateway: ChatGateway, db_engine: AsyncEngine
) -> None:
    tenant = await new_tenant(chat_gateway)
    asked = len(chat_gateway.llms.endless.requests)
    async with ws_connect(chat_gateway, key=tenant.member_key) as ws:
        assert (await receive(ws))["type"] == "hello"
        # Revoked while no turn runs (so no stream to end), by SQL as another gateway would.
        async with db_engine.begin() as conn:
            await conn.execute(
                text("UPDATE gateway.api_keys SET revoked_at = now() WHERE id = :id"),
                {"id": tenant.member_key_id},
            )
        await ws.send(json.dumps({"type": "start", **ENDLESS}))
        events, close_code = await rest_and_close(ws)
    # Refused before it started, as any request with that key: one error, no `done`, then closed.
    assert [event["type"] for event in events] == ["error"]
    assert events[0]["code"] == "unauthenticated" and "revoked" in events[0]["message"]
    assert close_code == 4401
    assert len(chat_gateway.llms.endless.requests) == asked  # the model was never asked


@pytest.mark.parametrize("host_chat_options", [{"llm": "endless"}], indirect=True)
async def test_the_openai_compatible_answer_ends_with_the_error_streamed_or_whole(
    chat_gateway: ChatGateway, db_engine: AsyncEngine
) -> None:
    tenant = await new_tenant(chat_gateway)
    client = chat_gateway.api.client
    body = {"model": "opentier", "stream": True, "messages": [{"role": "user", "content": "Go on forever."}]}
    chunks: list[Any] = []
    async with client.stream(
        "POST", "/v1/chat/completions", json=body, headers=bearer(tenant.member_key)
    ) as response:
        assert response.status_code == 200
        revoked = False
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                continue
            data = line.removeprefix("data: ")
            chunks.append(data if data == "[DONE]" else json.loads(data))
            if not revoked and len(chunks) >= 4:
                revoked = True
                answer = await chat_gateway.api.post(
                    f"/v1/users/{tenant.member_id}/logout",
                    json={"revoke_api_keys": True},
                    headers=tenant.admin,
                )
                assert answer.status_code == 200
    # The SDKs raise the error chunk; `[DONE]` still ends the stream.
    assert chunks[-1] == "[DONE]"
    assert chunks[-2] == {
        "error": {
            "message": "the API key this stream uses was revoked",
            "type": "authentication_error",
            "param": None,
            "code": "api_key_revoked",
        }
    }
    assert all("choices" in chunk for chunk in chunks[:-2])

    # Whole (not streamed): the answer is the error, with the status a new request would get.
    other = await new_tenant(chat_gateway)
    asked = len(chat_gateway.llms.endless.requests)
    whole = asyncio.create_task(
        client.post(
            "/v1/chat/completions", json={**body, "stream": False}, headers=bearer(other.member_token)
        )
    )
    await chat_gateway.llms.endless.wait_started(asked + 1)
    disabled = await chat_gateway.api.patch(
        f"/v1/users/{other.member_id}", json={"disabled": True}, headers=other.admin
    )
    assert disabled.status_code == 200
    refused = await whole
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "account_disabled"
    assert refused.json()["error"]["type"] == "authentication_error"


@pytest.mark.parametrize("streaming_options", [{"revalidate_seconds": 60.0}], indirect=True)
async def test_signing_out_ends_the_streams_of_the_session_at_once(chat_gateway: ChatGateway) -> None:
    """`POST /v1/auth/logout` ends the session's open streams then and there (``session_ended``), not
    at the next revalidation (a minute here)."""
    name = f"tenant-{uuid.uuid4().hex[:10]}"
    email = f"ada-{uuid.uuid4().hex[:8]}@example.org"
    await create_admin(chat_gateway.settings, email=email, password=PASSWORD, tenant=name)
    login = await chat_gateway.api.post(
        "/v1/auth/login", json={"tenant": name, "email": email, "password": PASSWORD}
    )
    assert login.status_code == 200, login.text
    tokens = login.json()
    async with ws_connect(chat_gateway, key=tokens["access_token"]) as ws:
        first = await hello_and_start(ws)
        logout = await chat_gateway.api.post(
            "/v1/auth/logout", json={"refresh_token": tokens["refresh_token"]}
        )
        assert logout.status_code == 204, logout.text
        async with asyncio.timeout(5):
            _, close_code = await ended_turn(chat_gateway, ws, first, "session_ended")
    assert close_code == 4401
