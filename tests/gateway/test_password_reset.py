"""Password reset by mail against the real gateway (Hypercorn), host, PostgreSQL and a real SMTP server
(aiosmtpd) on loopback: the link works once and expires, an unknown address answers like a known one and
gets nothing, a send to a server that is down is retried, and log mode writes the mail to the log."""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
from openapi_core import OpenAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from opentier.config import MailSettings, Settings
from opentier.gateway.app import create_app
from opentier.gateway.identity.bootstrap import create_admin
from opentier.gateway.identity.digests import digest
from tests.gateway.conftest import PASSWORD
from tests.gateway.mailbox import free_port, smtp_server
from tests.gateway.served import (
    ServedAPI,
    running_host_fixture,
    served_settings_fixture,
    start_served,
    stop_served,
)

__all__ = ["running_host_fixture", "served_settings_fixture"]

NEW_PASSWORD = "a brand new passphrase 42"
PUBLIC_URL = "https://chat.example.test"
LINK = re.compile(re.escape(PUBLIC_URL) + r"/reset\?token=(otm_[A-Za-z0-9_\-]+)")


@asynccontextmanager
async def gateway(settings: Settings, **mail: Any) -> AsyncIterator[ServedAPI]:
    """The served gateway with the ``mail`` settings given, and an HTTP client checked against its
    /openapi.json."""
    options: dict[str, Any] = {"public_url": PUBLIC_URL, "sender": "OpenTier <no-reply@example.test>"}
    settings = settings.model_copy(update={"mail": MailSettings(**(options | mail))})
    served = await start_served(create_app(settings), settings)
    try:
        async with httpx.AsyncClient(base_url=served.url, timeout=30) as client:
            document = await client.get("/openapi.json")
            yield ServedAPI(client, OpenAPI.from_dict(document.json()))
    finally:
        await stop_served(served)


def smtp(port: int, **more: Any) -> dict[str, Any]:
    return {"mode": "smtp", "host": "127.0.0.1", "port": port, "starttls": False} | more


async def new_account(settings: Settings) -> tuple[str, str]:
    """A fresh tenant and the address of its (first) user."""
    tenant = f"tenant-{uuid.uuid4().hex[:10]}"
    address = f"reset-{uuid.uuid4().hex[:8]}@example.org"
    await create_admin(settings, email=address, password=PASSWORD, tenant=tenant)
    return tenant, address


async def login(api: ServedAPI, tenant: str, address: str, password: str) -> httpx.Response:
    return await api.post("/v1/auth/login", json={"tenant": tenant, "email": address, "password": password})


def token_of(message: EmailMessage) -> str:
    plain = message.get_body(preferencelist=("plain",))
    assert plain is not None
    found = LINK.search(plain.get_content())
    assert found is not None, plain.get_content()
    return found.group(1)


async def test_reset_link_works_once_and_changes_the_password(served_settings: Settings) -> None:
    port = free_port()
    tenant, address = await new_account(served_settings)
    async with smtp_server(port) as inbox, gateway(served_settings, **smtp(port)) as api:
        signed_in = await login(api, tenant, address, PASSWORD)
        assert signed_in.status_code == 200
        old_session = {"Authorization": f"Bearer {signed_in.json()['access_token']}"}

        asked = await api.post("/v1/auth/password-reset", json={"tenant": tenant, "email": address.upper()})
        assert asked.status_code == 202, asked.text
        [mail] = await inbox.wait(1)
        assert inbox.recipients == [[address]]
        assert mail["Subject"] == "Reset your OpenTier password"
        assert mail["From"] == "OpenTier <no-reply@example.test>"
        token = token_of(mail)
        again = await api.post("/v1/auth/password-reset", json={"tenant": tenant, "email": address})
        assert again.status_code == 202 and again.content == asked.content
        rich = mail.get_body(preferencelist=("html",))
        assert rich is not None and f'href="{PUBLIC_URL}/reset?token={token}"' in rich.get_content()

        # A password the policy refuses does not spend the link.
        weak = await api.post(
            "/v1/auth/password-reset/confirm", json={"token": token, "new_password": "short"}
        )
        assert weak.status_code == 400 and weak.json()["error"]["code"] == "invalid_request"

        done = await api.post(
            "/v1/auth/password-reset/confirm", json={"token": token, "new_password": NEW_PASSWORD}
        )
        assert done.status_code == 204, done.text
        again = await api.post(
            "/v1/auth/password-reset/confirm", json={"token": token, "new_password": NEW_PASSWORD + "!"}
        )
        assert again.status_code == 400
        assert again.json()["error"]["code"] == "reset_token_invalid"
        assert "already used" in again.json()["error"]["message"]

        assert (await api.get("/v1/auth/me", headers=old_session)).status_code == 401  # signed out
        assert (await login(api, tenant, address, PASSWORD)).status_code == 401
        assert (await login(api, tenant, address, NEW_PASSWORD)).status_code == 200
        assert (await login(api, tenant, address, NEW_PASSWORD + "!")).status_code == 401
        assert len(inbox.messages) == 1  # asked twice within reset_resend_seconds: one mail


