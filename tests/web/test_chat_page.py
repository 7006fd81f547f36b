"""The web chat page (docs/web.md) in headless Chromium, against the real gateway under Hypercorn, the
real gRPC host and PostgreSQL (tests/gateway/streaming.py): sign in, a collection, uploads with their
progress and job status, a streamed answer with a clickable citation, stop, the conversation list, HTML
injection and the Markdown whitelist, token refresh and a session ended meanwhile, a phone-sized screen,
and the page's HTTP headers.

The browser is Debian's ``chromium`` (``/usr/bin/chromium``, installed by scripts/bootstrap when it can),
driven by Playwright, which never downloads a browser here; Playwright's ``launch`` gives it a fresh
temporary profile, and each test a fresh context. Without that binary the browser tests are skipped.
Screenshots go to ``<basetemp>/chat-page.png`` and ``<basetemp>/chat-page-phone.png``; with
``OPENTIER_DOCS_SCREENSHOTS=1`` also to ``docs/images/``.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright, expect
from quart.testing import QuartClient

from opentier.gateway.identity.bootstrap import create_admin
from tests.gateway.conftest import PASSWORD, app, client, gateway_settings  # noqa: F401 - fixtures
from tests.gateway.streaming import (  # noqa: F401 - fixtures
    NO_SOURCE_ANSWER,
    ChatGateway,
    chat_gateway_fixture,
    chat_settings_fixture,
    host_chat_options_fixture,
    limits_options_fixture,
    streaming_host_fixture,
    streaming_options_fixture,
)

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DOCS_IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"
HAVE_CHROMIUM = CHROMIUM.exists()
needs_chromium = pytest.mark.skipif(
    not HAVE_CHROMIUM, reason="Debian's chromium is not installed (/usr/bin/chromium): scripts/bootstrap"
)

WING = (
    "Trailing-edge flaps raise the lift of a wing at low speed by increasing its camber. "
    "Slats on the leading edge delay the stall at high angles of attack. "
    "Spoilers on the upper surface dump lift after touchdown."
)
WING_ANSWER = "Trailing-edge flaps raise the lift of a wing at low speed by increasing its camber."
#: A document whose first sentence (what `citing` answers with) is markup that must stay text.
HOSTILE = (
    'Flaps <img src=x onerror="window.__pwned=1"> and <script>window.__pwned=2</script> give **lift** '
    "and [a trap](javascript:window.__pwned=3) too. Nothing else is in this file."
)


# -- the browser --------------------------------------------------------------------------------------


@pytest_asyncio.fixture(name="browser", scope="module")
async def browser_fixture() -> AsyncIterator[Browser]:
    if not HAVE_CHROMIUM:
        pytest.skip(f"Debian's chromium is not installed ({CHROMIUM}): run scripts/bootstrap as root")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            await browser.close()


@dataclass
class Tab:
    """A page of a fresh browser context, with what went wrong in it (uncaught errors, CSP refusals)."""

    page: Page
    problems: list[str] = field(default_factory=list)

    def watch(self) -> None:
        def on_console(message: ConsoleMessage) -> None:
            if "Content Security Policy" in message.text:
                self.problems.append(message.text)

        self.page.on("console", on_console)
        self.page.on("pageerror", lambda error: self.problems.append(f"uncaught: {error}"))


async def open_tab(browser: Browser, **context: Any) -> Tab:
    page = await (await browser.new_context(**context)).new_page()
    page.set_default_timeout(15_000)
    tab = Tab(page)
    tab.watch()
    return tab


@pytest_asyncio.fixture(name="tab")
async def tab_fixture(browser: Browser) -> AsyncIterator[Tab]:
    tab = await open_tab(browser, viewport={"width": 1280, "height": 800})
    try:
        yield tab
    finally:
        await tab.page.context.close()


def screenshot_paths(temp: pytest.TempPathFactory, name: str) -> list[Path]:
    """``<basetemp>/<name>``, and ``docs/images/<name>`` when OPENTIER_DOCS_SCREENSHOTS is set."""
    paths = [temp.getbasetemp() / name]
    if os.environ.get("OPENTIER_DOCS_SCREENSHOTS"):
        DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
        paths.append(DOCS_IMAGES / name)
    return paths


async def save_screenshot(page: Page, temp: pytest.TempPathFactory, name: str) -> Path:
    first, *copies = screenshot_paths(temp, name)
    await page.screenshot(path=str(first))
    for copy in copies:
        shutil.copyfile(first, copy)
    assert first.stat().st_size > 10_000, "the screenshot is (nearly) empty"
    return first


# -- accounts and data ------------------------------------------------------------------------------


@dataclass
class Account:
    tenant: str
    email: str
    password: str
    user_id: str
    #: ``Authorization`` header of the tenant's admin.
    admin_headers: dict[str, str]


async def new_account(gateway: ChatGateway) -> Account:
    """A member of a fresh tenant, created by the tenant's first admin through the API."""
    tenant = f"web-{uuid.uuid4().hex[:10]}"
    admin = f"admin-{uuid.uuid4().hex[:8]}@example.org"
    await create_admin(gateway.settings, email=admin, password=PASSWORD, tenant=tenant)
    login = await gateway.api.post(
        "/v1/auth/login", json={"tenant": tenant, "email": admin, "password": PASSWORD}
    )
    assert login.status_code == 200, login.text
    email = f"reader-{uuid.uuid4().hex[:8]}@example.org"
    admin_headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
    created = await gateway.api.post(
        "/v1/users",
        json={"email": email, "password": PASSWORD, "role": "member", "display_name": "Ada Reader"},
        headers=admin_headers,
    )
    assert created.status_code == 201, created.text
    return Account(tenant, email, PASSWORD, str(created.json()["id"]), admin_headers)


