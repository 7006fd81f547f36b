"""Rate limits and token quotas set by admins per tenant and per user (``/v1/admin/.../limits``), against
the real gateway under Hypercorn, the real host (its test LLMs) and the real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from opentier.gateway.identity.bootstrap import create_admin
from opentier.gateway.limits.overrides import NO_OVERRIDES, LimitOverrides
from opentier.gateway.limits.quotas import EXTRAS_KEY, QuotaWindow, TokenQuotas
from opentier.gateway.principal import Principal
from opentier.gateway.state import gateway_state
from tests.gateway.conftest import PASSWORD
from tests.gateway.helpers import audit_actions, execute, scalar
from tests.gateway.streaming import (  # noqa: F401 - fixtures
    ChatGateway,
    chat_gateway_fixture,
    chat_settings_fixture,
    host_chat_options_fixture,
    limits_options_fixture,
    read_turn,
    receive,
    streaming_host_fixture,
    streaming_options_fixture,
    ws_connect,
)

#: The operator tenant of these tests (``auth.operator_tenant``): its admins set tenants' limits.
OPERATOR_TENANT = f"operator-{uuid.uuid4().hex[:8]}"
pytestmark = pytest.mark.auth(operator_tenant=OPERATOR_TENANT)

USAGE = "/v1/usage"
#: Generous defaults keyed by caller, none per address (every test client is 127.0.0.1).
RATE_DEFAULTS = {"per_api_key": "100 per minute", "per_user": "100 per minute", "per_address": ""}


def limits(**options: Any) -> Any:
    return pytest.mark.parametrize("limits_options", [options], indirect=True)


@dataclass
class Person:
    """A signed-in user: ids, access token and an API key (chat, read)."""

    tenant: str
    tenant_id: str
    user_id: str
    headers: dict[str, str]
    key: str

    @property
    def key_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


@dataclass
class Team:
    """A fresh tenant: its admin and its members."""

    admin: Person
    members: list[Person]


async def sign_in(gateway: ChatGateway, engine: AsyncEngine, tenant: str, email: str) -> Person:
    api = gateway.api
    login = await api.post("/v1/auth/login", json={"tenant": tenant, "email": email, "password": PASSWORD})
    assert login.status_code == 200, login.text
    headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
    key = await api.post("/v1/keys", json={"name": "limits", "scopes": ["chat", "read"]}, headers=headers)
    assert key.status_code == 201, key.text
    tenant_id = await scalar(engine, "SELECT id::text FROM gateway.tenants WHERE name = :name", name=tenant)
    return Person(tenant, tenant_id, login.json()["user"]["id"], headers, key.json()["key"])


async def new_team(
    gateway: ChatGateway, engine: AsyncEngine, members: int, tenant: str | None = None
) -> Team:
    """An admin of ``tenant`` (a fresh one by default) and ``members`` members it created."""
    tenant = tenant or f"tenant-{uuid.uuid4().hex[:10]}"
    admin_email = f"admin-{uuid.uuid4().hex[:8]}@example.org"
    await create_admin(gateway.settings, email=admin_email, password=PASSWORD, tenant=tenant)
    admin = await sign_in(gateway, engine, tenant, admin_email)
    people = []
    for _ in range(members):
        email = f"user-{uuid.uuid4().hex[:8]}@example.org"
        created = await gateway.api.post(
            "/v1/users",
            json={"email": email, "password": PASSWORD, "role": "member", "display_name": "Member"},
            headers=admin.headers,
        )
        assert created.status_code == 201, created.text
        people.append(await sign_in(gateway, engine, tenant, email))
    return Team(admin, people)


async def operator(gateway: ChatGateway, engine: AsyncEngine) -> Person:
    return (await new_team(gateway, engine, 0, OPERATOR_TENANT)).admin


def user_limits(person: Person) -> str:
    return f"/v1/admin/users/{person.user_id}/limits"


def tenant_limits(tenant_id: str) -> str:
    return f"/v1/admin/tenants/{tenant_id}/limits"


async def put(gateway: ChatGateway, path: str, by: Person, **body: Any) -> httpx.Response:
    return await gateway.api.request("PUT", path, json=body, headers=by.headers)


async def chat(gateway: ChatGateway, person: Person, llm: str = "citing") -> list[dict[str, Any]]:
    async with ws_connect(gateway, key=person.key) as ws:
        assert (await receive(ws))["type"] == "hello"
        await ws.send(json.dumps({"type": "start", "message": "Tell me something", "llm": llm}))
        return await read_turn(ws)


async def refused(gateway: ChatGateway, person: Person) -> dict[str, Any]:
    async with ws_connect(gateway, key=person.key) as ws:
        assert (await receive(ws))["type"] == "hello"
        await ws.send(json.dumps({"type": "start", "message": "And now?"}))
        return await receive(ws)


def assert_refused(response: httpx.Response, limit: int, who: str) -> None:
    assert response.status_code == 429, response.text
    error = response.json()["error"]
    assert error["code"] == "rate_limited" and who in error["message"], error
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert response.headers["RateLimit-Limit"] == str(limit)
    assert response.headers["RateLimit-Remaining"] == "0"
    assert 1 <= int(response.headers["RateLimit-Reset"]) <= 60


# -- request rates ---------------------------------------------------------------------------------


@limits(**RATE_DEFAULTS)
async def test_a_users_rate_override_limits_that_user_only_until_cleared(
    chat_gateway: ChatGateway, db_engine: AsyncEngine
) -> None:
    team = await new_team(chat_gateway, db_engine, 2)
    alice, bob = team.members
    api = chat_gateway.api

    set_ = await put(chat_gateway, user_limits(alice), team.admin, requests="3 per minute")
    assert set_.status_code == 200, set_.text
    assert set_.json()["override"]["requests"] == "3 per minute"
    assert set_.json()["effective"]["requests"] == "3 per minute"
    assert set_.json()["effective"]["overridden"] == ["requests"]

    # Her key and her token together: the override replaces both the per-user and per-key defaults.
    allowed = [await api.get(USAGE, headers=h) for h in (alice.key_headers, alice.headers, alice.key_headers)]
    assert [r.status_code for r in allowed] == [200, 200, 200]
    assert [r.headers["RateLimit-Remaining"] for r in allowed] == ["2", "1", "0"]
    assert allowed[0].headers["RateLimit-Policy"] == "3;w=60"
    assert_refused(await api.get(USAGE, headers=alice.key_headers), 3, "this user")
    assert_refused(await api.get(USAGE, headers=alice.headers), 3, "this user")

    # Bob, of the same tenant, keeps the defaults.
    for _ in range(6):
        answer = await api.get(USAGE, headers=bob.key_headers)
        assert answer.status_code == 200 and answer.headers["RateLimit-Limit"] == "100"

    # Cleared: the defaults apply again, at once.
    cleared = await api.delete(user_limits(alice), headers=team.admin.headers)
    assert cleared.status_code == 200, cleared.text
    assert cleared.json()["override"] is None
    assert cleared.json()["effective"]["requests"] == "100 per minute"
    again = await api.get(USAGE, headers=alice.key_headers)
    assert again.status_code == 200 and again.headers["RateLimit-Limit"] == "100"

    actions = [(action, target) for action, target, _ in await audit_actions(db_engine, alice.tenant)]
    assert ("limits.set", f"user:{alice.user_id}") in actions
    assert ("limits.cleared", f"user:{alice.user_id}") in actions


@limits(**RATE_DEFAULTS)
async def test_a_tenants_rate_override_counts_its_users_together(
    chat_gateway: ChatGateway, db_engine: AsyncEngine
) -> None:
    team = await new_team(chat_gateway, db_engine, 2)
    alice, bob = team.members
    [outsider] = (await new_team(chat_gateway, db_engine, 1)).members
    ops = await operator(chat_gateway, db_engine)
    api = chat_gateway.api

    set_ = await put(chat_gateway, tenant_limits(alice.tenant_id), ops, requests="5 per minute")
    assert set_.status_code == 200, set_.text
    assert set_.json()["user_id"] is None and set_.json()["effective"]["requests"] == "5 per minute"

    for person in (alice, bob, alice, bob, alice):
        assert (await api.get(USAGE, headers=person.key_headers)).status_code == 200
    assert_refused(await api.get(USAGE, headers=bob.key_headers), 5, "this tenant")
    assert_refused(await api.get(USAGE, headers=alice.headers), 5, "this tenant")
    # Their admin too (they share the tenant's limit); another tenant does not.
    assert (await api.get(USAGE, headers=team.admin.headers)).status_code == 429
    for _ in range(6):
        assert (await api.get(USAGE, headers=outsider.key_headers)).status_code == 200

    # An operator's change is audited under the operator's tenant.
    actions = [(action, target) for action, target, _ in await audit_actions(db_engine, OPERATOR_TENANT)]
    assert ("limits.set", f"tenant:{alice.tenant_id}") in actions

    cleared = await api.delete(tenant_limits(alice.tenant_id), headers=ops.headers)
    assert cleared.status_code == 200 and cleared.json()["effective"]["requests"] is None
    assert (await api.get(USAGE, headers=bob.key_headers)).status_code == 200


# -- token quotas ----------------------------------------------------------------------------------


async def test_a_tenant_token_override_ends_the_stream_with_the_quota_event(
    chat_gateway: ChatGateway, db_engine: AsyncEngine
) -> None:
    """The defaults are unlimited: only the operator's override limits the tenant."""
    team = await new_team(chat_gateway, db_engine, 2)
    alice, bob = team.members
    [outsider] = (await new_team(chat_gateway, db_engine, 1)).members
    ops = await operator(chat_gateway, db_engine)

    set_ = await put(chat_gateway, tenant_limits(alice.tenant_id), ops, tokens_per_day=30)
    assert set_.status_code == 200, set_.text

    events = await chat(chat_gateway, alice, llm="endless")
    assert [event["type"] for event in events][-3:] == ["usage", "quota", "done"]
    quota, usage = events[-2], events[-3]
    assert (quota["scope"], quota["period"], quota["limit"]) == ("tenant", "day", 30)
    assert events[-1]["status"] == "cancelled"

    refusal = await refused(chat_gateway, bob)
    assert refusal["code"] == "quota_exceeded" and "tenant" in refusal["message"]
    assert (await chat(chat_gateway, outsider))[-1]["status"] == "complete"

    # The operator sees the override, what is in effect and the tenant's usage.
    view = await chat_gateway.api.get(tenant_limits(alice.tenant_id), headers=ops.headers)
    assert view.status_code == 200, view.text
    body = view.json()
    assert body["override"]["tokens_per_day"] == 30 and body["override"]["requests"] is None
    assert body["effective"]["tokens_per_day"] == 30 and body["effective"]["overridden"] == ["tokens_per_day"]
    day = next(window for window in body["usage"] if window["period"] == "day")
    assert day["used"] == usage["input_tokens"] + usage["output_tokens"]
    assert (day["limit"], day["remaining"]) == (30, 0)

    # Cleared: unlimited again.
    assert (
        await chat_gateway.api.delete(tenant_limits(alice.tenant_id), headers=ops.headers)
    ).status_code == 200
    assert (await chat(chat_gateway, bob))[-1]["status"] == "complete"


