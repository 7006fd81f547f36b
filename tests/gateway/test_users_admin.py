"""User administration: admins only, within their own tenant; roles, disabling, deleting — audited."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from opentier.config import Settings
from tests.gateway.conftest import Account, MakeUser, OpenAPIClient, new_admin, sign_in
from tests.gateway.helpers import audit_actions

BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("post", "/v1/users"): {"email": "x@example.org", "password": "a-long-enough-password"},
    ("patch", "/v1/users/{user_id}"): {"role": "admin"},
    ("post", "/v1/users/{user_id}/keys"): {"name": "k", "scopes": ["read"]},
}


async def admin_operations(api: OpenAPIClient) -> list[tuple[str, str]]:
    """(method, path template) of every documented operation under /v1/users."""
    spec = await (await api.client.get("/openapi.json")).get_json()
    return sorted(
        (method, path)
        for path, item in spec["paths"].items()
        if path.startswith("/v1/users")
        for method in item
    )


def fill(path: str, user_id: str, key_id: str) -> str:
    return path.replace("{user_id}", user_id).replace("{key_id}", key_id)


async def test_a_member_is_refused_on_every_admin_route(
    api: OpenAPIClient, admin: Account, make_user: MakeUser
) -> None:
    member = await make_user()
    key = await api.post("/v1/keys", json={"name": "k", "scopes": ["read"]}, headers=admin.headers)
    key_id = (await key.get_json())["id"]
    operations = await admin_operations(api)
    # users: create, list, get, update, delete, logout; keys: create, list, revoke (and invitations)
    assert len(operations) >= 9
    for method, path in operations:
        response = await api.request(
            method.upper(),
            fill(path, admin.user_id, key_id),
            json=BODIES.get((method, path)),
            headers=member.headers,
        )
        assert response.status_code == 403, (method, path)
        assert (await response.get_json())["error"]["code"] == "permission_denied"
    # nothing changed
    me = await (await api.get("/v1/auth/me", headers=admin.headers)).get_json()
    assert me["user"]["role"] == "admin"


async def test_another_tenants_users_and_keys_are_not_found(
    api: OpenAPIClient, admin: Account, make_user: MakeUser, gateway_settings: Settings
) -> None:
    member = await make_user()
    key = await api.post("/v1/keys", json={"name": "k", "scopes": ["read"]}, headers=member.headers)
    key_id = (await key.get_json())["id"]
    intruder = await new_admin(gateway_settings, api, f"other-{uuid.uuid4().hex[:8]}")
    missing_user, missing_key = str(uuid.uuid4()), str(uuid.uuid4())
    for method, path in await admin_operations(api):
        if "{user_id}" not in path:
            continue
        body = BODIES.get((method, path))
        theirs = await api.request(
            method.upper(), fill(path, member.user_id, key_id), json=body, headers=intruder.headers
        )
        nobody = await api.request(
            method.upper(), fill(path, missing_user, missing_key), json=body, headers=intruder.headers
        )
        assert theirs.status_code == nobody.status_code == 404, (method, path)
        error = (await theirs.get_json())["error"]
        assert error["code"] == "not_found"
        assert member.email not in error["message"]
        assert error["message"] == (await nobody.get_json())["error"]["message"].replace(
            missing_user, member.user_id
        )
    revoke = await api.delete(f"/v1/keys/{key_id}", headers=intruder.headers)
    assert revoke.status_code == 404
    listed = await (await api.get("/v1/users", headers=intruder.headers)).get_json()
    assert [user["email"] for user in listed["users"]] == [intruder.email]
    assert (await api.get("/v1/auth/me", headers={"X-API-Key": "otk_000000000000_x"})).status_code == 401
    # and the member's key still works: the intruder changed nothing
    me = await (await api.get(f"/v1/users/{member.user_id}", headers=admin.headers)).get_json()
    assert me["disabled"] is False


async def test_admin_creates_lists_updates_and_deletes_users(
    api: OpenAPIClient, admin: Account, make_user: MakeUser, db_engine: AsyncEngine
) -> None:
    members = [await make_user() for _ in range(3)]
    first = await (
        await api.get("/v1/users", query_string={"page_size": 2}, headers=admin.headers)
    ).get_json()
    assert len(first["users"]) == 2 and first["next_page_token"]
    rest = await (
        await api.get(
            "/v1/users",
            query_string={"page_size": 2, "page_token": first["next_page_token"]},
            headers=admin.headers,
        )
    ).get_json()
    assert rest["next_page_token"] == ""
    emails = [user["email"] for user in first["users"] + rest["users"]]
    assert emails == [admin.email] + [member.email for member in members]

    duplicate = await api.post(
        "/v1/users",
        json={"email": members[0].email.upper(), "password": "a-long-enough-password"},
        headers=admin.headers,
    )
    assert duplicate.status_code == 409

    target = members[0]
    promoted = await api.patch(f"/v1/users/{target.user_id}", json={"role": "admin"}, headers=admin.headers)
    assert (await promoted.get_json())["role"] == "admin"
    assert (await api.get("/v1/users", headers=target.headers)).status_code == 200  # at once, same token

    disabled = await api.patch(
        f"/v1/users/{members[1].user_id}", json={"disabled": True}, headers=admin.headers
    )
    assert (await disabled.get_json())["disabled"] is True
    assert (await api.get("/v1/auth/me", headers=members[1].headers)).status_code == 401  # at once
    refresh = await api.post("/v1/auth/refresh", json={"refresh_token": members[1].refresh_token})
    assert refresh.status_code == 401

    deleted = await api.delete(f"/v1/users/{members[2].user_id}", headers=admin.headers)
    assert deleted.status_code == 204
    assert (await api.get(f"/v1/users/{members[2].user_id}", headers=admin.headers)).status_code == 404
    assert (await api.get("/v1/auth/me", headers=members[2].headers)).status_code == 401

    events = await audit_actions(db_engine, admin.tenant)
    assert ("user.role_changed", f"user:{target.user_id}", {"from": "member", "to": "admin"}) in events
    assert ("user.disabled", f"user:{members[1].user_id}", {}) in events
    assert [action for action, target_, _ in events if target_ == f"user:{members[2].user_id}"] == [
        "user.created",
        "login.succeeded",
        "user.deleted",
    ]


async def test_the_last_admin_cannot_be_demoted_disabled_or_deleted(
    api: OpenAPIClient, admin: Account
) -> None:
    for method, body in (("PATCH", {"role": "member"}), ("PATCH", {"disabled": True}), ("DELETE", None)):
        response = await api.request(method, f"/v1/users/{admin.user_id}", json=body, headers=admin.headers)
        assert response.status_code == 400
        assert "last active admin" in (await response.get_json())["error"]["message"]


async def test_a_password_change_ends_the_users_sessions(
    api: OpenAPIClient, admin: Account, make_user: MakeUser
) -> None:
    member = await make_user()
    new_password = "a-brand-new-password-123"
    response = await api.patch(
        f"/v1/users/{member.user_id}", json={"password": new_password}, headers=admin.headers
    )
    assert response.status_code == 200
    assert (await api.get("/v1/auth/me", headers=member.headers)).status_code == 401
    again = await sign_in(api, member.tenant, member.email, new_password)
    assert (await api.get("/v1/auth/me", headers=again.headers)).status_code == 200