async def api_headers(gateway: ChatGateway, account: Account) -> dict[str, str]:
    login = await gateway.api.post(
        "/v1/auth/login",
        json={"tenant": account.tenant, "email": account.email, "password": account.password},
    )
    assert login.status_code == 200, login.text
    return {"Authorization": f"Bearer {login.json()['access_token']}"}


async def upload_over_api(gateway: ChatGateway, headers: dict[str, str], name: str, text: str) -> str:
    """A collection holding ``text`` as ``name``, ingested; its id."""
    created = await gateway.api.post("/v1/collections", json={"name": "Hostile"}, headers=headers)
    assert created.status_code == 201, created.text
    collection = str(created.json()["id"])
    upload = await gateway.api.post(
        f"/v1/collections/{collection}/documents",
        files={"file": (name, text.encode(), "text/plain")},
        headers=headers,
    )
    assert upload.status_code == 202, upload.text
    job = upload.json()["job"]
    async with asyncio.timeout(20):
        while not job["finished"]:
            await asyncio.sleep(0.05)
            job = (await gateway.api.get(f"/v1/jobs/{job['id']}", headers=headers)).json()
    assert job["status"] == "succeeded", job
    return collection


# -- driving the page -------------------------------------------------------------------------------


async def sign_in(page: Page, gateway: ChatGateway, account: Account) -> None:
    await page.goto(gateway.url + "/")
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await page.get_by_label("Email").fill(account.email)
    await page.get_by_label("Password").fill(account.password)
    await page.get_by_label("Organisation").fill(account.tenant)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.locator("#who")).to_have_text("Signed in as Ada Reader")
    await expect(page.get_by_label("Your message")).to_be_focused()


async def ask(page: Page, question: str) -> None:
    await page.get_by_label("Your message").fill(question)
    await page.get_by_label("Your message").press("Enter")


def last_answer(page: Page) -> Any:
    return page.locator("#messages article.assistant").last


async def drop_file(page: Page, name: str, text: str) -> None:
    """Drop a file on the drop zone, as a drag from the desktop does."""
    await page.evaluate(
        """([name, text]) => {
            const data = new DataTransfer();
            data.items.add(new File([text], name, { type: 'text/plain' }));
            const zone = document.getElementById('dropzone');
            for (const type of ['dragenter', 'dragover', 'drop']) {
              zone.dispatchEvent(new DragEvent(type, { dataTransfer: data, bubbles: true, cancelable: true }));
            }
        }""",
        [name, text],
    )