async def test_a_user_token_override_stops_that_user_only_and_tells_the_listeners_once(
    chat_gateway: ChatGateway, db_engine: AsyncEngine
) -> None:
    team = await new_team(chat_gateway, db_engine, 2)
    alice, bob = team.members
    quotas = gateway_state(chat_gateway.app).extras[EXTRAS_KEY]
    assert isinstance(quotas, TokenQuotas)
    told: list[tuple[Principal, QuotaWindow]] = []

    async def listener(principal: Principal, window: QuotaWindow) -> None:
        told.append((principal, window))

    async def broken(principal: Principal, window: QuotaWindow) -> None:
        raise RuntimeError("a listener's failure never reaches the request")

    quotas.exhausted_listeners.extend([broken, listener])

    set_ = await put(chat_gateway, user_limits(alice), team.admin, tokens_per_day=30)
    assert set_.status_code == 200, set_.text
    assert set_.json()["effective"]["requests"] == "600 per minute"  # the default, untouched

    events = await chat(chat_gateway, alice, llm="endless")
    quota = events[-2]
    assert quota["type"] == "quota" and (quota["scope"], quota["limit"]) == ("user", 30)
    assert (await chat(chat_gateway, bob))[-1]["status"] == "complete"

    async with asyncio.timeout(10):
        while not told:
            await asyncio.sleep(0.02)
    # Refused twice more: the same crossing, told once.
    for _ in range(2):
        assert (await refused(chat_gateway, alice))["code"] == "quota_exceeded"
    await asyncio.sleep(0.3)
    assert len(told) == 1
    principal, window = told[0]
    assert principal.user_id == alice.user_id
    assert (window.scope, window.period, window.limit) == ("user", "day", 30) and window.used >= 30

    # Raised: Alice chats again; crossing the new limit is a new crossing.
    raised = await put(chat_gateway, user_limits(alice), team.admin, tokens_per_day=window.used + 30)
    assert raised.status_code == 200, raised.text
    again = await chat(chat_gateway, alice, llm="endless")
    assert again[-2]["type"] == "quota"
    async with asyncio.timeout(10):
        while len(told) < 2:
            await asyncio.sleep(0.02)
    assert told[1][1].limit == window.used + 30


