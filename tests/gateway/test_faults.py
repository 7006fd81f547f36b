"""Faults under the real gateway (Hypercorn), the real host and a PostgreSQL of this module's own (so that
stopping it disturbs no other test): PostgreSQL stopped and started again while idle and while an answer
streams (503 `database_error`, then served again without any restart); the host process killed with
SIGKILL mid-answer (an error event within a bounded time, a stream on another host unaffected, served
again once the host is back); the model's API failing, timing out or stalling mid-answer (an error
event, the partial answer stored, only the tokens produced charged). Each test leaves the system running.

Already covered elsewhere: the in-process host stopped mid-answer (tests/gateway/test_chat_ws.py), the
host down or silent for REST calls (tests/gateway/test_host_unavailable.py), a host killed mid-ingestion
(tests/host/test_crash_resume.py), the model plugins' own error mapping (tests/plugins/test_llm_*.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from opentier.config import Settings
from opentier.db.embedded import EmbeddedPostgres
from opentier.db.migrate import migrate
from opentier.errors import LLMTimeoutError, LLMUnavailableError
from opentier.gateway.app import create_app
from tests.gateway.served import start_served, stop_served
from tests.gateway.streaming import (  # noqa: F401 - fixtures
    ChatGateway,
    chat_gateway_fixture,
    chat_settings_fixture,
    host_chat_options_fixture,
    limits_options_fixture,
    read_turn,
    receive,
    signed_in_key,
    streaming_host_fixture,
    streaming_options_fixture,
    ws_connect,
)
from tests.gateway.test_usage_ledger import wait_for_rows

#: Seconds within which a request or an event must come while something is down.
BOUNDED = 10.0
#: Seconds a restarted service gets to serve again.
RECOVERY = 30.0


@pytest.fixture(scope="module")
def fault_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    """A PostgreSQL of this module only, which its tests stop and start."""
    server = EmbeddedPostgres(tmp_path_factory.mktemp("fault-postgres") / "data", database="opentier_faults")
    try:
        subprocess.run(postgres_command(server, "start"), check=True, timeout=90)
        yield server
    finally:
        subprocess.run(postgres_command(server, "stop"), check=True, timeout=90)
        assert not server.processes()


@pytest_asyncio.fixture(name="db_settings", scope="module")
async def db_settings_fixture(fault_postgres: EmbeddedPostgres) -> Settings:
    """Overrides tests/conftest.py's: every fixture of this module uses :func:`fault_postgres`."""
    url = fault_postgres.url()
    await migrate(url)
    rendered = make_url(url.render_as_string(hide_password=False))
    return Settings(database={"url": rendered.render_as_string(hide_password=False)})  # type: ignore[arg-type]


def postgres_command(server: EmbeddedPostgres, action: str) -> list[str]:
    """``server.start()`` or ``.stop()`` run by a fresh process: forking pg_ctl as the server's user from
    this one, where gRPC runs threads, now and then crashes the forked child before it runs pg_ctl."""
    script = (
        "import sys; from opentier.db.embedded import EmbeddedPostgres; "
        f"getattr(EmbeddedPostgres(sys.argv[1], database=sys.argv[2]), {action!r})()"
    )
    return [sys.executable, "-c", script, str(server.data_dir), server.database]


async def postgres(server: EmbeddedPostgres, action: str) -> None:
    process = await asyncio.create_subprocess_exec(*postgres_command(server, action))
    assert await asyncio.wait_for(process.wait(), 60) == 0, f"PostgreSQL {action} failed"


async def start_turn(ws: Any, message: str, **fields: Any) -> None:
    await ws.send(json.dumps({"type": "start", "message": message, **fields}))


async def until_ok(gateway: ChatGateway, method: str, path: str, **options: Any) -> Any:
    """The first answer that is not a 503, within :data:`RECOVERY` seconds."""
    deadline = time.monotonic() + RECOVERY
    while True:
        response = await gateway.api.request(method, path, **options)
        if response.status_code != 503 or time.monotonic() > deadline:
            return response
        await asyncio.sleep(0.2)


# -- PostgreSQL ------------------------------------------------------------------------------------


async def test_postgres_stopped_gives_503_then_everything_works_again(
    chat_gateway: ChatGateway, fault_postgres: EmbeddedPostgres
) -> None:
    user = await signed_in_key(chat_gateway)
    headers = user.key_headers
    created = await chat_gateway.api.post("/v1/collections", json={"name": "kept"}, headers=headers)
    assert created.status_code == 201, created.text

    await postgres(fault_postgres, "stop")
    try:
        for method, path, body in [
            ("GET", "/v1/collections", None),
            ("POST", "/v1/collections", {"name": "while-down"}),
            ("GET", "/v1/auth/me", None),
            ("GET", "/v1/conversations", None),
        ]:
            started = time.monotonic()
            response = await chat_gateway.api.request(method, path, json=body, headers=headers)
            took = time.monotonic() - started
            assert response.status_code == 503, (method, path, response.status_code, response.text)
            assert response.json()["error"]["code"] in {"database_error", "host_busy"}, response.text
            assert int(response.headers["retry-after"]) > 0
            assert took < BOUNDED, (method, path, took)
    finally:
        await postgres(fault_postgres, "start")

    listed = await until_ok(chat_gateway, "GET", "/v1/collections", headers=headers)
    assert listed.status_code == 200, listed.text
    assert [c["name"] for c in listed.json()["collections"]] == ["kept"]
    assert (await chat_gateway.api.get("/v1/auth/me", headers=headers)).status_code == 200
    async with ws_connect(chat_gateway, key=user.key) as ws:
        assert (await receive(ws))["type"] == "hello"
        await start_turn(ws, "Hello again")
        events = await read_turn(ws)
        assert events[-1]["type"] == "done" and events[-1]["status"] == "complete", events[-1]


