"""The pages mail links open (docs/email.md: /invitation, /verify-email, /reset) in headless Chromium,
against the real gateway under Hypercorn, host, PostgreSQL and a real SMTP server on loopback: the link
from the received mail is followed, the form filled in with the keyboard, and the page says what
happened; no Content Security Policy refusal, no uncaught error, nothing wider than a phone.

Skipped without Debian's ``/usr/bin/chromium`` (see tests/web/test_chat_page.py).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Browser, async_playwright, expect

from opentier.config import Settings
from tests.gateway.conftest import PASSWORD, gateway_settings
from tests.gateway.mailbox import PUBLIC_URL, free_port, mail_gateway, new_admin, smtp_server
from tests.gateway.served import ServedAPI, running_host_fixture, served_settings_fixture
from tests.web.test_chat_page import CHROMIUM, CHROMIUM_ARGS, HAVE_CHROMIUM, Tab, open_tab

__all__ = ["gateway_settings", "running_host_fixture", "served_settings_fixture"]

CHOSEN = "a passphrase typed in the page"
PHONE = {"width": 375, "height": 740}


@pytest_asyncio.fixture(name="browser", scope="module")
async def browser_fixture() -> AsyncIterator[Browser]:
    if not HAVE_CHROMIUM:
        pytest.skip(f"Debian's chromium is not installed ({CHROMIUM}): run scripts/bootstrap as root")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


def local(api: ServedAPI, mail_text: str, page: str) -> str:
    """The link of the mail for ``page``, pointed at the served gateway instead of ``PUBLIC_URL``."""
    found = re.search(re.escape(f"{PUBLIC_URL}/{page}?token=") + r"\S+", mail_text)
    assert found is not None, mail_text
    return found.group(0).replace(PUBLIC_URL, str(api.client.base_url).rstrip("/"))


def plain(message: object) -> str:
    body = message.get_body(preferencelist=("plain",))  # type: ignore[attr-defined]
    return str(body.get_content())


async def no_sideways_scroll(tab: Tab) -> None:
    wide = await tab.page.evaluate("document.documentElement.scrollWidth > window.innerWidth")
    assert wide is False


async def test_the_invitation_page_sets_the_password_on_a_phone(
    browser: Browser, served_settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    address = f"invitee-{uuid.uuid4().hex[:8]}@example.org"
    async with smtp_server(port) as inbox, mail_gateway(served_settings, port) as api:
        tenant, admin = await new_admin(served_settings, api)
        assert (
            await api.post("/v1/users/invitations", json={"email": address}, headers=admin)
        ).status_code == 202
        [mail] = await inbox.wait(1)
        tab = await open_tab(browser, viewport=PHONE)
        try:
            page = tab.page
            await page.goto(local(api, plain(mail), "invitation"))
            await expect(page.get_by_role("heading", name="Accept your invitation")).to_be_visible()
            assert "token=" not in page.url  # taken out of the address bar
            await no_sideways_scroll(tab)
            await page.screenshot(path=str(tmp_path / "invitation-page.png"))

            await page.get_by_label("Your name").fill("Ada")
            await page.get_by_label("Password", exact=True).fill(CHOSEN)
            await page.get_by_label("Password, again").fill(CHOSEN + "x")
            await page.get_by_label("Password, again").press("Enter")
            await expect(page.get_by_role("alert")).to_have_text(re.compile("The two passwords differ"))

            await page.get_by_label("Password, again").fill(CHOSEN)
            await page.get_by_label("Password, again").press("Enter")
            await expect(page.get_by_role("heading", name="Welcome to OpenTier")).to_be_visible()
            await expect(page.locator("#done-text")).to_contain_text(address)
            await expect(page.locator("#done-text")).to_contain_text(tenant)
            assert tab.problems == []
        finally:
            await tab.page.context.close()
        signed_in = await api.post(
            "/v1/auth/login", json={"tenant": tenant, "email": address, "password": CHOSEN}
        )
        assert signed_in.status_code == 200 and signed_in.json()["user"]["display_name"] == "Ada"


async def test_the_verify_and_reset_pages_say_what_happened(
    browser: Browser, served_settings: Settings
) -> None:
    port = free_port()
    async with smtp_server(port) as inbox, mail_gateway(served_settings, port) as api:
        tenant, admin = await new_admin(served_settings, api)
        address = (await api.client.get("/v1/auth/me", headers=admin)).json()["user"]["email"]
        assert (await api.post("/v1/auth/email/verification", headers=admin)).status_code == 202
        [verification] = await inbox.wait(1)
        tab = await open_tab(browser, viewport={"width": 1024, "height": 700})
        try:
            page = tab.page
            link = local(api, plain(verification), "verify-email")
            await page.goto(link)
            await expect(page.get_by_role("status")).to_have_text(f"Thank you: {address} is confirmed.")
            await page.goto(link)  # a second time: the link is spent
            await expect(page.get_by_role("alert")).to_contain_text("already used")

            asked = await api.post("/v1/auth/password-reset", json={"tenant": tenant, "email": address})
            assert asked.status_code == 202
            reset = (await inbox.wait(2))[1]
            await page.goto(local(api, plain(reset), "reset"))
            await page.get_by_label("New password", exact=True).fill("short")
            await page.get_by_label("New password, again").fill("short")
            await page.get_by_role("button", name="Set the password").click()
            await expect(page.get_by_role("alert")).to_contain_text("password")
            await page.get_by_label("New password", exact=True).fill(CHOSEN)
            await page.get_by_label("New password, again").fill(CHOSEN)
            await page.get_by_role("button", name="Set the password").click()
            await expect(page.get_by_role("heading", name="Password changed")).to_be_visible()
            assert tab.problems == []
        finally:
            await tab.page.context.close()
        assert (
            await api.post("/v1/auth/login", json={"tenant": tenant, "email": address, "password": CHOSEN})
        ).status_code == 200
        assert (
            await api.post("/v1/auth/login", json={"tenant": tenant, "email": address, "password": PASSWORD})
        ).status_code == 401