UNLABELLED_CONTROLS = """() => [...document.querySelectorAll('input, select, textarea, button')]
    .filter((e) => e.offsetParent !== null || e.closest('dialog[open]'))
    .filter((e) => !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.textContent.trim())
    .map((e) => e.outerHTML)"""

#: The contrast ratio (WCAG 2) of each visible text element against its nearest opaque background.
LOW_CONTRAST = """() => {
  const channel = (c) => { c /= 255; return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4; };
  const rgb = (s) => s.match(/[\\d.]+/g).map(Number);
  const luminance = ([r, g, b]) => 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b);
  const background = (e) => {
    for (; e; e = e.parentElement) {
      const c = rgb(getComputedStyle(e).backgroundColor);
      if (c.length < 4 || c[3] > 0.9) return c;
    }
    return [255, 255, 255];
  };
  const low = [];
  for (const e of document.querySelectorAll('body *')) {
    if (e.offsetParent === null || getComputedStyle(e).opacity < 1 || e.disabled) continue;
    const own = [...e.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    if (!own) continue;
    const [a, b] = [luminance(rgb(getComputedStyle(e).color)), luminance(background(e))];
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    if (ratio < 4.5) low.push(`${e.tagName}.${e.className} ${ratio.toFixed(2)}: ${e.textContent.slice(0, 40)}`);
  }
  return low;
}"""


async def open_the_passage_with_the_keyboard(page: Page, cite: Any) -> None:
    """Focus the citation, Enter opens the passage, Escape closes it and gives the focus back."""
    await cite.focus()
    await page.keyboard.press("Enter")
    dialog = page.locator("#source-dialog")
    await expect(dialog).to_be_visible()
    await expect(dialog.get_by_role("heading")).to_contain_text("[1] wing-design")
    await expect(dialog.locator(".source-text")).to_contain_text(WING_ANSWER)
    assert await page.evaluate(UNLABELLED_CONTROLS) == []
    await page.keyboard.press("Escape")
    await expect(dialog).to_be_hidden()
    await expect(cite).to_be_focused()


MARKDOWN_CASES = """async () => {
  const { renderMarkdown } = await import('/web/markdown.js');
  const render = (text, cite = () => null) => {
    const box = document.createElement('div');
    box.append(renderMarkdown(text, { cite }));
    return {
      tags: [...box.querySelectorAll('*')].map((e) => e.tagName.toLowerCase()),
      text: box.textContent,
      links: [...box.querySelectorAll('a')].map((a) => [a.getAttribute('href'), a.target, a.rel, a.textContent]),
      buttons: [...box.querySelectorAll('button')].map((b) => [b.textContent, b.getAttribute('aria-label')]),
    };
  };
  return {
    script: render('<script>alert(1)</script> <img src=x onerror=alert(2)>'),
    javascriptLink: render('[click](javascript:alert(1)) [data](data:text/html,hi)'),
    httpLink: render('[the *docs*](https://example.org/a?b=1) and http://example.org/x.'),
    lists: render('Steps:\\n- one\\n- **two**\\n\\n3. three\\n4. four'),
    code: render('Use `<i>` here:\\n```\\n<b>x</b> *not em*\\n```'),
    emphasis: render('*em* and _also_ and **strong** but snake_case_name'),
    unknownCitation: render('As said [2].'),
    citations: render('As said [1, 2].', (n) => `Source ${n}: manual.pdf`),
  };
}"""


