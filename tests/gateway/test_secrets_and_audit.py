"""Passwords, keys and tokens never reach the logs, and leave the gateway only in the one response that
hands them out; every identity event leaves its audit row."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from opentier.config import Settings
from opentier.db.url import database_url
from tests.gateway.conftest import PASSWORD, Account, MakeUser, OpenAPIClient, bearer, sign_in
from tests.gateway.helpers import audit_actions, scalar


async def test_secrets_never_reach_logs_or_other_responses(
    api: OpenAPIClient, admin: Account, make_user: MakeUser, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    bodies: list[str] = []

    async def call(method: str, path: str, **options: object) -> dict[str, object]:
        response = await api.request(method, path, **options)
        text = (await response.get_data()).decode()
        bodies.append(text)
        return await response.get_json() if text else {}

    wrong_password = "not-the-password-" + uuid.uuid4().hex
    member = await make_user()
    await call(
        "POST",
        "/v1/auth/login",
        json={"tenant": member.tenant, "email": member.email, "password": wrong_password},
    )
    login = await call(
        "POST", "/v1/auth/login", json={"tenant": member.tenant, "email": member.email, "password": PASSWORD}
    )
    created = await call("POST", "/v1/keys", json={"name": "k", "scopes": ["read"]}, headers=member.headers)
    key = str(created["key"])
    refreshed = await call("POST", "/v1/auth/refresh", json={"refresh_token": login["refresh_token"]})
    await call("POST", "/v1/auth/refresh", json={"refresh_token": login["refresh_token"]})  # reuse
    await call("GET", "/v1/auth/me", headers=bearer(key))
    await call("GET", "/v1/keys", headers=member.headers)
    await call("GET", f"/v1/users/{member.user_id}", headers=admin.headers)
    await call("GET", "/v1/users", headers=admin.headers)
    await call("DELETE", f"/v1/keys/{created['id']}", headers=member.headers)
    await call("GET", "/v1/auth/me", headers=bearer(key))  # revoked

    secrets = {
        "password": PASSWORD,
        "wrong password": wrong_password,
        "api key": key,
        "api key secret": key.split("_", 2)[2],
        "refresh token": str(login["refresh_token"]),
        "rotated refresh token": str(refreshed["refresh_token"]),
        "access token": str(login["access_token"]),
    }
    assert caplog.records, "the flow logged nothing: the check below would prove nothing"
    for what, secret in secrets.items():
        assert secret not in caplog.text, f"the {what} was logged"
    for what in ("password", "wrong password"):
        assert not any(secrets[what] in body for body in bodies), f"the {what} was returned"
    assert [body for body in bodies if key in body] == [bodies[2]]  # only the creation response
    assert not any("$argon2" in body for body in bodies)


async def test_every_identity_event_is_audited(
    api: OpenAPIClient, admin: Account, make_user: MakeUser, db_engine: AsyncEngine
) -> None:
    member = await make_user()
    await api.post(
        "/v1/auth/login", json={"tenant": member.tenant, "email": member.email, "password": "wrong-one"}
    )
    again = await sign_in(api, member.tenant, member.email)
    rotated = await (
        await api.post("/v1/auth/refresh", json={"refresh_token": again.refresh_token})
    ).get_json()
    await api.post("/v1/auth/refresh", json={"refresh_token": again.refresh_token})
    key = await (
        await api.post("/v1/keys", json={"name": "k", "scopes": ["read"]}, headers=member.headers)
    ).get_json()
    await api.delete(f"/v1/keys/{key['id']}", headers=member.headers)
    await api.patch(f"/v1/users/{member.user_id}", json={"role": "admin"}, headers=admin.headers)
    await api.post("/v1/auth/logout", json={"refresh_token": member.refresh_token})
    assert rotated["refresh_token"]

    events = await audit_actions(db_engine, admin.tenant)
    actions = [action for action, _, _ in events]
    assert actions == [
        "user.created",  # the admin, by create-admin
        "login.succeeded",
        "user.created",
        "login.succeeded",
        "login.failed",
        "login.succeeded",
        "token.refresh_reuse_detected",
        "api_key.created",
        "api_key.revoked",
        "user.role_changed",
        "logout",
    ]
    failed = next(details for action, _, details in events if action == "login.failed")
    assert failed["reason"] == "wrong password" and "wrong-one" not in str(failed)
    async with db_engine.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT a.address, a.request_id, a.actor_user_id::text FROM gateway.audit_log a "
                    "JOIN gateway.tenants t ON t.id = a.tenant_id WHERE t.name = :t AND a.action = 'api_key.revoked'"
                ),
                {"t": admin.tenant},
            )
        ).one()
    assert row[0] is not None and len(row[1]) == 32 and row[2] == member.user_id


def test_create_admin_command(db_settings: Settings) -> None:
    url = database_url(db_settings)
    tenant = f"cli-{uuid.uuid4().hex[:8]}"
    email = f"root-{uuid.uuid4().hex[:6]}@example.org"
    env = {key: value for key, value in os.environ.items() if not key.startswith("OPENTIER_")}
    env |= {
        "OPENTIER_DATABASE__URL": url._replace(password=None).render_as_string(hide_password=False),
        "OPENTIER_ADMIN_PASSWORD": PASSWORD,
    }
    if url.password:
        env["OPENTIER_DATABASE__PASSWORD"] = url.password
    command = [
        sys.executable,
        "-m",
        "opentier.cli",
        "gateway",
        "create-admin",
        "--email",
        email,
        "--tenant",
        tenant,
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"created admin {email}" in done.stdout and PASSWORD not in done.stdout + done.stderr
    twice = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert twice.returncode == 2 and "already_exists" in twice.stderr

    generated = subprocess.run(
        [*command[:-4], "--email", "gen-" + email, "--tenant", tenant, "--generate-password"],
        env={key: value for key, value in env.items() if key != "OPENTIER_ADMIN_PASSWORD"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert generated.returncode == 0, generated.stderr
    assert generated.stdout.count("password (shown this once): ") == 1


async def test_created_admin_can_sign_in(api: OpenAPIClient, admin: Account, db_engine: AsyncEngine) -> None:
    role = await scalar(db_engine, "SELECT role FROM gateway.users WHERE id = :id", id=admin.user_id)
    assert role == "admin"
    me = await (await api.get("/v1/auth/me", headers=admin.headers)).get_json()
    assert me["scopes"] == ["admin", "chat", "ingest", "read"]