async def test_postgres_stopped_mid_answer_ends_the_turn_then_chat_works_again(
    chat_gateway: ChatGateway, fault_postgres: EmbeddedPostgres
) -> None:
    user = await signed_in_key(chat_gateway)
    async with ws_connect(chat_gateway, key=user.key) as ws:
        assert (await receive(ws))["type"] == "hello"
        await start_turn(ws, "Talk forever", llm="endless")
        started = await receive(ws)
        assert started["type"] == "started", started
        assert (await receive(ws))["type"] == "token"
        await postgres(fault_postgres, "stop")
        try:
            await ws.send(json.dumps({"type": "cancel"}))
            rest = await read_turn(ws, timeout=BOUNDED)
        finally:
            await postgres(fault_postgres, "start")
        error, done = rest[-2], rest[-1]
        assert error["type"] == "error" and error["code"] == "database_error" and error["retryable"], error
        assert done["type"] == "done" and done["status"] == "failed" and done["finish_reason"] == "error"
        # PostgreSQL was back before the next start: it is answered.
        deadline = time.monotonic() + RECOVERY
        while True:
            await start_turn(ws, "Hello again")
            first = await receive(ws, timeout=BOUNDED)
            if first["type"] != "error" or time.monotonic() > deadline:
                break
            assert first["code"] in {"database_error", "host_unavailable", "host_busy"}, first
            await asyncio.sleep(0.5)
        assert first["type"] == "started", first
        events = await read_turn(ws)
        assert events[-1]["status"] == "complete", events[-1]
    # The user's message is stored; the answer could not be (the database was down when it ended): its
    # row stays `in_progress` until a host start marks it failed (`host_stopped`, docs/streaming.md).
    stored = await until_ok(
        chat_gateway, "GET", f"/v1/conversations/{done['conversation_id']}", headers=user.key_headers
    )
    assert stored.status_code == 200, stored.text
    messages = stored.json()["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert messages[0]["content"] == "Talk forever"
    assert messages[1]["status"] == "in_progress", messages[1]


# -- the host process ------------------------------------------------------------------------------


class HostProcess:
    """``python -m tests.gateway.fault_host`` on a fixed port: killed with SIGKILL, started again."""

    def __init__(self, settings: Settings, data_dir: Path) -> None:
        self.database_url = settings.database.url
        self.data_dir = data_dir
        self.port = 0
        self.process: subprocess.Popen[str] | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.gateway.fault_host",
                str(self.database_url),
                str(self.data_dir),
                str(self.port),
            ],
            cwd=Path(__file__).resolve().parents[2],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.search(r"serving on \S+:(\d+)", line)
        assert match, f"the host did not start: {line!r} (exit {process.poll()})"
        self.port = int(match.group(1))
        self.process = process

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        self.process = None


@pytest.fixture
def host_process(db_settings: Settings, tmp_path: Path) -> Iterator[HostProcess]:
    host = HostProcess(db_settings, tmp_path / "killed-host")
    host.start()
    try:
        yield host
    finally:
        host.kill()


@pytest_asyncio.fixture
async def killable_gateway(
    chat_gateway: ChatGateway, host_process: HostProcess
) -> AsyncIterator[ChatGateway]:
    """A second gateway like ``chat_gateway``, in front of the host process instead."""
    settings = chat_gateway.settings.model_copy(
        update={
            "gateway": chat_gateway.settings.gateway.model_copy(
                update={"host_targets": [host_process.target]}
            )
        }
    )
    served = await start_served(create_app(settings), settings)
    try:
        yield ChatGateway(served, settings, chat_gateway.api, chat_gateway.host)
    finally:
        await stop_served(served)


async def tokens_for(ws: Any, seconds: float) -> str:
    """The text of the tokens received on ``ws`` during ``seconds``."""
    received = ""
    since = time.monotonic()
    while time.monotonic() - since < seconds:
        event = await receive(ws)
        assert event["type"] in {"token", "heartbeat"}, event
        received += event.get("text", "") if event["type"] == "token" else ""
    return received


