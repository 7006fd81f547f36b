"""``opentier chat`` and ``opentier conversations``: the real executable against the in-process host.

The host runs in the test process with the test models; each command runs as a subprocess, as a
user's shell would run it. The interactive test types into the command's stdin and presses Ctrl-C
(SIGINT) while an answer streams.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

from opentier.config import Settings
from opentier.errors import LLMRateLimitedError
from opentier.generated.intelligence.v1 import conversations_pb2

from .chat_host import ChatHost, library, serve_chat_host
from .conftest import TOKEN

OPENTIER = Path(sys.executable).with_name("opentier")


@pytest_asyncio.fixture
async def chat_host(db_settings: Settings, tmp_path: Path) -> AsyncIterator[ChatHost]:
    async with serve_chat_host(db_settings, tmp_path) as host:
        yield host


def env(host: ChatHost) -> dict[str, str]:
    found = {k: v for k, v in os.environ.items() if not k.startswith("OPENTIER_")}
    found.update(
        OPENTIER_DATA_DIR=str(host.settings.data_dir),
        OPENTIER_HOST__ADDRESS="127.0.0.1",
        OPENTIER_HOST__PORT=str(host.server.port),
        OPENTIER_HOST__TOKEN=TOKEN,
        OPENTIER_TENANT=host.tenant,
        COLUMNS="200",
    )
    return found


async def opentier(host: ChatHost, *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        str(OPENTIER), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env(host)
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_ask_continue_list_show_and_delete(chat_host: ChatHost) -> None:
    await library(chat_host)
    code, out, err = await opentier(
        chat_host, "chat", "-c", "docs", "--llm", "quoting", "-m", "How do wings make lift?"
    )
    assert code == 0, err
    assert re.match(r"Wings make lift\. \[\d\]", out), out
    assert re.search(r"Sources:\n  \[\d\] wings\.txt\n", out), out
    conversation_id = re.search(r"conversation (\S+)", err)
    assert conversation_id, err

    chat_host.scripted.script = ["Flaps help [1]."]
    code, out, err = await opentier(
        chat_host, "chat", "--conversation", conversation_id.group(1), "-m", "And at low speed?", "--json"
    )
    assert code == 0, err
    outcome = json.loads(out)
    assert (outcome["status"], outcome["answer"]) == ("complete", "Flaps help [1].")
    assert outcome["conversation_id"] == conversation_id.group(1)
    assert outcome["citations"][0]["source_number"] == 1 and outcome["citations"][0]["chunk_id"]

    code, out, err = await opentier(chat_host, "conversations")
    assert code == 0, err
    assert conversation_id.group(1) in out and "How do wings make lift?" in out
    code, out, err = await opentier(chat_host, "conversations", "show", conversation_id.group(1))
    assert code == 0, err
    assert out.count("user") == 2 and out.count("assistant") == 2 and "Flaps help [1]." in out
    assert "wings.txt" in out
    code, out, err = await opentier(chat_host, "conversations", "delete", conversation_id.group(1))
    assert (code, out.strip()) == (0, f"deleted conversation {conversation_id.group(1)} (4 messages)")
    code, out, err = await opentier(chat_host, "conversations", "show", conversation_id.group(1))
    assert code == 2 and "error [not_found]" in err


async def test_a_failed_answer_exits_non_zero(chat_host: ChatHost) -> None:
    chat_host.scripted.script = [LLMRateLimitedError("slow down")]
    code, _out, err = await opentier(chat_host, "chat", "-m", "Hello?")
    assert code == 1
    assert "error [llm_rate_limited]: slow down" in err


async def test_ctrl_c_cancels_the_answer_and_the_session_goes_on(chat_host: ChatHost) -> None:
    chat_host.scripted.script = ["Once upon a time ", 30.0, "never sent"]
    process = await asyncio.create_subprocess_exec(
        str(OPENTIER),
        "chat",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env(chat_host),
    )
    assert process.stdin is not None and process.stdout is not None
    try:
        process.stdin.write(b"Tell me a long story\n")
        await process.stdin.drain()
        seen = b""
        async with asyncio.timeout(30):
            while b"Once upon a time" not in seen:
                seen += await process.stdout.read(64)
        process.send_signal(signal.SIGINT)
        assert await chat_host.scripted.wait_ended() == ["CancelledError"]
        chat_host.scripted.script = ["Short answer."]
        process.stdin.write(b"Another question\n/quit\n")
        await process.stdin.drain()
        out, err = await asyncio.wait_for(process.communicate(), 30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, err.decode()
    assert "Short answer." in (seen + out).decode()
    assert "answer cancelled" in err.decode()

    listed = await chat_host.conversations.ListConversations(
        conversations_pb2.ListConversationsRequest(caller=chat_host.caller(user="cli")),
        metadata=(("authorization", f"Bearer {TOKEN}"),),
        timeout=10,
    )
    [conversation] = listed.conversations
    stored = await chat_host.conversation(conversation.id, user="cli")
    assert [m.status for m in stored.messages] == [
        conversations_pb2.MESSAGE_STATUS_COMPLETE,
        conversations_pb2.MESSAGE_STATUS_CANCELLED,
        conversations_pb2.MESSAGE_STATUS_COMPLETE,
        conversations_pb2.MESSAGE_STATUS_COMPLETE,
    ]
    assert stored.messages[1].content == "Once upon a time "
