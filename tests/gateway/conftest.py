"""The real gateway app on the test database, its test client, and signed-in accounts.

Fixtures (function scope; every test gets its own app, login throttle and tenant):

``gateway_settings``
    :class:`~opentier.config.Settings` on the test database with a JWT secret, cheap argon2 parameters
    and small login limits (account 5/minute, address 12/minute).
``app``
    ``create_app(gateway_settings)``, serving (its database engine open) for the test.
``client``
    Quart's test client of ``app``.
``api``
    :class:`OpenAPIClient`: the same client, checking every response against the app's /openapi.json.
``tenant_name``, ``admin``, ``admin_token``
    A fresh tenant, its first admin (made with ``create_admin``, signed in) and its access token.
``make_user``
    ``await make_user(role="member")`` → a signed-in :class:`Account` the admin created in the tenant.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio
from openapi_core import OpenAPI
from openapi_core.testing import MockRequest, MockResponse
from quart import Quart, Response
from quart.testing import QuartClient

from opentier.config import AuthSettings, GatewaySettings, Settings
from opentier.gateway.app import create_app
from opentier.gateway.identity.bootstrap import create_admin

JWT_SECRET = "test-gateway-jwt-secret-" + "0123456789abcdef" * 4
PASSWORD = "correct horse battery staple"


def auth_settings(**overrides: Any) -> AuthSettings:
    options: dict[str, Any] = {
        "argon2_time_cost": 1,
        "argon2_memory_kib": 1024,
        "argon2_parallelism": 1,
        "login_limit_per_account": "5 per minute",
        "login_limit_per_address": "12 per minute",
    } | overrides
    return AuthSettings(**options)


@pytest.fixture
def gateway_settings(db_settings: Settings, request: pytest.FixtureRequest) -> Settings:
    marker = request.node.get_closest_marker("auth")
    overrides: dict[str, Any] = dict(marker.kwargs) if marker else {}
    return db_settings.model_copy(
        update={
            "gateway": GatewaySettings(jwt_secret=JWT_SECRET),
            "auth": auth_settings(**overrides),
        }
    )


@pytest_asyncio.fixture
async def app(gateway_settings: Settings) -> AsyncIterator[Quart]:
    app = create_app(gateway_settings)
    async with app.test_app():
        yield app


@pytest.fixture
def client(app: Quart) -> QuartClient:
    return app.test_client()


class OpenAPIClient:
    """Quart's test client whose every response must match the app's own /openapi.json."""

    def __init__(self, client: QuartClient, spec: OpenAPI) -> None:
        self.client = client
        self.spec = spec

    async def request(self, method: str, path: str, **options: Any) -> Response:
        response = await self.client.open(path, method=method, **options)
        body = await response.get_data()
        request = MockRequest(
            "http://localhost", method.lower(), path, args=options.get("query_string") or {}
        )
        checked = MockResponse(
            data=body,
            status_code=response.status_code,
            headers=dict(response.headers),
            content_type=response.mimetype or "application/json",
        )
        try:
            self.spec.validate_response(request, checked)
        except Exception as err:
            raise AssertionError(
                f"{method} {path} → {response.status_code} does not match /openapi.json: {err!r}\n{body!r}"
            ) from err
        return response

    async def get(self, path: str, **options: Any) -> Response:
        return await self.request("GET", path, **options)

    async def post(self, path: str, **options: Any) -> Response:
        return await self.request("POST", path, **options)

    async def patch(self, path: str, **options: Any) -> Response:
        return await self.request("PATCH", path, **options)

    async def put(self, path: str, **options: Any) -> Response:
        return await self.request("PUT", path, **options)

    async def delete(self, path: str, **options: Any) -> Response:
        return await self.request("DELETE", path, **options)


@pytest_asyncio.fixture
async def api(client: QuartClient) -> OpenAPIClient:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    return OpenAPIClient(client, OpenAPI.from_dict(json.loads(await response.get_data())))


@dataclass
class Account:
    tenant: str
    email: str
    password: str
    user_id: str
    role: str
    access_token: str
    refresh_token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


async def sign_in(api: OpenAPIClient, tenant: str, email: str, password: str = PASSWORD) -> Account:
    response = await api.post("/v1/auth/login", json={"tenant": tenant, "email": email, "password": password})
    assert response.status_code == 200, await response.get_json()
    body = await response.get_json()
    user = body["user"]
    return Account(
        tenant, email, password, user["id"], user["role"], body["access_token"], body["refresh_token"]
    )


@pytest.fixture
def tenant_name() -> str:
    return f"tenant-{uuid.uuid4().hex[:10]}"


async def new_admin(settings: Settings, api: OpenAPIClient, tenant: str) -> Account:
    email = f"admin-{uuid.uuid4().hex[:8]}@example.org"
    await create_admin(settings, email=email, password=PASSWORD, tenant=tenant)
    return await sign_in(api, tenant, email)


@pytest_asyncio.fixture
async def admin(gateway_settings: Settings, api: OpenAPIClient, tenant_name: str) -> Account:
    return await new_admin(gateway_settings, api, tenant_name)


@pytest.fixture
def admin_token(admin: Account) -> str:
    return admin.access_token


MakeUser = Callable[..., Awaitable[Account]]


@pytest.fixture
def make_user(api: OpenAPIClient, admin: Account) -> MakeUser:
    async def make(role: str = "member", email: str | None = None, password: str = PASSWORD) -> Account:
        email = email or f"user-{uuid.uuid4().hex[:8]}@example.org"
        response = await api.post(
            "/v1/users",
            json={"email": email, "password": password, "role": role, "display_name": "Test User"},
            headers=admin.headers,
        )
        assert response.status_code == 201, await response.get_json()
        return await sign_in(api, admin.tenant, email, password)

    return make
