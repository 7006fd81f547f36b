"""A real SMTP server (aiosmtpd) on loopback and the served gateway mailing to it, for the mail tests.

``smtp_server(port)`` yields an :class:`Inbox` of what it received; ``mail_gateway(settings, port)`` serves
``create_app`` under Hypercorn with ``[mail]`` pointing at it (links to :data:`PUBLIC_URL`) and yields a
:class:`~tests.gateway.served.ServedAPI` checked against its /openapi.json.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import re
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from email.message import EmailMessage
from typing import Any

import httpx
from aiosmtpd.controller import Controller
from openapi_core import OpenAPI

from opentier.config import MailSettings, Settings
from opentier.gateway.app import create_app
from opentier.gateway.identity.bootstrap import create_admin
from tests.gateway.conftest import PASSWORD
from tests.gateway.served import ServedAPI, start_served, stop_served

PUBLIC_URL = "https://chat.example.test"
SENDER = "OpenTier <no-reply@example.test>"


class Inbox:
    """What the SMTP server received (its thread appends, the test reads)."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.recipients: list[list[str]] = []
        self._lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        with self._lock:
            self.messages.append(message)
            self.recipients.append(list(envelope.rcpt_tos))
        return "250 OK"

    async def wait(self, count: int, within_seconds: float = 10.0) -> list[EmailMessage]:
        deadline = time.monotonic() + within_seconds
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.messages) >= count:
                    return list(self.messages)
            await asyncio.sleep(0.05)
        raise AssertionError(f"{count} mails expected, {len(self.messages)} arrived")

    def to(self, address: str) -> list[EmailMessage]:
        """The mails received for ``address``."""
        with self._lock:
            return [m for m, rcpt in zip(self.messages, self.recipients, strict=True) if address in rcpt]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@asynccontextmanager
async def smtp_server(port: int) -> AsyncIterator[Inbox]:
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    await asyncio.to_thread(controller.start)
    try:
        yield inbox
    finally:
        await asyncio.to_thread(controller.stop)


@asynccontextmanager
async def mail_gateway(settings: Settings, port: int, **mail: Any) -> AsyncIterator[ServedAPI]:
    """The served gateway sending mail to 127.0.0.1:``port`` (more ``[mail]`` settings in ``mail``)."""
    options: dict[str, Any] = {
        "mode": "smtp",
        "host": "127.0.0.1",
        "port": port,
        "starttls": False,
        "public_url": PUBLIC_URL,
        "sender": SENDER,
    }
    settings = settings.model_copy(update={"mail": MailSettings(**(options | mail))})
    served = await start_served(create_app(settings), settings)
    try:
        async with httpx.AsyncClient(base_url=served.url, timeout=30) as client:
            document = await client.get("/openapi.json")
            yield ServedAPI(client, OpenAPI.from_dict(document.json()))
    finally:
        await stop_served(served)


def link_token(message: EmailMessage, page: str) -> str:
    """The token of the ``<PUBLIC_URL>/<page>?token=...`` link in the plain-text part of ``message``."""
    plain = message.get_body(preferencelist=("plain",))
    assert plain is not None
    found = re.search(
        re.escape(f"{PUBLIC_URL}/{page}?token=") + r"(otm_[A-Za-z0-9_\-]+)", plain.get_content()
    )
    assert found is not None, plain.get_content()
    return found.group(1)


def text_of(message: EmailMessage) -> str:
    plain = message.get_body(preferencelist=("plain",))
    assert plain is not None
    return str(plain.get_content())


async def new_admin(
    settings: Settings, api: ServedAPI, tenant: str | None = None
) -> tuple[str, dict[str, str]]:
    """A fresh tenant (or ``tenant``) with a first admin, signed in: (tenant name, auth headers)."""
    tenant = tenant or f"tenant-{uuid.uuid4().hex[:10]}"
    address = f"admin-{uuid.uuid4().hex[:8]}@example.org"
    await create_admin(settings, email=address, password=PASSWORD, tenant=tenant)
    signed_in = await api.post(
        "/v1/auth/login", json={"tenant": tenant, "email": address, "password": PASSWORD}
    )
    assert signed_in.status_code == 200, signed_in.text
    return tenant, {"Authorization": f"Bearer {signed_in.json()['access_token']}"}
