"""Mail notices against the real gateway (Hypercorn), host, PostgreSQL and a real SMTP server (aiosmtpd)
on loopback: a new API key is mailed to its owner; a used-up token quota is mailed once per period, to
the user (user quota) or to the tenant's admins (tenant quota), however many requests it refuses."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

import httpx
import pytest
import pytest_asyncio
from openapi_core import OpenAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from opentier.config import MailSettings, Settings
from opentier.gateway.app import create_app
from opentier.gateway.identity.bootstrap import create_admin
from tests.gateway.conftest import PASSWORD
from tests.gateway.helpers import scalar
from tests.gateway.mailbox import (
    PUBLIC_URL,
    SENDER,
    Inbox,
    free_port,
    mail_gateway,
    new_admin,
    smtp_server,
    text_of,
)
from tests.gateway.served import (
    ServedAPI,
    running_host_fixture,
    served_settings_fixture,
    start_served,
    stop_served,
)
from tests.gateway.streaming import (  # noqa: F401 - fixtures
    ChatGateway,
    StreamingHost,
    chat_settings_fixture,
    host_chat_options_fixture,
    limits_options_fixture,
    read_turn,
    receive,
    streaming_host_fixture,
    streaming_options_fixture,
    ws_connect,
)

__all__ = ["running_host_fixture", "served_settings_fixture"]

KEY_SUBJECT = "A new API key for your OpenTier account"
USER_QUOTA_SUBJECT = "Your daily OpenTier token quota is used up"


def subjects(messages: list[EmailMessage]) -> list[str]:
    return [str(message["Subject"]) for message in messages]


async def test_a_new_api_key_is_mailed_to_its_owner(served_settings: Settings) -> None:
    port = free_port()
    async with smtp_server(port) as inbox, mail_gateway(served_settings, port) as api:
        tenant, admin = await new_admin(served_settings, api)
        admin_email = (await api.get("/v1/auth/me", headers=admin)).json()["user"]["email"]
        own = await api.post("/v1/keys", json={"name": "laptop", "scopes": ["read", "chat"]}, headers=admin)
        assert own.status_code == 201
        [mail] = await inbox.wait(1)
        assert inbox.recipients == [[admin_email]]
        assert mail["Subject"] == KEY_SUBJECT and mail["From"] == SENDER
        body = text_of(mail)
        assert "laptop" in body and own.json()["prefix"] in body
        [scopes] = [line for line in body.splitlines() if line.strip().startswith("scopes:")]
        assert sorted(scopes.split(":", 1)[1].strip().split(", ")) == ["chat", "read"]
        assert "by you, from 127.0.0.1" in body and "If this was not you, revoke the key" in body
        assert own.json()["key"] not in body  # the secret itself is never mailed
        rich = mail.get_body(preferencelist=("html",))
        assert rich is not None and own.json()["prefix"] in rich.get_content()

        member = f"member-{uuid.uuid4().hex[:8]}@example.org"
        created = await api.post(
            "/v1/users", json={"email": member, "password": PASSWORD, "display_name": "Mia"}, headers=admin
        )
        made = await api.post(
            f"/v1/users/{created.json()['id']}/keys", json={"name": "ci", "scopes": ["read"]}, headers=admin
        )
        assert made.status_code == 201
        await inbox.wait(2)
        [for_member] = inbox.to(member)
        assert "Hello Mia," in text_of(for_member) and f"by {admin_email}" in text_of(for_member)

    # With mail.notices off, a new key sends nothing.
    port = free_port()
    async with smtp_server(port) as quiet, mail_gateway(served_settings, port, notices=False) as api:
        _, admin = await new_admin(served_settings, api, tenant)
        assert (
            await api.post("/v1/keys", json={"name": "x", "scopes": ["read"]}, headers=admin)
        ).status_code == 201
        await asyncio.sleep(0.5)
        assert quiet.messages == []


# -- quotas ----------------------------------------------------------------------------------------


@dataclass
class Mailing:
    gateway: ChatGateway
    inbox: Inbox


@pytest_asyncio.fixture(name="mailing")
async def mailing_fixture(chat_settings: Settings, streaming_host: StreamingHost) -> AsyncIterator[Mailing]:
    """The chat gateway mailing to an SMTP server on loopback."""
    port = free_port()
    mail = MailSettings(mode="smtp", host="127.0.0.1", port=port, starttls=False, public_url=PUBLIC_URL)
    settings = chat_settings.model_copy(update={"mail": mail})
    async with smtp_server(port) as inbox:
        served = await start_served(create_app(settings), settings)
        try:
            async with httpx.AsyncClient(base_url=served.url, timeout=30) as client:
                document = await client.get("/openapi.json")
                api = ServedAPI(client, OpenAPI.from_dict(json.loads(document.content)))
                yield Mailing(ChatGateway(served, settings, api, streaming_host), inbox)
        finally:
            await stop_served(served)


@dataclass
class Person:
    email: str
    user_id: str
    key: str


async def tenant_with_members(gateway: ChatGateway, count: int) -> tuple[str, list[Person]]:
    """A fresh tenant's admin address, and ``count`` members each with an API key (chat, read)."""
    api = gateway.api
    tenant = f"tenant-{uuid.uuid4().hex[:10]}"
    admin_email = f"admin-{uuid.uuid4().hex[:8]}@example.org"
    await create_admin(gateway.settings, email=admin_email, password=PASSWORD, tenant=tenant)
    login = await api.post(
        "/v1/auth/login", json={"tenant": tenant, "email": admin_email, "password": PASSWORD}
    )
    admin = {"Authorization": f"Bearer {login.json()['access_token']}"}
    people = []
    for _ in range(count):
        address = f"user-{uuid.uuid4().hex[:8]}@example.org"
        created = await api.post("/v1/users", json={"email": address, "password": PASSWORD}, headers=admin)
        assert created.status_code == 201, created.text
        key = await api.post(
            f"/v1/users/{created.json()['id']}/keys",
            json={"name": "quota", "scopes": ["chat", "read"]},
            headers=admin,
        )
        assert key.status_code == 201, key.text
        people.append(Person(address, created.json()["id"], key.json()["key"]))
    return admin_email, people


