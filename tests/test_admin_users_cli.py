"""``opentier admin users|keys|audit|health`` against the real gateway under Hypercorn, the real host
and PostgreSQL, through click's runner (in a thread: the served gateway shares the test's event loop),
with a tenant admin's API key: list and change users, disable and log out by force (the member's
credentials stop working), list and revoke keys, read the audit log page by page, and see the health."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest_asyncio
from click.testing import CliRunner, Result

from opentier.cli import main
from opentier.client import profile
from opentier.gateway.identity.bootstrap import create_admin
from tests.gateway.conftest import PASSWORD, gateway_settings  # noqa: F401 - fixture
from tests.gateway.streaming import (  # noqa: F401 - fixtures
    ChatGateway,
    chat_gateway_fixture,
    chat_settings_fixture,
    host_chat_options_fixture,
    limits_options_fixture,
    streaming_host_fixture,
    streaming_options_fixture,
)


@dataclass
class Team:
    tenant: str
    admin_key: str
    member_email: str
    member_id: str
    member_token: str
    member_key: str
    member_key_id: str


async def new_team(gateway: ChatGateway) -> Team:
    """A tenant with an admin (and its admin-scoped API key) and a member (signed in, with a key)."""
    client = gateway.api.client
    tenant = f"tenant-{uuid.uuid4().hex[:10]}"
    admin_email = f"admin-{uuid.uuid4().hex[:8]}@example.org"
    await create_admin(gateway.settings, email=admin_email, password=PASSWORD, tenant=tenant)
    login = await client.post(
        "/v1/auth/login", json={"tenant": tenant, "email": admin_email, "password": PASSWORD}
    )
    admin = {"Authorization": f"Bearer {login.json()['access_token']}"}
    admin_key = await client.post(
        "/v1/keys", json={"name": "cli", "scopes": ["admin", "read", "chat", "ingest"]}, headers=admin
    )
    assert admin_key.status_code == 201, admin_key.text
    email = f"Member-{uuid.uuid4().hex[:8]}@example.org"
    created = await client.post("/v1/users", json={"email": email, "password": PASSWORD}, headers=admin)
    assert created.status_code == 201, created.text
    login = await client.post("/v1/auth/login", json={"tenant": tenant, "email": email, "password": PASSWORD})
    token = login.json()["access_token"]
    key = await client.post(
        "/v1/keys", json={"name": "laptop", "scopes": ["read"]}, headers={"Authorization": f"Bearer {token}"}
    )
    assert key.status_code == 201, key.text
    return Team(
        tenant,
        admin_key.json()["key"],
        email,
        created.json()["id"],
        token,
        key.json()["key"],
        key.json()["id"],
    )


class Admin:
    """Runs ``opentier admin ...`` with a key in the environment and no config file of the user's."""

    def __init__(self, gateway: ChatGateway, key: str, config: Path) -> None:
        self.env: dict[str, str | None] = {
            profile.PATH_ENV: str(config),
            profile.URL_ENV: gateway.url,
            profile.API_KEY_ENV: key,
        }

    async def __call__(self, *args: str, input: str | None = None) -> Result:
        runner = CliRunner()
        return await asyncio.to_thread(runner.invoke, main, ["admin", *args], input=input, env=self.env)

    async def ok(self, *args: str) -> str:
        result = await self(*args)
        assert result.exit_code == 0, (args, result.output, result.exception)
        return result.output

    async def json(self, *args: str) -> Any:
        return json.loads(await self.ok(*args, "--json"))


async def status_with(gateway: ChatGateway, credential: str) -> int:
    response = await gateway.api.client.get("/v1/keys", headers={"Authorization": f"Bearer {credential}"})
    return response.status_code


@pytest_asyncio.fixture
async def team(chat_gateway: ChatGateway) -> Team:
    return await new_team(chat_gateway)