async def test_an_expired_or_unknown_token_is_refused(
    served_settings: Settings, db_engine: AsyncEngine
) -> None:
    port = free_port()
    tenant, address = await new_account(served_settings)
    async with smtp_server(port) as inbox, gateway(served_settings, **smtp(port)) as api:
        await api.post("/v1/auth/password-reset", json={"tenant": tenant, "email": address})
        token = token_of((await inbox.wait(1))[0])
        async with db_engine.begin() as conn:
            stored = await conn.execute(
                text("SELECT count(*) FROM gateway.mail_tokens WHERE token_hash = :h"), {"h": digest(token)}
            )
            assert stored.scalar_one() == 1  # only the digest is kept, never the token itself
            await conn.execute(
                text(
                    "UPDATE gateway.mail_tokens SET expires_at = now() - interval '1 second' "
                    "WHERE token_hash = :h"
                ),
                {"h": digest(token)},
            )
        expired = await api.post(
            "/v1/auth/password-reset/confirm", json={"token": token, "new_password": NEW_PASSWORD}
        )
        assert expired.status_code == 400
        assert expired.json()["error"]["code"] == "reset_token_invalid"
        assert "expired" in expired.json()["error"]["message"]
        unknown = await api.post(
            "/v1/auth/password-reset/confirm", json={"token": "otm_" + "x" * 43, "new_password": NEW_PASSWORD}
        )
        assert unknown.status_code == 400
        assert unknown.json()["error"]["code"] == "reset_token_invalid"
        assert (await login(api, tenant, address, PASSWORD)).status_code == 200
        assert (await login(api, tenant, address, NEW_PASSWORD)).status_code == 401


async def test_an_unknown_address_answers_like_a_known_one_and_gets_nothing(
    served_settings: Settings,
) -> None:
    port = free_port()
    tenant, address = await new_account(served_settings)
    async with smtp_server(port) as inbox, gateway(served_settings, **smtp(port)) as api:
        answers = []
        for body in (
            {"tenant": tenant, "email": f"nobody-{uuid.uuid4().hex[:6]}@example.org"},
            {"tenant": f"no-such-tenant-{uuid.uuid4().hex[:6]}", "email": address},
            {"tenant": tenant, "email": address},
        ):
            started = time.perf_counter()
            response = await api.post("/v1/auth/password-reset", json=body)
            answers.append((response.status_code, response.content, time.perf_counter() - started))
        unknown, other_tenant, known = answers
        assert unknown[:2] == known[:2] == other_tenant[:2]
        assert known[0] == 202
        assert max(a[2] for a in answers) < 0.5  # no lookup, no mail in the request: nothing to time
        await inbox.wait(1)
        await asyncio.sleep(0.5)  # the unknown ones were asked first: they would have arrived by now
        assert inbox.recipients == [[address]]


async def test_a_failed_send_is_retried_and_never_blocks_the_request(
    served_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="opentier.gateway.mail")
    port = free_port()  # nothing listens there yet: the SMTP server is down
    tenant, address = await new_account(served_settings)
    async with gateway(served_settings, **smtp(port, backoff_seconds=0.3, send_attempts=8)) as api:
        started = time.perf_counter()
        asked = await api.post("/v1/auth/password-reset", json={"tenant": tenant, "email": address})
        assert asked.status_code == 202
        assert time.perf_counter() - started < 0.5
        for _ in range(100):
            if any("attempt 2 of 8 failed" in r.getMessage() for r in caplog.records):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError(f"no second failed attempt logged: {caplog.text}")
        async with smtp_server(port) as inbox:  # the server comes back: a later attempt delivers
            token = token_of((await inbox.wait(1, within_seconds=15))[0])
        done = await api.post(
            "/v1/auth/password-reset/confirm", json={"token": token, "new_password": NEW_PASSWORD}
        )
        assert done.status_code == 204


async def test_log_mode_writes_the_mail_to_the_log_with_overridable_templates(
    served_settings: Settings, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.INFO, logger="opentier.gateway.mail")
    templates = tmp_path / "mail-templates"
    templates.mkdir()
    (templates / "password_reset.txt").write_text("Subject: Reset for $email\n\nOur own words: $link\n")
    tenant, address = await new_account(served_settings)
    async with gateway(served_settings, mode="log", templates_dir=templates) as api:
        asked = await api.post("/v1/auth/password-reset", json={"tenant": tenant, "email": address})
        assert asked.status_code == 202
        for _ in range(100):
            logged = [r.getMessage() for r in caplog.records if "mode=log" in r.getMessage()]
            if logged:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError(f"no mail in the log: {caplog.text}")
        [mail] = logged
        assert f"To: {address}" in mail and f"Subject: Reset for {address}" in mail
        found = LINK.search(mail)
        assert found is not None and "Our own words:" in mail
        done = await api.post(
            "/v1/auth/password-reset/confirm", json={"token": found.group(1), "new_password": NEW_PASSWORD}
        )
        assert done.status_code == 204
        assert (await login(api, tenant, address, NEW_PASSWORD)).status_code == 200