async def turn(gateway: ChatGateway, person: Person, **fields: Any) -> dict[str, Any]:
    """One chat turn over the WebSocket: its last event (``done``), or the refusal."""
    async with ws_connect(gateway, key=person.key) as ws:
        assert (await receive(ws))["type"] == "hello"
        await ws.send(json.dumps({"type": "start", "message": "Tell me something", **fields}))
        first = await receive(ws)
        if first["type"] == "error":
            return first
        events = [first, *await read_turn(ws)]
        return events[-1]


async def wait_for(inbox: Inbox, address: str, subject: str, within: float = 10) -> list[EmailMessage]:
    for _ in range(int(within / 0.05)):
        found = [m for m in inbox.to(address) if m["Subject"] == subject]
        if found:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {subject!r} mail for {address}: {subjects(inbox.to(address))}")


@pytest.mark.parametrize("limits_options", [{"user_tokens_per_day": 30}], indirect=True)
async def test_a_used_up_user_quota_is_mailed_once_per_period(
    mailing: Mailing, db_engine: AsyncEngine
) -> None:
    gateway, inbox = mailing.gateway, mailing.inbox
    admin_email, [alice, bob] = await tenant_with_members(gateway, 2)

    done = await turn(gateway, alice, llm="endless")
    assert done["type"] == "done"
    for _ in range(3):
        refusal = await turn(gateway, alice)
        assert refusal["type"] == "error" and refusal["code"] == "quota_exceeded"

    [notice] = await wait_for(inbox, alice.email, USER_QUOTA_SUBJECT)
    body = text_of(notice)
    assert "daily token quota" in body and "of 30 tokens" in body
    today = datetime.now(UTC).date().isoformat()
    stored = await scalar(
        db_engine,
        "SELECT count(*) FROM gateway.notices_sent WHERE kind = 'quota_exhausted' AND subject = :s AND period = :p",
        s=f"user:{alice.user_id}:day",
        p=today,
    )
    assert stored == 1
    await asyncio.sleep(1.0)  # later refusals (and their listeners) have had time to mail again: none did
    assert subjects(inbox.to(alice.email)).count(USER_QUOTA_SUBJECT) == 1
    assert USER_QUOTA_SUBJECT not in subjects(inbox.to(bob.email))
    assert not [s for s in subjects(inbox.to(admin_email)) if "quota" in s]


@pytest.mark.parametrize("limits_options", [{"tenant_tokens_per_day": 30}], indirect=True)
async def test_a_used_up_tenant_quota_is_mailed_to_the_tenants_admins(mailing: Mailing) -> None:
    gateway, inbox = mailing.gateway, mailing.inbox
    admin_email, [alice, bob] = await tenant_with_members(gateway, 2)

    assert (await turn(gateway, alice, llm="endless"))["type"] == "done"
    assert (await turn(gateway, bob))["code"] == "quota_exceeded"
    subject = next(s for s in subjects(await wait_for_any(inbox, admin_email)) if "token quota of" in s)
    assert subject.startswith("The daily OpenTier token quota of tenant-")
    await asyncio.sleep(1.0)
    assert [s for s in subjects(inbox.to(admin_email)) if "quota" in s] == [subject]
    for member in (alice, bob):
        assert not [s for s in subjects(inbox.to(member.email)) if "quota" in s]


async def wait_for_any(inbox: Inbox, address: str, within: float = 10) -> list[EmailMessage]:
    for _ in range(int(within / 0.05)):
        found = [m for m in inbox.to(address) if "quota" in str(m["Subject"])]
        if found:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"no quota mail for {address}: {subjects(inbox.to(address))}")
