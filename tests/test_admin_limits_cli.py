"""``opentier admin limits show|set|clear`` against the real gateway, host and PostgreSQL, through click's
runner (in a thread: the served gateway shares the test's event loop): a tenant's admin sets, shows and
clears a user's limits, which take effect on the user's next request; a tenant's limits need an
operator."""

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

OPERATOR_TENANT = f"operator-{uuid.uuid4().hex[:8]}"
pytestmark = [
    pytest.mark.auth(operator_tenant=OPERATOR_TENANT),
    pytest.mark.parametrize(
        "limits_options",
        [{"per_api_key": "100 per minute", "per_user": "100 per minute", "per_address": ""}],
        indirect=True,
    ),
]


class Admin:
    """Runs ``opentier admin limits ...`` as one admin (its API key in the environment)."""

    def __init__(self, gateway: ChatGateway, key: str, config: Path) -> None:
        self.env: dict[str, str | None] = {
            profile.PATH_ENV: str(config),
            profile.URL_ENV: gateway.url,
            profile.API_KEY_ENV: key,
        }

    async def __call__(self, *args: str) -> Result:
        runner = CliRunner()
        return await asyncio.to_thread(runner.invoke, main, ["admin", "limits", *args], env=self.env)


def ok(result: Result) -> str:
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


async def signed_in(gateway: ChatGateway, tenant: str, email: str, scopes: list[str]) -> tuple[str, str]:
    """(user id, a fresh API key with ``scopes``) of a user who signs in."""
    login = await gateway.api.post(
        "/v1/auth/login", json={"tenant": tenant, "email": email, "password": PASSWORD}
    )
    assert login.status_code == 200, login.text
    headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
    key = await gateway.api.post("/v1/keys", json={"name": "cli", "scopes": scopes}, headers=headers)
    assert key.status_code == 201, key.text
    return login.json()["user"]["id"], key.json()["key"]


async def new_admin(gateway: ChatGateway, tenant: str) -> tuple[str, str]:
    """(tenant id, admin API key) of a new admin of ``tenant``."""
    email = f"admin-{uuid.uuid4().hex[:8]}@example.org"
    created = await create_admin(gateway.settings, email=email, password=PASSWORD, tenant=tenant)
    _, key = await signed_in(gateway, tenant, email, ["admin", "read"])
    return created.tenant_id, key


async def test_an_admin_sets_shows_and_clears_a_users_limits(
    chat_gateway: ChatGateway, tmp_path: Path
) -> None:
    tenant = f"tenant-{uuid.uuid4().hex[:10]}"
    tenant_id, admin_key = await new_admin(chat_gateway, tenant)
    admin = Admin(chat_gateway, admin_key, tmp_path / "remote.toml")
    email = f"user-{uuid.uuid4().hex[:8]}@example.org"
    created = await chat_gateway.api.post(
        "/v1/users",
        json={"email": email, "password": PASSWORD, "role": "member", "display_name": "Member"},
        headers={"Authorization": f"Bearer {admin_key}"},
    )
    assert created.status_code == 201, created.text
    user_id, user_key = await signed_in(chat_gateway, tenant, email, ["read"])

    body: dict[str, Any] = json.loads(
        ok(
            await admin(
                "set",
                "--user-id",
                user_id,
                "--requests",
                "2 per minute",
                "--tokens-per-day",
                "5000",
                "--json",
            )
        )
    )
    assert body["override"]["requests"] == "2 per minute" and body["override"]["tokens_per_day"] == 5000
    assert body["effective"]["tokens_per_month"] == 0 and body["effective"]["requests_per_api_key"] is None

    # It applies at once: the user's third request this minute is refused.
    user = {"Authorization": f"Bearer {user_key}"}
    statuses = [(await chat_gateway.api.get("/v1/usage", headers=user)).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]

    shown = ok(await admin("show", "--user-id", user_id))
    assert "2 per minute" in shown and "5000" in shown and "unlimited" in shown and "month" in shown

    cleared = json.loads(ok(await admin("clear", "--user-id", user_id, "--json")))
    assert cleared["override"] is None and cleared["effective"]["requests"] == "100 per minute"
    assert (await chat_gateway.api.get("/v1/usage", headers=user)).status_code == 200

    # A tenant's own admin may not touch the tenant's limits; the error is one line, exit code 2.
    refused = await admin("set", "--tenant-id", tenant_id, "--requests", "")
    assert refused.exit_code == 2 and "permission_denied" in refused.output
    # Naming neither a tenant nor a user, or both, is a usage error.
    assert (await admin("show")).exit_code == 2
    assert (await admin("show", "--tenant-id", tenant_id, "--user-id", user_id)).exit_code == 2


async def test_an_operator_sets_a_tenants_limits(chat_gateway: ChatGateway, tmp_path: Path) -> None:
    _, operator_key = await new_admin(chat_gateway, OPERATOR_TENANT)
    tenant_id, _ = await new_admin(chat_gateway, f"tenant-{uuid.uuid4().hex[:10]}")
    operator = Admin(chat_gateway, operator_key, tmp_path / "remote.toml")

    first = json.loads(ok(await operator("set", "--tenant-id", tenant_id, "--tokens-per-day", "7", "--json")))
    assert first["override"]["tokens_per_day"] == 7
    # `set` replaces what was set: the daily quota left out goes back to the default.
    ok(await operator("set", "--tenant-id", tenant_id, "--tokens-per-month", "2000000"))
    shown = ok(await operator("show", "--tenant-id", tenant_id))
    assert f"tenant {tenant_id}" in shown and "2000000" in shown
    body = json.loads(ok(await operator("show", "--tenant-id", tenant_id, "--json")))
    assert body["override"]["tokens_per_day"] is None and body["effective"]["overridden"] == [
        "tokens_per_month"
    ]
    body = json.loads(ok(await operator("clear", "--tenant-id", tenant_id, "--json")))
    assert body["override"] is None and body["effective"]["tokens_per_month"] == 0
