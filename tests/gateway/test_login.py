"""Sign-in: argon2 hashes, right and wrong passwords, throttling per account and per address, sign-up."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from opentier.config import Settings
from opentier.gateway.app import create_app
from tests.gateway.conftest import PASSWORD, Account, MakeUser, OpenAPIClient, auth_settings, sign_in
from tests.gateway.helpers import audit_actions, execute, scalar


async def test_the_password_is_stored_as_an_argon2id_hash(
    api: OpenAPIClient, make_user: MakeUser, db_engine: AsyncEngine
) -> None:
    member = await make_user()
    stored = await scalar(
        db_engine, "SELECT password_hash FROM gateway.users WHERE id = :id", id=member.user_id
    )
    assert stored.startswith("$argon2id$")
    assert PASSWORD not in stored
    response = await api.get("/v1/auth/me", headers=member.headers)
    assert "password" not in str(await response.get_json())


async def test_right_password_signs_in_and_wrong_one_is_refused(
    api: OpenAPIClient, make_user: MakeUser, db_engine: AsyncEngine
) -> None:
    member = await make_user()
    me = await api.get("/v1/auth/me", headers=member.headers)
    body = await me.get_json()
    assert body["user"]["email"] == member.email
    assert body["user"]["last_login_at"] is not None
    assert body["scopes"] == ["chat", "ingest", "read"]

    wrong = await api.post(
        "/v1/auth/login",
        json={"tenant": member.tenant, "email": member.email, "password": "not the password"},
    )
    assert wrong.status_code == 401
    error = (await wrong.get_json())["error"]
    assert error["code"] == "unauthenticated"
    assert error["message"] == "wrong email or password"
    assert error["request_id"] == wrong.headers["X-Request-ID"]

    unknown = await api.post(
        "/v1/auth/login", json={"tenant": member.tenant, "email": "nobody@example.org", "password": PASSWORD}
    )
    assert (await unknown.get_json())["error"]["message"] == "wrong email or password"

    attempts = await scalar(
        db_engine,
        "SELECT array_agg(coalesce(reason, 'ok') ORDER BY id) FROM gateway.login_attempts WHERE tenant_name = :t",
        t=member.tenant,
    )
    assert attempts[-3:] == ["ok", "wrong password", "unknown account"]
    actions = [action for action, _, _ in await audit_actions(db_engine, member.tenant)]
    assert actions.count("login.succeeded") == 2  # the admin and the member
    assert actions[-1] == "login.failed"


async def test_email_case_does_not_matter(api: OpenAPIClient, make_user: MakeUser) -> None:
    member = await make_user(email=f"Mixed.Case-{uuid.uuid4().hex[:6]}@Example.org")
    again = await sign_in(api, member.tenant, member.email.upper())
    assert again.user_id == member.user_id


async def test_throttle_per_account_engages_with_retry_after(api: OpenAPIClient, make_user: MakeUser) -> None:
    member = await make_user()
    for i in range(5):  # the account allows 5 failures a minute in these tests
        response = await api.post(
            "/v1/auth/login",
            json={"tenant": member.tenant, "email": member.email, "password": f"wrong-{i}"},
            scope_base={"client": (f"10.1.0.{i}", 4000)},  # from different addresses
        )
        assert response.status_code == 401
    refused = await api.post(
        "/v1/auth/login",
        json={"tenant": member.tenant, "email": member.email, "password": PASSWORD},
        scope_base={"client": ("10.1.0.99", 4000)},
    )
    assert refused.status_code == 429
    assert (await refused.get_json())["error"]["code"] == "rate_limited"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    # another account is not affected
    other = await make_user()
    assert (await sign_in(api, other.tenant, other.email)).user_id == other.user_id


async def test_throttle_per_address_engages_across_accounts(api: OpenAPIClient, make_user: MakeUser) -> None:
    member = await make_user()
    address = {"client": ("192.0.2.7", 5000)}
    for i in range(12):  # 12 failures a minute per address in these tests, over many accounts
        response = await api.post(
            "/v1/auth/login",
            json={"tenant": member.tenant, "email": f"guess-{i}@example.org", "password": "guess"},
            scope_base=address,
        )
        assert response.status_code == 401
    refused = await api.post(
        "/v1/auth/login",
        json={"tenant": member.tenant, "email": member.email, "password": PASSWORD},
        scope_base=address,
    )
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) >= 1
    elsewhere = await api.post(
        "/v1/auth/login",
        json={"tenant": member.tenant, "email": member.email, "password": PASSWORD},
        scope_base={"client": ("192.0.2.8", 5000)},
    )
    assert elsewhere.status_code == 200


async def test_a_right_password_clears_the_account_failures(api: OpenAPIClient, make_user: MakeUser) -> None:
    member = await make_user()
    for _ in range(3):
        await api.post(
            "/v1/auth/login", json={"tenant": member.tenant, "email": member.email, "password": "wrong"}
        )
    await sign_in(api, member.tenant, member.email)
    for _ in range(4):
        response = await api.post(
            "/v1/auth/login", json={"tenant": member.tenant, "email": member.email, "password": "wrong"}
        )
        assert response.status_code == 401  # 7 failures in all, but only 4 since the good one


async def test_a_disabled_user_cannot_sign_in(
    api: OpenAPIClient, admin: Account, make_user: MakeUser
) -> None:
    member = await make_user()
    response = await api.patch(f"/v1/users/{member.user_id}", json={"disabled": True}, headers=admin.headers)
    assert response.status_code == 200
    refused = await api.post(
        "/v1/auth/login", json={"tenant": member.tenant, "email": member.email, "password": PASSWORD}
    )
    assert refused.status_code == 401
    assert "disabled" in (await refused.get_json())["error"]["message"]


async def test_a_suspended_tenant_is_refused(
    api: OpenAPIClient, make_user: MakeUser, db_engine: AsyncEngine
) -> None:
    member = await make_user()
    await execute(
        db_engine, "UPDATE gateway.tenants SET status = 'suspended' WHERE name = :t", t=member.tenant
    )
    me = await api.get("/v1/auth/me", headers=member.headers)
    assert me.status_code == 403
    login = await api.post(
        "/v1/auth/login", json={"tenant": member.tenant, "email": member.email, "password": PASSWORD}
    )
    assert login.status_code == 403


async def test_login_validation_names_the_missing_field(api: OpenAPIClient) -> None:
    response = await api.post("/v1/auth/login", json={"email": "a@example.org"})
    assert response.status_code == 400
    error = (await response.get_json())["error"]
    assert error["code"] == "invalid_request"
    assert "password" in error["message"]


async def test_signup_is_closed_by_default(api: OpenAPIClient) -> None:
    response = await api.post(
        "/v1/auth/signup", json={"email": "new@example.org", "password": PASSWORD, "tenant": "default"}
    )
    assert response.status_code == 403
    assert (await response.get_json())["error"]["code"] == "permission_denied"


@pytest.mark.auth(signup="open", signup_tenants=["open-signup"])
async def test_open_signup_creates_a_member_of_a_configured_tenant(
    api: OpenAPIClient, db_engine: AsyncEngine
) -> None:
    email = f"self-{uuid.uuid4().hex[:8]}@example.org"
    response = await api.post(
        "/v1/auth/signup",
        json={"email": email, "password": PASSWORD, "tenant": "open-signup", "display_name": "Self"},
    )
    assert response.status_code == 201
    body = await response.get_json()
    assert body["user"]["role"] == "member"
    me = await api.get("/v1/auth/me", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert (await me.get_json())["tenant"]["name"] == "open-signup"
    elsewhere = await api.post(
        "/v1/auth/signup", json={"email": email, "password": PASSWORD, "tenant": "not-open"}
    )
    assert elsewhere.status_code == 403
    again = await api.post(
        "/v1/auth/signup", json={"email": email.upper(), "password": PASSWORD, "tenant": "open-signup"}
    )
    assert again.status_code == 409
    short = await api.post(
        "/v1/auth/signup", json={"email": "x" + email, "password": "short", "tenant": "open-signup"}
    )
    assert short.status_code == 400
    assert "at least 12 characters" in (await short.get_json())["error"]["message"]
    assert ("user.signed_up", f"user:{body['user']['id']}", {}) in await audit_actions(
        db_engine, "open-signup"
    )


async def test_a_hash_made_with_old_parameters_is_redone_at_sign_in(
    make_user: MakeUser, gateway_settings: Settings, db_engine: AsyncEngine
) -> None:
    member = await make_user()
    before = await scalar(
        db_engine, "SELECT password_hash FROM gateway.users WHERE id = :id", id=member.user_id
    )
    assert "$m=1024,t=1,p=1$" in before
    stronger = gateway_settings.model_copy(update={"auth": auth_settings(argon2_time_cost=2)})
    app = create_app(stronger)
    async with app.test_app():
        response = await app.test_client().post(
            "/v1/auth/login", json={"tenant": member.tenant, "email": member.email, "password": PASSWORD}
        )
    assert response.status_code == 200
    after = await scalar(
        db_engine, "SELECT password_hash FROM gateway.users WHERE id = :id", id=member.user_id
    )
    assert "$m=1024,t=2,p=1$" in after and after != before
