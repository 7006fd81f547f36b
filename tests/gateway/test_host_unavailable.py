"""When the host is down, silent or refuses the gateway's credential, API calls end promptly with a
clear error, never hang and never become a 401; once the host is back the same gateway works again."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Iterator

import pytest

from opentier.config import HostSettings, Settings
from opentier.gateway.app import create_app
from tests.gateway.served import (  # noqa: F401 - fixtures
    DEADLINE,
    RunningHost,
    Served,
    ServedAPI,
    new_member,
    running_host_fixture,
    served_api_fixture,
    served_fixture,
    served_settings_fixture,
    start_served,
    stop_served,
)


async def test_host_down_gives_503_with_retry_after_then_recovers(
    served: Served,
    served_api: ServedAPI,
    served_settings: Settings,
    running_host: RunningHost,
    caplog: pytest.LogCaptureFixture,
) -> None:
    member = await new_member(served_settings, served_api)
    created = await served_api.post("/v1/collections", json={"name": "docs"}, headers=member.headers)
    assert created.status_code == 201
    assert (await served_api.get("/readyz")).status_code == 200

    await running_host.stop()
    caplog.set_level(logging.INFO, logger="opentier.gateway.host")
    for method, path, body in [
        ("GET", "/v1/collections", None),
        ("GET", f"/v1/collections/{created.json()['id']}", None),
        ("POST", "/v1/search", {"query": "wings"}),
        ("POST", "/v1/collections", {"name": "other"}),
    ]:
        started = time.monotonic()
        response = await served_api.request(method, path, json=body, headers=member.headers)
        took = time.monotonic() - started
        assert response.status_code == 503, (method, path, response.text)
        assert response.json()["error"]["code"] == "host_unavailable"
        assert response.headers["retry-after"] == str(served_settings.gateway.retry_after_seconds)
        assert took < DEADLINE, f"{method} {path} took {took:.2f}s"
    # Reads were tried again (idempotent); the create was not.
    retried = [record.getMessage() for record in caplog.records if record.getMessage().startswith("retrying")]
    assert any("ListCollections" in line for line in retried)
    assert not any("CreateCollection" in line for line in retried)
    not_ready = await served_api.get("/readyz")
    assert not_ready.status_code == 503 and "UNREACHABLE" in not_ready.json()["error"]["message"]
    # Signing in does not need the host.
    assert (await served_api.get("/v1/auth/me", headers=member.headers)).status_code == 200

    await running_host.start()
    deadline = time.monotonic() + 15
    while True:
        response = await served_api.get("/v1/collections", headers=member.headers)
        if response.status_code == 200 or time.monotonic() > deadline:
            break
    assert response.status_code == 200, response.text
    assert [item["name"] for item in response.json()["collections"]] == ["docs"]
    # Each channel of the pool reconnects on its own (backoff capped at 2 s): readiness comes back too.
    while (ready := await served_api.get("/readyz")).status_code != 200 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert ready.status_code == 200, ready.text


@pytest.fixture
def silent_host() -> Iterator[str]:
    """A TCP port that accepts connections and never speaks gRPC (a hung host, a black hole)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        yield f"127.0.0.1:{listener.getsockname()[1]}"


async def test_silent_host_gives_503_within_the_deadline(
    served_settings: Settings, served_api: ServedAPI, silent_host: str
) -> None:
    member = await new_member(served_settings, served_api)
    deadline = 1.0
    settings = served_settings.model_copy(
        update={
            "gateway": served_settings.gateway.model_copy(
                update={"host_targets": [silent_host], "host_deadline_seconds": deadline}
            )
        }
    )
    running = await start_served(create_app(settings), settings)
    try:
        served_api.client.base_url = running.url  # type: ignore[assignment]
        for method, path, body in [
            ("GET", "/v1/collections", None),
            ("POST", "/v1/collections", {"name": "x"}),
        ]:
            started = time.monotonic()
            response = await served_api.request(method, path, json=body, headers=member.headers)
            took = time.monotonic() - started
            assert response.status_code == 503, response.text
            assert response.json()["error"]["code"] == "host_unavailable"
            assert "did not answer in time" in response.json()["error"]["message"]
            assert deadline * 0.9 < took < deadline + 1.0, took
        assert (await served_api.get("/readyz")).status_code == 503
    finally:
        await stop_served(running)


async def test_wrong_host_credential_is_a_server_error_not_the_users(
    served_settings: Settings, served_api: ServedAPI, caplog: pytest.LogCaptureFixture
) -> None:
    member = await new_member(served_settings, served_api)
    settings = served_settings.model_copy(
        update={"host": HostSettings(token="not-the-host-token-0123456789")}
    )
    running = await start_served(create_app(settings), settings)
    try:
        served_api.client.base_url = running.url  # type: ignore[assignment]
        response = await served_api.get("/v1/collections", headers=member.headers)
        assert response.status_code == 500, response.text
        assert response.json()["error"]["code"] == "internal"
        assert "refused its credential" in response.json()["error"]["message"]
        assert "not-the-host-token" not in response.text
        assert any("refused the gateway's credential" in record.getMessage() for record in caplog.records)
    finally:
        await stop_served(running)
