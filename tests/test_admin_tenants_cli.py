"""``opentier admin tenants``: the operator's tenant commands against the real gateway under Hypercorn, the
real host and PostgreSQL, with an operator's API key from the environment."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
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

OPERATOR = "operators"
pytestmark = pytest.mark.auth(operator_tenant=OPERATOR)


class Admin:
    """Runs ``opentier admin ...`` with the gateway's URL and an API key in a clean environment."""

    def __init__(self, url: str, key: str, config: Path) -> None:
        self.env: dict[str, str | None] = {
            profile.PATH_ENV: str(config),
            profile.URL_ENV: url,
            profile.API_KEY_ENV: key,
        }

    async def __call__(self, *args: str, input: str | None = None) -> Result:
        runner = CliRunner()
        return await asyncio.to_thread(runner.invoke, main, ["admin", *args], input=input, env=self.env)


def ok(result: Result) -> str:
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


def as_json(result: Result) -> Any:
    return json.loads(ok(result))


async def admin_key(gateway: ChatGateway, tenant: str) -> str:
    """An admin-scoped API key of a new admin of ``tenant``."""
    email = f"admin-{uuid.uuid4().hex[:8]}@example.org"
    await create_admin(gateway.settings, email=email, password=PASSWORD, tenant=tenant)
    login = await gateway.api.post(
        "/v1/auth/login", json={"tenant": tenant, "email": email, "password": PASSWORD}
    )
    assert login.status_code == 200, login.text
    key = await gateway.api.post(
        "/v1/keys",
        json={"name": "ops", "scopes": ["admin", "read"]},
        headers={"Authorization": f"Bearer {login.json()['access_token']}"},
    )
    assert key.status_code == 201, key.text
    return str(key.json()["key"])


async def test_the_operator_creates_suspends_resumes_and_deletes_a_tenant(
    chat_gateway: ChatGateway, tmp_path: Path
) -> None:
    admin = Admin(chat_gateway.url, await admin_key(chat_gateway, OPERATOR), tmp_path / "remote.toml")
    name = f"acme-{uuid.uuid4().hex[:8]}"

    created = as_json(await admin("tenants", "create", name, "--json"))
    tenant_id = created["tenant"]["id"]
    assert created["tenant"]["status"] == "active"
    again = await admin("tenants", "create", name)
    assert again.exit_code != 0 and "already_exists" in again.output

    listed = as_json(await admin("tenants", "list", "--json"))
    assert {"id": tenant_id, "name": name, "status": "active", "users": 0} in [
        {key: tenant[key] for key in ("id", "name", "status", "users")} for tenant in listed
    ]
    shown = as_json(await admin("tenants", "show", name, "--json"))
    assert (shown["id"], shown["users"], shown["api_keys"]) == (tenant_id, 0, 0)
    assert shown["data"]["collections"] == 0

    assert f"tenant {name} is suspended" in ok(await admin("tenants", "suspend", name))
    suspended = as_json(await admin("tenants", "list", "--status", "suspended", "--json"))
    assert tenant_id in [tenant["id"] for tenant in suspended]
    assert f"tenant {name} is active" in ok(await admin("tenants", "resume", tenant_id))

    # The operator's own tenant cannot be suspended.
    refused = await admin("tenants", "suspend", OPERATOR)
    assert refused.exit_code != 0 and "operator tenant" in refused.output

    # Deleting shows what goes, then wants the name typed; a wrong answer changes nothing.
    wrong = await admin("tenants", "delete", name, input="not-it\n")
    assert wrong.exit_code == 1 and "not confirmed" in wrong.output
    assert "users" in wrong.output and "collections" in wrong.output
    assert as_json(await admin("tenants", "show", tenant_id, "--json"))["status"] == "active"

    deleted = ok(await admin("tenants", "delete", name, input=f"{name}\n"))
    assert f"deleted tenant {name}" in deleted
    gone = await admin("tenants", "show", tenant_id)
    assert gone.exit_code != 0 and "not_found" in gone.output

    # --admin-email invites the new tenant's first admin; --confirm NAME skips the prompt.
    other = f"other-{uuid.uuid4().hex[:8]}"
    invited = ok(await admin("tenants", "create", other, "--admin-email", "ada@other.example"))
    assert f"created tenant {other}" in invited and "invited ada@other.example as its admin" in invited
    assert as_json(await admin("tenants", "show", other, "--json"))["users"] == 1
    assert f"deleted tenant {other}" in ok(await admin("tenants", "delete", other, "--confirm", other))


async def test_another_tenants_admin_cannot_list_tenants(chat_gateway: ChatGateway, tmp_path: Path) -> None:
    tenant = f"tenant-{uuid.uuid4().hex[:8]}"
    admin = Admin(chat_gateway.url, await admin_key(chat_gateway, tenant), tmp_path / "remote.toml")
    result = await admin("tenants", "list")
    assert result.exit_code != 0 and "permission_denied" in result.output