async def check_the_markdown_whitelist(page: Page) -> None:
    """The renderer, run in the page on tricky input, makes only its whitelisted elements."""
    cases = await page.evaluate(MARKDOWN_CASES)
    assert cases["script"] == {
        "tags": ["p"],
        "text": "<script>alert(1)</script> <img src=x onerror=alert(2)>",
        "links": [],
        "buttons": [],
    }
    assert cases["javascriptLink"]["tags"] == ["p"]
    assert cases["javascriptLink"]["text"] == "[click](javascript:alert(1)) [data](data:text/html,hi)"
    assert cases["httpLink"]["links"] == [
        ["https://example.org/a?b=1", "_blank", "noopener noreferrer nofollow", "the docs"],
        ["http://example.org/x", "_blank", "noopener noreferrer nofollow", "http://example.org/x"],
    ]
    assert "em" in cases["httpLink"]["tags"]
    assert cases["lists"]["tags"] == ["p", "ul", "li", "li", "strong", "ol", "li", "li"]
    assert cases["code"]["tags"] == ["p", "code", "pre", "code"]
    assert cases["code"]["text"] == "Use <i> here:<b>x</b> *not em*"
    assert cases["emphasis"]["tags"] == ["p", "em", "em", "strong"]
    assert cases["emphasis"]["text"] == "em and also and strong but snake_case_name"
    assert cases["unknownCitation"] == {"tags": ["p"], "text": "As said [2].", "links": [], "buttons": []}
    assert cases["citations"]["buttons"] == [["[1]", "Source 1: manual.pdf"], ["[2]", "Source 2: manual.pdf"]]


# -- the tests --------------------------------------------------------------------------------------


@needs_chromium
async def test_sign_in_upload_ask_and_open_the_cited_passage(
    chat_gateway: ChatGateway, tab: Tab, tmp_path_factory: pytest.TempPathFactory
) -> None:
    page = tab.page
    account = await new_account(chat_gateway)
    await sign_in(page, chat_gateway, account)
    assert await page.evaluate(UNLABELLED_CONTROLS) == []

    # A collection, made on the page, is picked for the uploads and the chat.
    await page.get_by_label("New collection").fill("Aircraft manuals")
    await page.get_by_role("button", name="Create", exact=True).click()
    await expect(page.get_by_label("Answer from")).to_have_value(re.compile(r"\S+"))
    await expect(page.get_by_text("Files are added to “Aircraft manuals”.")).to_be_visible()

    # One file dropped on the zone, one through the file picker: progress, then the job's outcome.
    await drop_file(page, "wing-design.txt", WING)
    await page.get_by_label("Drop files here, or choose them").set_input_files(
        [{"name": "scan.pdf", "mimeType": "application/pdf", "buffer": b"%PDF-1.4 this is no PDF"}]
    )
    good = page.locator("li.upload", has_text="wing-design.txt")
    bad = page.locator("li.upload", has_text="scan.pdf")
    await expect(good.locator(".upload-status")).to_have_text("Ready", timeout=20_000)
    assert await good.locator("progress").evaluate("(p) => p.value") == 1
    await expect(bad.locator(".upload-status")).to_have_text(re.compile(r"^Failed: .{8,}"), timeout=20_000)
    await expect(page.get_by_label("Answer from")).to_contain_text("Aircraft manuals (1 document)")

    # The question is answered from the uploaded file, with a citation that opens the passage.
    await ask(page, "How do flaps help at low speed?")
    answer = last_answer(page)
    await expect(answer).to_have_attribute("data-status", "complete")
    await expect(answer.locator(".message-body")).to_have_text(f"{WING_ANSWER} [1]")
    await expect(page.locator("#stop")).to_be_disabled()
    cite = answer.locator("button.cite")
    await expect(cite).to_have_count(1)
    await expect(cite).to_have_attribute("aria-label", re.compile(r"^Source 1: wing-design"))
    await expect(answer.locator("ol.sources")).to_contain_text("[1] wing-design")

    await open_the_passage_with_the_keyboard(page, cite)
    dialog = page.locator("#source-dialog")

    # The conversation is listed; opening it again shows the stored answer with its citation.
    conversation = page.locator("button.conversation").first
    await expect(conversation).to_contain_text("How do flaps help")
    await expect(conversation).to_have_attribute("aria-current", "true")
    assert await page.evaluate(LOW_CONTRAST) == []
    await save_screenshot(page, tmp_path_factory, "chat-page.png")

    await page.get_by_role("button", name="New chat").click()
    await expect(page.locator("#messages article")).to_have_count(0)
    await conversation.click()
    await expect(page.locator("#messages article")).to_have_count(2)
    await expect(last_answer(page).locator(".message-body")).to_have_text(f"{WING_ANSWER} [1]")
    await last_answer(page).locator("button.cite").click()
    await expect(dialog.locator(".source-text")).to_contain_text(WING_ANSWER)
    await dialog.get_by_role("button", name="Close").click()

    # Signing out forgets the tokens: the page asks for the password again.
    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await expect(page.locator("#messages article")).to_have_count(0)
    assert tab.problems == []