async def test_an_admin_manages_users_from_the_command_line(
    chat_gateway: ChatGateway, team: Team, tmp_path: Path
) -> None:
    admin = Admin(chat_gateway, team.admin_key, tmp_path / "remote.toml")

    listed = await admin.json("users", "list")
    assert team.member_email in [user["email"] for user in listed]
    table = await admin.ok("users", "list")
    assert "2 user(s)" in table and "member" in table and "admin" in table
    # A user is named by its email (in any case) or its id.
    shown = await admin.json("users", "show", team.member_email.lower())
    assert shown["id"] == team.member_id and shown["role"] == "member"

    assert "is now admin" in await admin.ok("users", "role", team.member_email, "admin")
    assert (await admin.json("users", "show", team.member_id))["role"] == "admin"
    await admin.ok("users", "role", team.member_id, "member")

    assert "disabled" in await admin.ok("users", "disable", team.member_email)
    assert await status_with(chat_gateway, team.member_key) == 401
    await admin.ok("users", "enable", team.member_email)
    assert await status_with(chat_gateway, team.member_key) == 200

    logged_out = await admin.json("users", "logout", team.member_email, "--revoke-api-keys")
    assert logged_out["api_keys_revoked"] == [team.member_key_id]
    assert await status_with(chat_gateway, team.member_key) == 401

    refused = await admin("users", "delete", team.member_email, "--confirm", "someone-else@example.org")
    assert refused.exit_code == 1 and "nothing was changed" in refused.output
    assert (await admin.json("users", "show", team.member_id))["email"] == team.member_email
    asked = await admin("users", "delete", team.member_id, input=f"{team.member_email}\n")
    assert asked.exit_code == 0, asked.output
    assert team.member_email not in [user["email"] for user in await admin.json("users", "list")]

    # A member's key is refused with the gateway's code and exit status 2.
    other = await new_team(chat_gateway)
    member = Admin(chat_gateway, other.member_key, tmp_path / "remote.toml")
    denied = await member("users", "list")
    assert denied.exit_code == 2 and "permission_denied" in denied.output and "403" in denied.output


async def test_an_admin_lists_and_revokes_keys_and_reads_the_audit_log(
    chat_gateway: ChatGateway, team: Team, tmp_path: Path
) -> None:
    admin = Admin(chat_gateway, team.admin_key, tmp_path / "remote.toml")

    keys = await admin.json("keys", "list")
    assert {key["name"] for key in keys} == {"cli", "laptop"}
    assert all(team.member_key not in json.dumps(key) for key in keys)
    theirs = await admin.json("keys", "list", "--user", team.member_email)
    assert [key["id"] for key in theirs] == [team.member_key_id]
    assert len(await admin.json("keys", "list", "--limit", "1")) == 1
    table = await admin.ok("keys", "list", "--user", team.member_id)
    assert "1 API key(s)" in table and "laptop" in table

    assert "revoked laptop" in await admin.ok("keys", "revoke", team.member_key_id)
    assert await status_with(chat_gateway, team.member_key) == 401
    assert await admin.json("keys", "list", "--user", team.member_id, "--active") == []
    [inactive] = await admin.json("keys", "list", "--inactive")
    assert inactive["id"] == team.member_key_id and inactive["state"] == "revoked"

    await admin.ok("users", "disable", team.member_email)
    await admin.ok("users", "enable", team.member_email)
    events = (await admin.json("audit", "--action", "user."))["events"]
    assert [event["action"] for event in events][:3] == ["user.enabled", "user.disabled", "user.created"]
    revoked = (await admin.json("audit", "--action", "api_key.revoked"))["events"]
    assert [event["target"] for event in revoked] == [f"api_key:{team.member_key_id}"]

    # One event a page: the printed token goes on where the listing stopped.
    first = await admin.json("audit", "--action", "user.", "--limit", "1")
    assert [event["action"] for event in first["events"]] == ["user.enabled"] and first["next_page_token"]
    shown = await admin.ok("audit", "--action", "user.", "--limit", "1")
    assert "more: --page-token" in shown and "user.enabled" in shown
    second = await admin.json(
        "audit", "--action", "user.", "--limit", "1", "--page-token", first["next_page_token"]
    )
    assert [event["action"] for event in second["events"]] == ["user.disabled"]
    assert (await admin.json("audit", "--since", "2999-01-01"))["events"] == []

    health = await admin.json("health")
    assert list(health["hosts"].values()) == ["SERVING"]
    assert any(
        component["name"] == "endless" for plugin in health["plugins"] for component in plugin["components"]
    )
    assert "SERVING" in await admin.ok("health")
