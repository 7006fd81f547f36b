"""``/v1/admin/keys``: an admin sees every API key of the tenant (never the secret), filtered and paged
newest first, and revokes any of them, audited; other tenants' keys are out of reach. Also the forced
logout of ``/v1/users/{id}/logout`` (sessions, and keys when asked), on the real app and PostgreSQL."""

from __future__ import annotations

from typing import Any

from quart import Quart

from opentier.config import Settings
from opentier.gateway.state import gateway_state
from tests.gateway.conftest import Account, MakeUser, OpenAPIClient, bearer, new_admin
from tests.gateway.helpers import audit_actions

KEYS = "/v1/admin/keys"


async def new_key(api: OpenAPIClient, account: Account, name: str) -> dict[str, Any]:
    created = await api.post("/v1/keys", json={"name": name, "scopes": ["read"]}, headers=account.headers)
    assert created.status_code == 201, await created.get_json()
    body: dict[str, Any] = await created.get_json()
    return body


async def listed(api: OpenAPIClient, admin: Account, **query: Any) -> dict[str, Any]:
    response = await api.get(KEYS, query_string=query, headers=admin.headers)
    assert response.status_code == 200, await response.get_json()
    body: dict[str, Any] = await response.get_json()
    return body


async def test_an_admin_lists_every_key_of_the_tenant_newest_first_without_secrets(
    api: OpenAPIClient, admin: Account, make_user: MakeUser, gateway_settings: Settings
) -> None:
    alice, bob = await make_user(), await make_user()
    made = [
        await new_key(api, alice, "alice-1"),
        await new_key(api, bob, "bob-1"),
        await new_key(api, alice, "alice-2"),
        await new_key(api, admin, "admin-1"),
    ]
    outsider = await new_admin(gateway_settings, api, "other-" + admin.tenant)
    await new_key(api, outsider, "elsewhere")

    everything = await listed(api, admin)
    assert [key["name"] for key in everything["keys"]] == ["admin-1", "alice-2", "bob-1", "alice-1"]
    assert everything["next_page_token"] == ""
    shown = str(everything)
    for key in made:
        assert key["key"] not in shown  # only the prefix, never the key
        assert key["prefix"] in shown
    assert all("key" not in key for key in everything["keys"])

    only_alice = await listed(api, admin, user_id=alice.user_id)
    assert [key["name"] for key in only_alice["keys"]] == ["alice-2", "alice-1"]
    assert {key["owner_id"] for key in only_alice["keys"]} == {alice.user_id}

    # Pages of one walk every key once, in the same order.
    names, token = [], ""
    while True:
        page = await listed(api, admin, page_size=1, **({"page_token": token} if token else {}))
        names += [key["name"] for key in page["keys"]]
        token = page["next_page_token"]
        if not token:
            break
    assert names == ["admin-1", "alice-2", "bob-1", "alice-1"]
    bad = await api.get(KEYS, query_string={"page_token": "nonsense"}, headers=admin.headers)
    assert bad.status_code == 400


async def test_an_admin_revokes_any_key_of_the_tenant_once_audited(
    api: OpenAPIClient, app: Quart, admin: Account, make_user: MakeUser
) -> None:
    alice = await make_user()
    key = await new_key(api, alice, "laptop")
    other = await new_key(api, alice, "server")
    assert (await api.get("/v1/collections/x", headers=bearer(key["key"]))).status_code != 401

    revoked = await api.delete(f"{KEYS}/{key['id']}", headers=admin.headers)
    assert revoked.status_code == 200
    body = await revoked.get_json()
    assert body["state"] == "revoked" and body["revoked_at"] and "key" not in body
    # It stops working at once; the user's other key does not.
    assert (await api.client.get("/v1/keys", headers=bearer(key["key"]))).status_code == 401
    assert (await api.client.get("/v1/keys", headers=bearer(other["key"]))).status_code == 200
    # Revoking again changes nothing and records nothing more.
    again = await api.delete(f"{KEYS}/{key['id']}", headers=admin.headers)
    assert again.status_code == 200 and (await again.get_json())["revoked_at"] == body["revoked_at"]

    active = await listed(api, admin, active="true")
    inactive = await listed(api, admin, active="false")
    assert [k["name"] for k in active["keys"]] == ["server"]
    assert [k["name"] for k in inactive["keys"]] == ["laptop"]

    engine = gateway_state(app).engine
    assert engine is not None
    revocations = [row for row in await audit_actions(engine, admin.tenant) if row[0] == "api_key.revoked"]
    assert revocations == [
        ("api_key.revoked", f"api_key:{key['id']}", {"owner": alice.user_id, "name": "laptop"})
    ]


async def test_keys_of_another_tenant_are_not_found(
    api: OpenAPIClient, admin: Account, gateway_settings: Settings
) -> None:
    outsider = await new_admin(gateway_settings, api, "other-" + admin.tenant)
    theirs = await new_key(api, outsider, "theirs")
    missing = await api.delete(f"{KEYS}/{theirs['id']}", headers=admin.headers)
    assert missing.status_code == 404
    assert (await api.client.get("/v1/keys", headers=bearer(theirs["key"]))).status_code == 200
    assert (await listed(api, admin, user_id=outsider.user_id))["keys"] == []
    assert (await api.delete(f"{KEYS}/not-a-key", headers=admin.headers)).status_code == 404


async def test_a_forced_logout_ends_every_session_and_revokes_keys_only_when_asked(
    api: OpenAPIClient, app: Quart, admin: Account, make_user: MakeUser
) -> None:
    alice = await make_user()
    key = await new_key(api, alice, "ci")
    # No body: sessions only.
    first = await api.post(f"/v1/users/{alice.user_id}/logout", headers=admin.headers)
    assert first.status_code == 200, await first.get_json()
    assert (await first.get_json())["sessions_ended"] == 1
    assert (await first.get_json())["api_keys_revoked"] == []
    assert (await api.client.get("/v1/keys", headers=alice.headers)).status_code == 401
    refreshed = await api.client.post("/v1/auth/refresh", json={"refresh_token": alice.refresh_token})
    assert refreshed.status_code == 401
    assert (await api.client.get("/v1/keys", headers=bearer(key["key"]))).status_code == 200

    second = await api.post(
        f"/v1/users/{alice.user_id}/logout", json={"revoke_api_keys": True}, headers=admin.headers
    )
    assert second.status_code == 200
    assert (await second.get_json())["sessions_ended"] == 0
    assert (await second.get_json())["api_keys_revoked"] == [key["id"]]
    assert (await api.client.get("/v1/keys", headers=bearer(key["key"]))).status_code == 401

    invalid = await api.post(
        f"/v1/users/{alice.user_id}/logout", json={"revoke_api_keys": "maybe"}, headers=admin.headers
    )
    assert invalid.status_code == 400
    unknown = await api.post(f"/v1/users/{admin.user_id[:-4]}ffff/logout", headers=admin.headers)
    assert unknown.status_code == 404

    engine = gateway_state(app).engine
    assert engine is not None
    logouts = [
        row for row in await audit_actions(engine, admin.tenant) if row[0] == "user.logged_out_by_admin"
    ]
    assert [
        (target, details["sessions_ended"], details["api_keys_revoked"]) for _, target, details in logouts
    ] == [
        (f"user:{alice.user_id}", 1, []),
        (f"user:{alice.user_id}", 0, [key["id"]]),
    ]