@needs_chromium
@pytest.mark.parametrize("host_chat_options", [{"llm": "endless"}], indirect=True)
async def test_tokens_stream_in_and_stop_ends_the_answer_as_stopped(
    chat_gateway: ChatGateway, tab: Tab
) -> None:
    page = tab.page
    chat_gateway.llms.endless.interval = 0.05
    account = await new_account(chat_gateway)
    await sign_in(page, chat_gateway, account)
    # Every change of the answer's text, as a reader would see it appear.
    await page.evaluate(
        """() => {
          window.seen = [];
          new MutationObserver(() => {
            const body = document.querySelector('#messages article.assistant:last-of-type .message-body');
            if (body) window.seen.push(body.textContent.replace('▍', ''));
          }).observe(document.getElementById('messages'), { subtree: true, childList: true, characterData: true });
        }"""
    )
    await ask(page, "Count for me, please.")
    answer = last_answer(page)
    await expect(answer).to_have_attribute("aria-busy", "true")
    await expect(answer.locator(".message-body")).to_contain_text("tick tick tick tick tick")
    seen: list[str] = await page.evaluate("window.seen")
    grown = sorted({text.count("tick") for text in seen})
    assert len(grown) >= 3, f"the answer did not appear piece by piece: {seen}"

    await page.get_by_role("button", name="Stop").click()
    await expect(answer).to_have_attribute("data-status", "cancelled")
    await expect(answer).to_have_attribute("aria-busy", "false")
    await expect(answer.locator(".badge")).to_have_text("Stopped")
    await expect(page.locator("#chat-status")).to_have_text("Answer stopped.")
    assert chat_gateway.llms.endless.endings[-1] in ("GeneratorExit", "CancelledError")
    partial = await answer.locator(".message-body").text_content()
    assert partial and partial.count("tick") >= 5
    await asyncio.sleep(0.3)
    assert await answer.locator(".message-body").text_content() == partial, "tokens kept coming after stop"
    await expect(page.get_by_role("button", name="Send")).to_be_enabled()

    # The host stored the partial answer as cancelled; the list shows the conversation.
    headers = await api_headers(chat_gateway, account)
    [listed] = (await chat_gateway.api.get("/v1/conversations", headers=headers)).json()["conversations"]
    stored = (await chat_gateway.api.get(f"/v1/conversations/{listed['id']}", headers=headers)).json()
    assistant = stored["messages"][-1]
    assert assistant["status"] == "cancelled"
    assert assistant["content"].strip() == partial.strip()
    await expect(page.locator("button.conversation")).to_have_count(1)
    assert tab.problems == []


