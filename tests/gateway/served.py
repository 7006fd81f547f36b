"""The real gateway under Hypercorn on a loopback port, in front of the real gRPC host, for tests where
the transport matters (uploads, 503s, shutdown, traces).

Import the fixtures into a test module by their function names (``from tests.gateway.served import
served_fixture, ...``);
they build on ``gateway_settings`` of tests/gateway/conftest.py and ``db_settings`` of tests/conftest.py.

``running_host``
    :class:`RunningHost`: the intelligence host (port 0, the test embedder, the text loader and the
    vector retriever) that can be stopped and started again on the same port.
``served_settings``
    The gateway settings pointing at that host, with its token, a short deadline and small limits.
``served``
    :class:`Served`: ``create_app(served_settings)`` served by Hypercorn on 127.0.0.1, port 0; stopped
    gracefully at the end.
``served_api``
    :class:`ServedAPI`: an HTTP client of it that checks every response against its ``/openapi.json``.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc.aio
import httpx
import pytest
import pytest_asyncio
from openapi_core import OpenAPI
from openapi_core.testing import MockRequest, MockResponse
from quart import Quart

from opentier.config import HostSettings, RetrievalSettings, Settings
from opentier.gateway.app import create_app
from opentier.gateway.identity.bootstrap import create_admin
from opentier.gateway.serve import GatewayServer, bind_socket
from opentier.host.runtime import HostRuntime
from opentier.host.server import HostServer
from opentier.plugin_manager import PluginSelection, load_plugins
from tests.engine.helpers import HashEmbedder, plugin
from tests.gateway.conftest import PASSWORD
from tests.host.conftest import TOKEN, host_settings

#: The upload limit of the served gateway (small, so the 413 test sends little).
UPLOAD_LIMIT = 256 * 1024
#: Deadline of the served gateway's host calls: short, so the host-down test is quick.
DEADLINE = 3.0


class RunningHost:
    """The real host; :meth:`stop` and :meth:`start` again keep its port, as a restarted host would."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.server: HostServer | None = None

    @property
    def target(self) -> str:
        assert self.server is not None
        return self.server.target

    async def start(self) -> None:
        plugins = load_plugins(
            selection=PluginSelection(allow=["text", "basic-cleaners", "vector"]),
            extra=[("test", plugin(HashEmbedder()))],
        )
        server = HostServer(
            self.settings, plugins, TOKEN, runtime=HostRuntime(self.settings, plugins.registry)
        )
        await server.start()
        self.server = server
        # A restart binds the same port.
        self.settings = self.settings.model_copy(
            update={"host": self.settings.host.model_copy(update={"port": server.port})}
        )

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(grace=0.5)
            self.server = None

    def channel(self) -> grpc.aio.Channel:
        return grpc.aio.insecure_channel(self.target)


@pytest_asyncio.fixture(name="running_host")
async def running_host_fixture(db_settings: Settings, tmp_path: Path) -> AsyncIterator[RunningHost]:
    root = tmp_path / "root"
    root.mkdir()
    # The host accepts larger uploads than the gateway, so that the gateway's own limit is what a test meets.
    settings = host_settings(
        db_settings, tmp_path / "host-state", root, max_upload_bytes=4 * UPLOAD_LIMIT
    ).model_copy(update={"retrieval": RetrievalSettings(retriever="vector")})
    host = RunningHost(settings)
    await host.start()
    try:
        yield host
    finally:
        await host.stop()


@pytest.fixture(name="served_settings")
def served_settings_fixture(
    gateway_settings: Settings, running_host: RunningHost, tmp_path: Path
) -> Settings:
    gateway = gateway_settings.gateway.model_copy(
        update={
            "host_targets": [running_host.target],
            "host_deadline_seconds": DEADLINE,
            "max_upload_bytes": UPLOAD_LIMIT,
            "max_json_bytes": 64 * 1024,
            "retry_after_seconds": 2,
            "shutdown_grace_seconds": 5.0,
        }
    )
    return gateway_settings.model_copy(
        update={"data_dir": tmp_path / "gateway-state", "host": HostSettings(token=TOKEN), "gateway": gateway}
    )


@dataclass
class Served:
    app: Quart
    server: GatewayServer
    task: asyncio.Task[None]

    @property
    def url(self) -> str:
        return self.server.url


