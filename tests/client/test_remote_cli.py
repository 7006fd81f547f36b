"""``opentier remote`` against the real gateway, host and PostgreSQL, through click's runner (in a
thread: the served gateway shares the test's event loop): login writes the config file 0600 without
echoing the key, ingest uploads a folder and waits, search prints a table, chat prints the answer and
its source, logout revokes the key."""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from opentier.cli import main
from opentier.client import profile
from tests.client.conftest import FIRST_SENTENCE, MANUAL, Account
from tests.gateway.streaming import ChatGateway, ingest_text, signed_in_key


class Remote:
    """Runs ``opentier remote ...`` with its config file in a temporary folder and a clean environment."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.env: dict[str, str | None] = {
            profile.PATH_ENV: str(config),
            profile.URL_ENV: None,
            profile.API_KEY_ENV: None,
            "OPENTIER_PASSWORD": None,
        }

    async def __call__(self, *args: str, input: str | None = None) -> Result:
        runner = CliRunner()
        return await asyncio.to_thread(runner.invoke, main, ["remote", *args], input=input, env=self.env)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def ok(result: Result) -> str:
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


async def test_login_ingest_search_chat_and_logout(
    chat_gateway: ChatGateway, account: Account, tmp_path: Path
) -> None:
    remote = Remote(tmp_path / "config" / "opentier" / "remote.toml")

    login = await remote(
        "login",
        "--url",
        chat_gateway.url,
        "--email",
        account.email,
        "--tenant",
        account.tenant,
        input=f"{account.password}\n",
    )
    shown = ok(login)
    assert f"as {account.email}" in shown and "saved in" in shown
    assert mode(remote.config) == 0o600 and mode(remote.config.parent) == 0o700
    saved = profile.load(remote.config)
    assert saved.url == chat_gateway.url and saved.api_key and saved.api_key.startswith("otk_")
    assert saved.api_key not in shown and account.password not in remote.config.read_text()

    folder = tmp_path / "manuals"
    (folder / "more").mkdir(parents=True)
    (folder / "wings.txt").write_text(MANUAL)
    (folder / "more" / "slats.txt").write_text("Slats are on the leading edge of the wing.\n")
    (folder / ".draft.txt").write_text("hidden files are skipped")
    ingested = ok(await remote("ingest", str(folder), "--collection", "manuals"))
    assert "manuals/wings.txt" in ingested and "manuals/more/slats.txt" in ingested
    assert ingested.count("succeeded") == 2 and ".draft" not in ingested
    (folder / "diagram.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    again = await remote("ingest", str(folder), "-c", "manuals")
    assert again.exit_code == 1, again.output  # one file failed, and the table says why
    assert again.output.count("unchanged") == 2
    assert "document_failed while loading" in again.output and "image/png" in again.output

    listed = ok(await remote("collections"))
    assert "manuals" in listed

    found = ok(await remote("search", "trailing", "edge", "flaps", "-c", "manuals", "-k", "3"))
    assert "manuals/wings.txt" in found and "score" in found

    chat = ok(await remote("chat", "How", "do", "flaps", "work?", "-c", "manuals"))
    answered, sources = chat.split("Sources:\n")
    assert answered.strip().endswith("[1]") and "flaps" in answered
    assert sources.startswith("  [1] ") and "manuals/wings.txt" in sources.splitlines()[0]

    as_json = ok(await remote("chat", "--json", "--sse", "-c", "manuals", "What do flaps raise?"))
    answer: dict[str, Any] = json.loads(as_json[as_json.index("{") :])
    assert answer["status"] == "complete" and answer["answer"].endswith("[1]")
    assert [c["source"] for c in answer["citations"]] == ["manuals/wings.txt"]
    assert answer["answer"].removesuffix(" [1]") in answer["citations"][0]["text"]

    out = ok(await remote("logout"))
    assert "revoked" in out and not remote.config.exists()
    refused = await remote("whoami", "--url", chat_gateway.url, "--api-key", saved.api_key)
    assert refused.exit_code == 2 and "unauthenticated" in refused.output


async def test_interactive_chat_with_the_key_from_the_environment(
    chat_gateway: ChatGateway, tmp_path: Path
) -> None:
    """Without a message, chat reads lines until /quit; URL and key come from the environment."""
    user = await signed_in_key(chat_gateway)
    ingested = await ingest_text(chat_gateway, user, FIRST_SENTENCE, filename="one.txt")
    remote = Remote(tmp_path / "absent.toml")
    remote.env |= {profile.URL_ENV: chat_gateway.url, profile.API_KEY_ENV: user.key}
    chat = ok(await remote("chat", "-c", ingested.collection_id, input="What do flaps do?\n/new\n/quit\n"))
    assert f"{FIRST_SENTENCE} [1]" in chat and "  [1] one.txt" in chat
    assert "a new conversation starts" in chat


@pytest.mark.parametrize(
    "command",
    [
        (),
        ("login",),
        ("logout",),
        ("whoami",),
        ("collections",),
        ("collections", "create"),
        ("collections", "delete"),
        ("ingest",),
        ("search",),
        ("chat",),
    ],
)
def test_every_command_has_help(command: tuple[str, ...]) -> None:
    result = CliRunner().invoke(main, ["remote", *command, "--help"], prog_name="opentier")
    assert result.exit_code == 0, result.output
    assert "Usage: opentier remote" in result.output


def test_without_a_gateway_it_says_what_to_do(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        ["remote", "search", "flaps"],
        env={profile.PATH_ENV: str(tmp_path / "none.toml"), profile.URL_ENV: None, profile.API_KEY_ENV: None},
    )
    assert result.exit_code == 2
    assert "no gateway URL" in result.output and "opentier remote login" in result.output
