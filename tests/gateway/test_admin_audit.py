"""The admin audit log and platform health (``/v1/admin/audit``, ``/v1/admin/health``) on the real app,
PostgreSQL and (for health) the real gRPC host behind Hypercorn."""

from __future__ import annotations

import uuid
from typing import Any

from opentier.config import Settings
from opentier.gateway.identity.bootstrap import create_admin
from tests.gateway.conftest import PASSWORD, Account, MakeUser, OpenAPIClient, new_admin
from tests.gateway.served import (  # noqa: F401 - fixtures
    ServedAPI,
    running_host_fixture,
    served_api_fixture,
    served_fixture,
    served_settings_fixture,
)


async def audit(api: OpenAPIClient, account: Account, **query: str | int) -> list[dict[str, Any]]:
    """Every page of the audit log for ``query``, following the page tokens."""
    events: list[dict[str, Any]] = []
    token: str | None = None
    while True:
        args = {k: str(v) for k, v in query.items()} | ({"page_token": token} if token else {})
        response = await api.get("/v1/admin/audit", query_string=args, headers=account.headers)
        assert response.status_code == 200, await response.get_json()
        body = await response.get_json()
        events.extend(body["events"])
        token = body["next_page_token"]
        if token is None:
            return events


async def create_key(api: OpenAPIClient, account: Account) -> str:
    response = await api.post("/v1/keys", json={"name": "ci", "scopes": ["read"]}, headers=account.headers)
    assert response.status_code == 201, await response.get_json()
    key_id: str = (await response.get_json())["id"]
    return key_id


async def test_actions_appear_newest_first_with_actor_and_target(
    api: OpenAPIClient, admin: Account, make_user: MakeUser
) -> None:
    member = await make_user()
    key_id = await create_key(api, member)

    events = await audit(api, admin)

    actions = [(e["action"], e["actor_user_id"]) for e in events]
    assert actions[:3] == [
        ("api_key.created", member.user_id),
        ("login.succeeded", member.user_id),
        ("user.created", admin.user_id),
    ]
    assert ("login.succeeded", admin.user_id) in actions
    assert member.user_id in (events[2]["target"] or "")
    assert key_id in (events[0]["target"] or "") or key_id in str(events[0]["details"])
    stamps = [(e["at"], int(e["id"])) for e in events]
    assert stamps == sorted(stamps, reverse=True)


async def test_filters_by_actor_action_prefix_and_time(
    api: OpenAPIClient, admin: Account, make_user: MakeUser
) -> None:
    member = await make_user()
    await create_key(api, member)
    second = await make_user()
    everything = await audit(api, admin)

    mine = await audit(api, admin, actor=member.user_id)
    assert {e["action"] for e in mine} == {"login.succeeded", "api_key.created"}
    assert all(e["actor_user_id"] == member.user_id for e in mine)

    users = await audit(api, admin, action="user.")
    assert {e["action"] for e in users} == {"user.created"}  # the bootstrap admin's too
    targets = " ".join(e["target"] or "" for e in users)
    assert member.user_id in targets and second.user_id in targets
    logins = await audit(api, admin, action="login.succeeded")
    assert len(logins) == 3 and {e["action"] for e in logins} == {"login.succeeded"}
    assert await audit(api, admin, action="login.") == logins
    assert await audit(api, admin, action="user") == []  # exact, not a prefix without the dot

    key_event = next(e for e in everything if e["action"] == "api_key.created")
    since = await audit(api, admin, since=key_event["at"])
    until = await audit(api, admin, until=key_event["at"])
    assert key_event in since and key_event not in until
    assert all(e["at"] >= key_event["at"] for e in since)
    assert sorted(e["id"] for e in since + until) == sorted(e["id"] for e in everything)


async def test_paging_returns_every_event_once(
    api: OpenAPIClient, admin: Account, make_user: MakeUser
) -> None:
    for _ in range(3):
        await make_user()
    everything = await audit(api, admin, page_size=100)
    assert len(everything) >= 7

    paged = await audit(api, admin, page_size=2)

    assert [e["id"] for e in paged] == [e["id"] for e in everything]
    bad = await api.get("/v1/admin/audit", query_string={"page_token": "nonsense"}, headers=admin.headers)
    assert bad.status_code == 400


async def test_another_tenants_events_never_appear(
    api: OpenAPIClient, admin: Account, make_user: MakeUser, gateway_settings: Settings
) -> None:
    member = await make_user()
    other = await new_admin(gateway_settings, api, f"tenant-{uuid.uuid4().hex[:10]}")
    await create_key(api, other)

    ours = await audit(api, admin)
    theirs = await audit(api, other)

    assert not {e["id"] for e in ours} & {e["id"] for e in theirs}
    # None: the bootstrap (command line) creation of each tenant's first admin.
    assert {e["actor_user_id"] for e in theirs} - {None} == {other.user_id}
    assert {e["action"] for e in theirs} == {"user.created", "login.succeeded", "api_key.created"}
    assert other.user_id not in {e["actor_user_id"] for e in ours}
    assert not any(other.user_id in (e["target"] or "") for e in ours)
    assert await audit(api, other, actor=member.user_id) == []


async def test_a_member_is_refused_on_both_routes(api: OpenAPIClient, make_user: MakeUser) -> None:
    member = await make_user()
    for path in ("/v1/admin/audit", "/v1/admin/health"):
        response = await api.get(path, headers=member.headers)
        assert response.status_code == 403, path
        assert (await response.get_json())["error"]["code"] == "permission_denied"
        assert (await api.get(path)).status_code == 401


async def test_health_shows_the_serving_host_and_its_plugins(
    served_api: ServedAPI, served_settings: Settings
) -> None:
    email = f"admin-{uuid.uuid4().hex[:8]}@example.org"
    tenant = f"tenant-{uuid.uuid4().hex[:10]}"
    await create_admin(served_settings, email=email, password=PASSWORD, tenant=tenant)
    login = await served_api.post(
        "/v1/auth/login", json={"tenant": tenant, "email": email, "password": PASSWORD}
    )
    assert login.status_code == 200, login.text
    headers = {"Authorization": f"Bearer {login.json()['access_token']}"}

    response = await served_api.get("/v1/admin/health", headers=headers)

    assert response.status_code == 200, response.text
    body = response.json()
    assert list(body["hosts"].values()) == ["SERVING"]
    names = {plugin["name"] for plugin in body["plugins"]}
    assert {"test", "text", "vector"} <= names
    test_plugin = next(p for p in body["plugins"] if p["name"] == "test")
    assert "embedder" in {component["kind"] for component in test_plugin["components"]}
    assert body["plugins_error"] is None