async def start_served(app: Quart, settings: Settings) -> Served:
    """Serve ``app`` on 127.0.0.1:0 and wait until it answers."""
    server = GatewayServer(app, settings, sock=bind_socket("127.0.0.1", 0))
    task = asyncio.create_task(server.serve())
    async with httpx.AsyncClient(base_url=server.url, timeout=5) as client:
        for _ in range(200):
            if task.done():
                await task  # raises what stopped it
            try:
                if (await client.get("/healthz")).status_code == 200:
                    return Served(app, server, task)
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.02)
    raise AssertionError("the gateway did not start serving")


async def stop_served(served: Served) -> None:
    served.server.request_stop()
    await asyncio.wait_for(served.task, 30)


@pytest_asyncio.fixture(name="served")
async def served_fixture(served_settings: Settings) -> AsyncIterator[Served]:
    running = await start_served(create_app(served_settings), served_settings)
    try:
        yield running
    finally:
        await stop_served(running)


class ServedAPI:
    """An HTTP client of the served gateway whose every response must match its /openapi.json."""

    def __init__(self, client: httpx.AsyncClient, spec: OpenAPI) -> None:
        self.client = client
        self.spec = spec
        self.checked = 0

    async def request(self, method: str, path: str, **options: Any) -> httpx.Response:
        response = await self.client.request(method, path, **options)
        request = MockRequest(
            str(self.client.base_url), method.lower(), path, args=options.get("params") or {}
        )
        checked = MockResponse(
            data=response.content,
            status_code=response.status_code,
            headers=dict(response.headers),
            content_type=response.headers.get("content-type", "application/json").split(";")[0],
        )
        try:
            self.spec.validate_response(request, checked)
        except Exception as err:
            raise AssertionError(
                f"{method} {path} → {response.status_code} does not match /openapi.json: {err!r}\n"
                f"{response.content!r}"
            ) from err
        self.checked += 1
        return response

    async def get(self, path: str, **options: Any) -> httpx.Response:
        return await self.request("GET", path, **options)

    async def post(self, path: str, **options: Any) -> httpx.Response:
        return await self.request("POST", path, **options)

    async def patch(self, path: str, **options: Any) -> httpx.Response:
        return await self.request("PATCH", path, **options)

    async def delete(self, path: str, **options: Any) -> httpx.Response:
        return await self.request("DELETE", path, **options)


@pytest_asyncio.fixture(name="served_api")
async def served_api_fixture(served: Served) -> AsyncIterator[ServedAPI]:
    async with httpx.AsyncClient(base_url=served.url, timeout=30) as client:
        document = await client.get("/openapi.json")
        assert document.status_code == 200
        yield ServedAPI(client, OpenAPI.from_dict(json.loads(document.content)))


@dataclass
class Member:
    """A signed-in user of a fresh tenant, made by its admin through the API."""

    tenant: str
    tenant_id: str
    user_id: str
    headers: dict[str, str]


async def new_member(settings: Settings, api: ServedAPI) -> Member:
    """An admin (bootstrapped as `opentier gateway create-admin` does) creates a member, who signs in."""
    tenant = f"tenant-{uuid.uuid4().hex[:10]}"
    admin_email = f"admin-{uuid.uuid4().hex[:8]}@example.org"
    await create_admin(settings, email=admin_email, password=PASSWORD, tenant=tenant)
    login = await api.post(
        "/v1/auth/login", json={"tenant": tenant, "email": admin_email, "password": PASSWORD}
    )
    assert login.status_code == 200, login.text
    admin_headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
    email = f"user-{uuid.uuid4().hex[:8]}@example.org"
    created = await api.post(
        "/v1/users",
        json={"email": email, "password": PASSWORD, "role": "member", "display_name": "Member"},
        headers=admin_headers,
    )
    assert created.status_code == 201, created.text
    login = await api.post("/v1/auth/login", json={"tenant": tenant, "email": email, "password": PASSWORD})
    assert login.status_code == 200, login.text
    headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
    me = await api.get("/v1/auth/me", headers=headers)
    assert me.status_code == 200, me.text
    return Member(tenant, me.json()["tenant"]["id"], me.json()["user"]["id"], headers)