# -- who may do what -------------------------------------------------------------------------------


@limits(**RATE_DEFAULTS)
async def test_tenant_limits_are_the_operators_and_user_limits_stay_in_the_tenant(
    chat_gateway: ChatGateway, db_engine: AsyncEngine
) -> None:
    team = await new_team(chat_gateway, db_engine, 1)
    [alice] = team.members
    [stranger] = (await new_team(chat_gateway, db_engine, 1)).members
    ops = await operator(chat_gateway, db_engine)
    api = chat_gateway.api

    # A tenant's admin may not raise its own tenant's limits, nor read them there.
    own = await put(chat_gateway, tenant_limits(alice.tenant_id), team.admin, requests="")
    assert own.status_code == 403 and own.json()["error"]["code"] == "permission_denied"
    assert (await api.get(tenant_limits(alice.tenant_id), headers=team.admin.headers)).status_code == 403
    assert (await api.delete(tenant_limits(alice.tenant_id), headers=team.admin.headers)).status_code == 403
    # Another tenant's user is not found; a member is refused the admin routes.
    elsewhere = await put(chat_gateway, user_limits(stranger), team.admin, tokens_per_day=1)
    assert elsewhere.status_code == 404 and elsewhere.json()["error"]["code"] == "not_found"
    assert (await api.get(user_limits(stranger), headers=team.admin.headers)).status_code == 404
    assert (await api.get(user_limits(alice), headers=alice.headers)).status_code == 403
    # An operator reaches any tenant and any user; an unknown tenant is not found.
    assert (await api.get(user_limits(stranger), headers=ops.headers)).status_code == 200
    assert (await api.get(tenant_limits(str(uuid.uuid4())), headers=ops.headers)).status_code == 404

    # A wrong notation is refused with a message naming the field; nothing is stored.
    wrong = await put(chat_gateway, user_limits(alice), team.admin, requests="three per fortnight")
    assert wrong.status_code == 400 and "requests" in wrong.json()["error"]["message"]
    negative = await put(chat_gateway, user_limits(alice), team.admin, tokens_per_day=-1)
    assert negative.status_code == 400
    view = await api.get(user_limits(alice), headers=team.admin.headers)
    assert view.status_code == 200 and view.json()["override"] is None
    assert view.json()["effective"] == {
        "requests": "100 per minute",
        "requests_per_api_key": "100 per minute",
        "tokens_per_day": 0,
        "tokens_per_month": 0,
        "overridden": [],
    }
    assert [window["period"] for window in view.json()["usage"]] == ["day", "month"]