@needs_chromium
async def test_markup_in_documents_answers_and_questions_stays_text(
    chat_gateway: ChatGateway, tab: Tab
) -> None:
    page = tab.page
    account = await new_account(chat_gateway)
    await upload_over_api(chat_gateway, await api_headers(chat_gateway, account), "hostile.txt", HOSTILE)
    await sign_in(page, chat_gateway, account)
    await expect(page.get_by_label("Answer from")).to_contain_text("Hostile")

    await ask(page, 'What do <b>flaps</b> give? <img src=y onerror="window.__pwned=4">')
    answer = last_answer(page)
    await expect(answer).to_have_attribute("data-status", "complete")
    body = answer.locator(".message-body")
    await expect(body).to_contain_text('<img src=x onerror="window.__pwned=1">')
    await expect(body).to_contain_text("<script>window.__pwned=2</script>")
    await expect(body).to_contain_text("[a trap](javascript:window.__pwned=3)")
    await expect(body.locator("strong")).to_have_text("lift")  # the whitelisted Markdown still works
    await expect(page.locator("#messages article.user")).to_contain_text("What do <b>flaps</b> give?")
    await answer.locator("button.cite").click()
    await expect(page.locator("#source-dialog .source-text")).to_contain_text(
        "<script>window.__pwned=2</script>"
    )

    found = await page.evaluate(
        """() => ({
          pwned: window.__pwned ?? null,
          elements: [...document.querySelectorAll('#messages *, #source-dialog *')]
            .map((e) => e.tagName.toLowerCase())
            .filter((t) => ['img', 'script', 'b', 'a', 'iframe', 'object'].includes(t)),
        })"""
    )
    assert found == {"pwned": None, "elements": []}
    await check_the_markdown_whitelist(page)
    assert tab.problems == []


@needs_chromium
async def test_the_page_refreshes_its_tokens_and_notices_a_session_that_ended(
    chat_gateway: ChatGateway, tab: Tab
) -> None:
    page = tab.page
    await page.clock.install()
    account = await new_account(chat_gateway)
    await sign_in(page, chat_gateway, account)
    # The access token lives 900 s: before that the page trades its refresh token for a new pair.
    async with page.expect_response(lambda response: response.url.endswith("/v1/auth/refresh")) as refreshed:
        await page.clock.fast_forward("15:00")
    assert (await refreshed.value).status == 200

    await ask(page, "Is anybody there?")
    answer = last_answer(page)
    await expect(answer).to_have_attribute("data-status", "complete")
    await expect(answer.locator(".message-body")).to_have_text(NO_SOURCE_ANSWER)
    # Signing out ends the session with the new refresh token (the old one would count as reused).
    async with page.expect_response(lambda response: response.url.endswith("/v1/auth/logout")) as logout:
        await page.get_by_role("button", name="Sign out").click()
    assert (await logout.value).status == 204
    await expect(page.locator("#signin-error")).to_have_text("You are signed out.")

    # An account disabled meanwhile: the next call is refused, so is the refresh, and the page says so.
    await sign_in(page, chat_gateway, account)
    disabled = await chat_gateway.api.patch(
        f"/v1/users/{account.user_id}", json={"disabled": True}, headers=account.admin_headers
    )
    assert disabled.status_code == 200, disabled.text
    await page.get_by_label("New collection").fill("Too late")
    await page.get_by_role("button", name="Create", exact=True).click()
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await expect(page.locator("#signin-error")).to_have_text(
        re.compile(r"^Your session ended .*sign in again")
    )
    await expect(page.get_by_label("Email")).to_be_focused()
    assert tab.problems == []


@needs_chromium
async def test_the_page_works_on_a_phone_sized_screen(
    chat_gateway: ChatGateway, browser: Browser, tmp_path_factory: pytest.TempPathFactory
) -> None:
    tab = await open_tab(
        browser, viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True, has_touch=True
    )
    page = tab.page
    try:
        account = await new_account(chat_gateway)
        await upload_over_api(chat_gateway, await api_headers(chat_gateway, account), "wing-design.txt", WING)
        await sign_in(page, chat_gateway, account)
        overflow = "() => document.documentElement.scrollWidth - window.innerWidth"
        assert await page.evaluate(overflow) <= 0

        # The side panel hides behind the Menu button.
        menu = page.get_by_role("button", name="Menu")
        await expect(page.get_by_label("Answer from")).to_be_hidden()
        await menu.click()
        await expect(menu).to_have_attribute("aria-expanded", "true")
        await expect(page.get_by_label("Answer from")).to_be_visible()
        await expect(page.get_by_label("Answer from")).to_be_focused()
        await page.keyboard.press("Escape")
        await expect(page.get_by_label("Answer from")).to_be_hidden()
        await expect(menu).to_have_attribute("aria-expanded", "false")
        await expect(menu).to_be_focused()

        await ask(page, "How do flaps help at low speed?")
        answer = last_answer(page)
        await expect(answer).to_have_attribute("data-status", "complete")
        await expect(answer.locator("button.cite")).to_be_visible()
        assert await page.evaluate(overflow) <= 0
        for name in ("Send", "Stop"):
            box = await page.get_by_role("button", name=name).bounding_box()
            assert box is not None and box["x"] + box["width"] <= 390 and box["height"] >= 40
        assert await page.evaluate(LOW_CONTRAST) == []
        await save_screenshot(page, tmp_path_factory, "chat-page-phone.png")
        assert tab.problems == []
    finally:
        await page.context.close()


