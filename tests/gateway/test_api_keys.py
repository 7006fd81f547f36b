"""API keys: shown once, stored as a digest, scoped, and refused at once when revoked or expired."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from tests.gateway.conftest import Account, MakeUser, OpenAPIClient, bearer
from tests.gateway.helpers import audit_actions, execute, scalar


async def new_key(
    api: OpenAPIClient, owner: Account, scopes: list[str], **extra: object
) -> dict[str, object]:
    response = await api.post(
        "/v1/keys", json={"name": "ci", "scopes": scopes, **extra}, headers=owner.headers
    )
    assert response.status_code == 201, await response.get_json()
    body: dict[str, object] = await response.get_json()
    return body


async def test_a_key_is_shown_once_and_stored_as_a_digest(
    api: OpenAPIClient, make_user: MakeUser, db_engine: AsyncEngine
) -> None:
    member = await make_user()
    created = await new_key(api, member, ["read", "chat"])
    key = str(created["key"])
    assert key.startswith(str(created["prefix"]))
    assert created["scopes"] == ["chat", "read"]
    assert created["state"] == "active"
    assert created["expires_at"] is not None  # the default expiry applies

    listed = await (await api.get("/v1/keys", headers=member.headers)).get_json()
    assert [item["id"] for item in listed["keys"]] == [created["id"]]
    assert key not in str(listed) and "key" not in listed["keys"][0]
    stored = await scalar(db_engine, "SELECT key_hash FROM gateway.api_keys WHERE id = :id", id=created["id"])
    assert stored != key and key.split("_", 2)[2] not in stored and len(stored) == 64

    me = await (await api.get("/v1/auth/me", headers=bearer(key))).get_json()
    assert me["user"]["id"] == member.user_id
    assert me["api_key_id"] == created["id"]
    assert me["scopes"] == ["chat", "read"]


async def test_x_api_key_header_works_too(api: OpenAPIClient, make_user: MakeUser) -> None:
    member = await make_user()
    key = str((await new_key(api, member, ["read"]))["key"])
    assert (await api.get("/v1/auth/me", headers={"X-API-Key": key})).status_code == 200


async def test_a_key_without_a_scope_is_refused_for_it(api: OpenAPIClient, admin: Account) -> None:
    read_only = str((await new_key(api, admin, ["read"]))["key"])
    response = await api.get("/v1/users", headers=bearer(read_only))
    assert response.status_code == 403
    error = (await response.get_json())["error"]
    assert error["code"] == "permission_denied" and "admin" in error["message"]
    with_admin = str((await new_key(api, admin, ["admin"]))["key"])
    assert (await api.get("/v1/users", headers=bearer(with_admin))).status_code == 200


async def test_a_key_cannot_grant_more_than_its_caller_or_owner_holds(
    api: OpenAPIClient, admin: Account, make_user: MakeUser
) -> None:
    member = await make_user()
    refused = await api.post("/v1/keys", json={"name": "x", "scopes": ["admin"]}, headers=member.headers)
    assert refused.status_code == 403
    read_key = str((await new_key(api, member, ["read"]))["key"])
    escalate = await api.post("/v1/keys", json={"name": "x", "scopes": ["ingest"]}, headers=bearer(read_key))
    assert escalate.status_code == 403
    # an admin cannot give a member's key the admin scope either
    for_member = await api.post(
        f"/v1/users/{member.user_id}/keys", json={"name": "x", "scopes": ["admin"]}, headers=admin.headers
    )
    assert for_member.status_code == 403
    unknown = await api.post("/v1/keys", json={"name": "x", "scopes": ["root"]}, headers=member.headers)
    assert unknown.status_code == 400 and "scopes" in (await unknown.get_json())["error"]["message"]


async def test_a_demoted_owner_takes_the_admin_scope_from_its_keys(
    api: OpenAPIClient, admin: Account, make_user: MakeUser
) -> None:
    other_admin = await make_user(role="admin")
    key = str((await new_key(api, other_admin, ["admin", "read"]))["key"])
    assert (await api.get("/v1/users", headers=bearer(key))).status_code == 200
    demote = await api.patch(
        f"/v1/users/{other_admin.user_id}", json={"role": "member"}, headers=admin.headers
    )
    assert demote.status_code == 200
    assert (await api.get("/v1/users", headers=bearer(key))).status_code == 403
    assert (await api.get("/v1/auth/me", headers=bearer(key))).status_code == 200


async def test_a_revoked_key_stops_at_once(
    api: OpenAPIClient, make_user: MakeUser, db_engine: AsyncEngine
) -> None:
    member = await make_user()
    created = await new_key(api, member, ["read"])
    key = str(created["key"])
    assert (await api.get("/v1/auth/me", headers=bearer(key))).status_code == 200
    revoked = await api.delete(f"/v1/keys/{created['id']}", headers=member.headers)
    assert revoked.status_code == 200
    assert (await revoked.get_json())["state"] == "revoked"
    refused = await api.get("/v1/auth/me", headers=bearer(key))
    assert refused.status_code == 401
    assert "revoked" in (await refused.get_json())["error"]["message"]
    actions = [action for action, _, _ in await audit_actions(db_engine, member.tenant)]
    assert actions[-2:] == ["api_key.created", "api_key.revoked"]


async def test_an_expired_key_is_refused(
    api: OpenAPIClient, make_user: MakeUser, db_engine: AsyncEngine
) -> None:
    member = await make_user()
    created = await new_key(api, member, ["read"], expires_in_days=1)
    await execute(
        db_engine,
        "UPDATE gateway.api_keys SET expires_at = now() - interval '1 second' WHERE id = :id",
        id=created["id"],
    )
    refused = await api.get("/v1/auth/me", headers=bearer(str(created["key"])))
    assert refused.status_code == 401
    assert "expired" in (await refused.get_json())["error"]["message"]
    listed = await (await api.get("/v1/keys", headers=member.headers)).get_json()
    assert listed["keys"][0]["state"] == "expired"


async def test_a_wrong_secret_with_a_real_prefix_is_refused(api: OpenAPIClient, make_user: MakeUser) -> None:
    member = await make_user()
    key = str((await new_key(api, member, ["read"]))["key"])
    forged = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    assert (await api.get("/v1/auth/me", headers=bearer(forged))).status_code == 401


async def test_last_used_is_recorded_but_not_on_every_request(
    api: OpenAPIClient, make_user: MakeUser, db_engine: AsyncEngine
) -> None:
    member = await make_user()
    created = await new_key(api, member, ["read"])
    assert created["last_used_at"] is None
    await api.get("/v1/auth/me", headers=bearer(str(created["key"])))
    first = await scalar(
        db_engine, "SELECT last_used_at FROM gateway.api_keys WHERE id = :id", id=created["id"]
    )
    assert first is not None
    await api.get("/v1/auth/me", headers=bearer(str(created["key"])))
    second = await scalar(
        db_engine, "SELECT last_used_at FROM gateway.api_keys WHERE id = :id", id=created["id"]
    )
    assert second == first  # within auth.api_key_touch_seconds: no write


async def test_admins_manage_the_keys_of_their_tenants_users(
    api: OpenAPIClient, admin: Account, make_user: MakeUser
) -> None:
    member = await make_user()
    created = await api.post(
        f"/v1/users/{member.user_id}/keys",
        json={"name": "for-you", "scopes": ["ingest"]},
        headers=admin.headers,
    )
    assert created.status_code == 201
    body = await created.get_json()
    assert body["owner_id"] == member.user_id
    listed = await (await api.get(f"/v1/users/{member.user_id}/keys", headers=admin.headers)).get_json()
    assert [item["id"] for item in listed["keys"]] == [body["id"]]
    own = await (await api.get("/v1/keys", headers=member.headers)).get_json()
    assert [item["id"] for item in own["keys"]] == [body["id"]]
    revoke = await api.delete(f"/v1/users/{member.user_id}/keys/{body['id']}", headers=admin.headers)
    assert revoke.status_code == 200
    assert (await api.get("/v1/auth/me", headers=bearer(body["key"]))).status_code == 401