# -- the cache -------------------------------------------------------------------------------------


class Ticks:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_gateway_reads_overrides_once_per_cache_period(db_engine: AsyncEngine) -> None:
    """What another gateway changed is seen once the cache period ends; until then nothing is read."""
    clock = Ticks()
    overrides = LimitOverrides(5.0, lambda: db_engine, clock=clock)
    tenant_id, user_id = str(uuid.uuid4()), str(uuid.uuid4())
    await execute(
        db_engine, "INSERT INTO gateway.tenants (id, name) VALUES (CAST(:id AS uuid), :id)", id=tenant_id
    )
    assert await overrides.for_caller(tenant_id, user_id) == NO_OVERRIDES

    await execute(
        db_engine,
        "INSERT INTO gateway.limit_overrides (tenant_id, requests, tokens_per_day) "
        "VALUES (CAST(:id AS uuid), '7 per second', 70)",
        id=tenant_id,
    )
    clock.now += 4.9
    assert await overrides.for_caller(tenant_id, user_id) == NO_OVERRIDES  # still the cached answer
    clock.now += 0.2
    seen = await overrides.for_caller(tenant_id, user_id)
    assert seen.tenant is not None and seen.tenant.tokens_per_day == 70 and seen.user is None
    assert [(item.amount, item.get_expiry()) for item in seen.tenant_requests or []] == [(7, 1)]

    await execute(
        db_engine, "DELETE FROM gateway.limit_overrides WHERE tenant_id = CAST(:id AS uuid)", id=tenant_id
    )
    assert (await overrides.for_caller(tenant_id, user_id)).tenant is not None  # cached
    overrides.invalidate(tenant_id)  # what a change through this gateway does
    assert await overrides.for_caller(tenant_id, user_id) == NO_OVERRIDES