async def test_the_page_has_its_security_headers_and_leaves_the_api_alone(
    client: QuartClient,  # noqa: F811 - the fixture
) -> None:
    page = await client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert '<script type="module" src="/web/app.js"></script>' in await page.get_data(as_text=True)
    policy = page.headers["content-security-policy"]
    directives = dict(part.strip().split(" ", 1) for part in policy.split(";"))
    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == "'self'"
    assert directives["style-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert directives["connect-src"] == "'self' ws://localhost wss://localhost"
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["referrer-policy"] == "no-referrer"

    # Cached, and revalidated with one cheap 304.
    etag = page.headers["etag"]
    assert page.headers["cache-control"] == "no-cache"
    again = await client.get("/", headers={"If-None-Match": etag})
    assert again.status_code == 304 and await again.get_data() == b""
    assert again.headers["etag"] == etag and "content-security-policy" in again.headers
    script = await client.get("/web/app.js")
    assert script.status_code == 200
    assert script.headers["content-type"] == "text/javascript; charset=utf-8"
    assert script.headers["etag"] != etag
    revalidated = await client.get("/web/app.js", headers={"If-None-Match": script.headers["etag"]})
    assert revalidated.status_code == 304
    assert (await client.get("/web/markdown.js")).headers["content-type"] == "text/javascript; charset=utf-8"
    assert (await client.get("/web/app.css")).headers["content-type"] == "text/css; charset=utf-8"

    # Nothing else is served from the folder, and no path escapes it.
    for path in (
        "/web/index.html",
        "/web/nothing.js",
        "/web/..%2Fweb.py",
        "/web/../routes/web.py",
        "/index.html",
    ):
        missing = await client.get(path)
        assert missing.status_code == 404, path
        assert (await missing.get_json())["error"]["code"] == "not_found"

    # A Host header that is not a host name does not reach the policy.
    odd = await client.get("/", headers={"Host": "evil.example; script-src *"})
    assert odd.headers["content-security-policy"] == policy.replace(" ws://localhost wss://localhost", "")

    # The API and its docs are as they were.
    unauthenticated = await client.get("/v1/collections")
    assert unauthenticated.status_code == 401
    assert (await unauthenticated.get_json())["error"]["code"] == "unauthenticated"
    assert "content-security-policy" not in unauthenticated.headers
    docs = await client.get("/docs")
    assert docs.status_code == 200 and "swagger" in (await docs.get_data(as_text=True)).lower()
    assert "content-security-policy" not in docs.headers
    spec = await (await client.get("/openapi.json")).get_json()
    assert "/" not in spec["paths"] and not any(path.startswith("/web") for path in spec["paths"])


def test_the_page_never_writes_markup_from_strings() -> None:
    """The page builds its DOM from text nodes only: no innerHTML, outerHTML, insertAdjacentHTML,
    document.write, eval or inline handlers anywhere in its scripts or its HTML."""
    web = Path(__file__).resolve().parents[2] / "opentier" / "gateway" / "web"
    forbidden = re.compile(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function\(")
    for script in web.glob("*.js"):
        assert not forbidden.search(script.read_text()), script.name
    html = (web / "index.html").read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)", html), "inline script in index.html"
    assert not re.search(r"\son[a-z]+=|\sstyle=|<style", html), "inline handler or style in index.html"