async def test_host_process_killed_mid_answer_errors_promptly_and_serves_after_restart(
    killable_gateway: ChatGateway, chat_gateway: ChatGateway, host_process: HostProcess
) -> None:
    gateway = killable_gateway
    gateway.api.client.base_url = gateway.url
    user = await signed_in_key(gateway)
    async with ws_connect(chat_gateway, key=user.key) as other, ws_connect(gateway, key=user.key) as ws:
        # A stream on another host (the in-process one, behind the other gateway) goes on meanwhile.
        assert (await receive(other))["type"] == "hello"
        await start_turn(other, "Talk forever elsewhere", llm="endless")
        assert (await receive(other))["type"] == "started"
        assert (await receive(ws))["type"] == "hello"
        await start_turn(ws, "Talk forever", llm="endless")
        started = await receive(ws)
        assert started["type"] == "started", started
        # Tokens for a while (the fault host writes the text so far every 0.2 s), then the kill.
        received = await tokens_for(ws, 1.0)
        killed = time.monotonic()
        host_process.kill()
        rest = await read_turn(ws, timeout=BOUNDED)
        took = time.monotonic() - killed
        error, done = rest[-2], rest[-1]
        assert error["type"] == "error" and error["code"] == "host_unavailable" and error["retryable"], error
        assert done["type"] == "done" and done["status"] == "failed" and done["finish_reason"] == "error"
        assert took < BOUNDED, took
        ticks = 0
        while ticks < 5:
            ticks += (await receive(other))["type"] == "token"
        await other.send(json.dumps({"type": "cancel"}))
        ended = await read_turn(other)
        assert ended[-1]["status"] == "cancelled", ended[-1]

        host_process.start()  # the same port
        deadline = time.monotonic() + RECOVERY
        while True:
            await start_turn(ws, "Hello again")
            first = await receive(ws, timeout=BOUNDED)
            if first["type"] != "error" or time.monotonic() > deadline:
                break
            assert first["code"] == "host_unavailable", first
            await asyncio.sleep(0.5)
        assert first["type"] == "started", first
        events = await read_turn(ws)
        assert events[-1]["status"] == "complete", events[-1]

    # What a killed host leaves: the user's message, and the answer's row `in_progress` with the text
    # written at its last checkpoint (chat.checkpoint_seconds), until a host start marks it failed
    # (`host_stopped`).
    stored = await gateway.api.get(f"/v1/conversations/{done['conversation_id']}", headers=user.key_headers)
    assert stored.status_code == 200, stored.text
    messages = stored.json()["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert messages[0]["content"] == "Talk forever"
    assert messages[1]["status"] == "in_progress", messages[1]
    partial = messages[1]["content"]
    assert partial and received.startswith(partial), (partial, received)
    assert len(partial) >= len(received) / 3, "the last checkpoint is at most a fraction of a second old"


# -- the LLM ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("host_chat_options", [{"stall_timeout_seconds": 0.5}], indirect=True)
@pytest.mark.parametrize(
    ("failure", "code"),
    [
        (LLMUnavailableError("the model's API answered 529 overloaded"), "llm_unavailable"),
        (LLMTimeoutError("the model's API did not answer in time"), "llm_timeout"),
        (30.0, "llm_timeout"),  # stalls mid-stream: the host's stall timeout (0.5 s) ends it
    ],
    ids=["api-error", "api-timeout", "stall"],
)
async def test_an_llm_failing_mid_answer_ends_with_an_error_keeps_the_partial_and_charges_what_was_made(
    chat_gateway: ChatGateway, fault_postgres: EmbeddedPostgres, failure: Exception | float, code: str
) -> None:
    scripted = chat_gateway.llms.scripted
    scripted.script = ["Lift comes ", "from the wing ", failure]
    scripted.usage = None  # a failed API call reports no usage
    user = await signed_in_key(chat_gateway)
    async with ws_connect(chat_gateway, key=user.key) as ws:
        assert (await receive(ws))["type"] == "hello"
        await start_turn(ws, "Why do planes fly?", llm="scripted")
        events = await read_turn(ws, timeout=BOUNDED)
    error, done = events[-2], events[-1]
    assert error["type"] == "error" and error["code"] == code, error
    assert done["status"] == "failed" and done["finish_reason"] == "error", done
    produced = "".join(event["text"] for event in events if event["type"] == "token")
    assert produced == "Lift comes from the wing "
    usage = [event for event in events if event["type"] == "usage"]

    stored = await chat_gateway.api.get(
        f"/v1/conversations/{done['conversation_id']}", headers=user.key_headers
    )
    answer = stored.json()["messages"][-1]
    assert answer["status"] == "failed" and answer["content"] == produced, answer

    engine = create_async_engine(fault_postgres.url())
    try:
        [row] = await wait_for_rows(engine, 1, user.user_id)
    finally:
        await engine.dispose()
    # Charged for the five words produced (the host counts them: the API reported no usage), no more.
    assert row["message_id"] == done["message_id"], row
    assert row["output_tokens"] == 5, (row, usage)
    assert [(u["input_tokens"], u["output_tokens"]) for u in usage] == [(row["input_tokens"], 5)]
