"""Serving: a graceful stop lets the request in flight finish while new connections are refused, then
closes the channels to the host; `opentier gateway serve` runs the app on uvloop and exits 0 on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url

from opentier.config import Settings
from opentier.gateway.app import create_app
from opentier.gateway.host import HostClient
from opentier.gateway.routes.context import HOST_CLIENT_KEY
from opentier.gateway.state import gateway_state
from tests.gateway.served import (  # noqa: F401 - fixtures
    RunningHost,
    ServedAPI,
    new_member,
    running_host_fixture,
    served_api_fixture,
    served_fixture,
    served_settings_fixture,
    start_served,
)
from tests.host.conftest import TOKEN

OPENTIER = Path(sys.executable).with_name("opentier")


async def slow_upload(started: asyncio.Event, release: asyncio.Event) -> AsyncIterator[bytes]:
    """A multipart body whose second half waits for ``release``: a request in flight for as long as needed."""
    yield b'--b0undary\r\nContent-Disposition: form-data; name="file"; filename="slow.txt"\r\n\r\n'
    yield b"The first half of a slow upload. " * 50
    started.set()
    await release.wait()
    yield b"The second half arrives after the stop began. " * 50
    yield b"\r\n--b0undary--\r\n"


async def test_graceful_stop_finishes_the_request_in_flight(
    served_settings: Settings, served_api: ServedAPI
) -> None:
    member = await new_member(served_settings, served_api)
    collection = await served_api.post("/v1/collections", json={"name": "docs"}, headers=member.headers)
    app = create_app(served_settings)
    running = await start_served(app, served_settings)
    started, release = asyncio.Event(), asyncio.Event()
    async with httpx.AsyncClient(base_url=running.url, timeout=30) as client:
        upload = asyncio.create_task(
            client.post(
                f"/v1/collections/{collection.json()['id']}/documents",
                content=slow_upload(started, release),
                headers=member.headers | {"Content-Type": "multipart/form-data; boundary=b0undary"},
            )
        )
        await asyncio.wait_for(started.wait(), 10)
        running.server.request_stop()
        await asyncio.sleep(0.3)
        # The listening socket is closed: a new connection is refused while the upload goes on.
        with pytest.raises(httpx.ConnectError):
            async with httpx.AsyncClient(base_url=running.url) as late:
                await late.get("/healthz")
        assert not running.task.done()
        release.set()
        response = await asyncio.wait_for(upload, 20)
    assert response.status_code == 202, response.text
    assert response.json()["job"]["source"] == "slow.txt"
    await asyncio.wait_for(running.task, 20)
    client_pool = gateway_state(app).extras[HOST_CLIENT_KEY]
    assert isinstance(client_pool, HostClient)
    with pytest.raises(Exception, match="not connected to the host"):
        client_pool._next_channel()


async def test_serve_command_runs_and_stops_on_sigterm(
    served_settings: Settings, running_host: RunningHost, tmp_path: Path
) -> None:
    url = make_url(str(served_settings.database.url))
    env = {key: value for key, value in os.environ.items() if not key.startswith("OPENTIER_")}
    env |= {
        "OPENTIER_DATA_DIR": str(tmp_path / "state"),
        "OPENTIER_DATABASE__URL": url.render_as_string(hide_password=False),
        "OPENTIER_HOST__TOKEN": TOKEN,
        "OPENTIER_GATEWAY__JWT_SECRET": "cli-test-jwt-secret-0123456789abcdefghij",
        "OPENTIER_GATEWAY__HOST_TARGETS": json.dumps([running_host.target]),
    }
    if served_settings.database.password is not None:
        env["OPENTIER_DATABASE__PASSWORD"] = served_settings.database.password.get_secret_value()
    process = await asyncio.create_subprocess_exec(
        str(OPENTIER),
        "gateway",
        "serve",
        "--address",
        "127.0.0.1",
        "--port",
        "0",
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=tmp_path,
    )
    assert process.stderr is not None
    lines: list[dict[str, object]] = []
    try:
        base = None
        while base is None:
            raw = await asyncio.wait_for(process.stderr.readline(), 30)
            assert raw, f"the gateway exited early: {lines}"
            line = json.loads(raw)
            lines.append(line)
            message = str(line["message"])
            if message.startswith("gateway listening on "):
                base = message.split()[3]
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            ready = await client.get("/readyz", headers={"X-Request-ID": "probe-1"})
            assert ready.status_code == 200, ready.text
        process.send_signal(signal.SIGTERM)
        _, rest = await asyncio.wait_for(process.communicate(), 30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0
    lines += [json.loads(raw) for raw in rest.splitlines() if raw.strip()]
    assert any(line.get("request_id") == "probe-1" and line.get("route") == "/readyz" for line in lines), (
        lines
    )
    assert any("SIGTERM" in str(line["message"]) for line in lines), lines
    assert any(line["message"] == "gateway stopped" for line in lines), lines
