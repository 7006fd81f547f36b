"""The client tests run against the real gateway under Hypercorn, the real host (with the test LLMs of
tests/gateway/streaming.py: ``citing`` answers with the first sentence of source [1] and cites it) and
the real PostgreSQL.

Fixtures: those of tests/gateway/streaming.py (``chat_gateway``...), plus

``account``
    :class:`Account`: a member of a fresh tenant (made by the tenant's admin through the API), with
    the email and password to sign in with.
``manual``
    A text file whose first sentence ``citing`` answers with (:data:`FIRST_SENTENCE`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

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

FIRST_SENTENCE = "Flaps raise lift at low speed, for take-off and landing."
MANUAL = f"{FIRST_SENTENCE} Slats on the leading edge do the same.\n\n" + "\n\n".join(
    f"In part {n} the trailing edge flaps of wing {n} deploy in stages of ten degrees, "
    "and each stage adds lift and drag."
    for n in range(1, 120)
)


@dataclass
class Account:
    tenant: str
    email: str
    password: str


async def new_account(gateway: ChatGateway) -> Account:
    """A member of a fresh tenant: its admin (bootstrapped as `opentier gateway create-admin` does)
    signs in and creates the member through the API."""
    tenant = f"tenant-{uuid.uuid4().hex[:10]}"
    admin_email = f"admin-{uuid.uuid4().hex[:8]}@example.org"
    await create_admin(gateway.settings, email=admin_email, password=PASSWORD, tenant=tenant)
    login = await gateway.api.post(
        "/v1/auth/login", json={"tenant": tenant, "email": admin_email, "password": PASSWORD}
    )
    assert login.status_code == 200, login.text
    email = f"member-{uuid.uuid4().hex[:8]}@example.org"
    created = await gateway.api.post(
        "/v1/users",
        json={"email": email, "password": PASSWORD, "role": "member", "display_name": "Member"},
        headers={"Authorization": f"Bearer {login.json()['access_token']}"},
    )
    assert created.status_code == 201, created.text
    return Account(tenant, email, PASSWORD)


@pytest_asyncio.fixture
async def account(chat_gateway: ChatGateway) -> Account:
    return await new_account(chat_gateway)


@pytest.fixture
def manual(tmp_path: Path) -> Path:
    path = tmp_path / "wings.txt"
    path.write_text(MANUAL, encoding="utf-8")
    return path
