"""Access tokens are refused when expired, tampered, unsigned (alg=none), signed with another key or for
another audience; refresh tokens rotate, a reused one ends its session, and logout acts at once."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.gateway.conftest import JWT_SECRET, Account, MakeUser, OpenAPIClient, bearer, sign_in
from tests.gateway.helpers import audit_actions, execute, scalar


def claims_of(token: str) -> dict[str, Any]:
    return dict(jwt.decode(token, options={"verify_signature": False}))


def signed(claims: dict[str, Any], key: str = JWT_SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, key, algorithm=algorithm)


async def assert_refused(api: OpenAPIClient, token: str, message: str = "not valid") -> None:
    response = await api.get("/v1/auth/me", headers=bearer(token))
    assert response.status_code == 401
    error = (await response.get_json())["error"]
    assert error["code"] == "unauthenticated"
    assert message in error["message"]


async def test_a_token_signed_again_with_the_right_key_works(api: OpenAPIClient, admin: Account) -> None:
    # the control for the refusals below: same claims, same key → accepted
    response = await api.get("/v1/auth/me", headers=bearer(signed(claims_of(admin.access_token))))
    assert response.status_code == 200


async def test_expired_token_is_refused(api: OpenAPIClient, admin: Account) -> None:
    claims = claims_of(admin.access_token)
    past = datetime.now(UTC) - timedelta(hours=1)
    claims |= {"iat": past, "nbf": past, "exp": past + timedelta(minutes=15)}
    await assert_refused(api, signed(claims), "expired")


async def test_tampered_token_is_refused(api: OpenAPIClient, admin: Account, make_user: MakeUser) -> None:
    member = await make_user()
    header, _payload, signature = member.access_token.split(".")
    claims = claims_of(member.access_token) | {"sub": admin.user_id}
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    await assert_refused(api, f"{header}.{forged}.{signature}")


async def test_unsigned_alg_none_token_is_refused(api: OpenAPIClient, admin: Account) -> None:
    unsigned = jwt.encode(claims_of(admin.access_token), key=None, algorithm="none")  # type: ignore[arg-type]
    assert unsigned.endswith(".")
    await assert_refused(api, unsigned)


async def test_token_signed_with_another_key_or_algorithm_is_refused(
    api: OpenAPIClient, admin: Account
) -> None:
    claims = claims_of(admin.access_token)
    await assert_refused(api, signed(claims, key="another-secret-of-sufficient-length-0123456789"))
    await assert_refused(api, signed(claims, algorithm="HS512"))


@pytest.mark.parametrize(
    "change",
    [{"aud": "someone-else"}, {"iss": "someone-else"}, {"nbf": datetime.now(UTC) + timedelta(hours=1)}],
)
async def test_token_for_another_audience_or_issuer_or_not_yet_valid_is_refused(
    api: OpenAPIClient, admin: Account, change: dict[str, Any]
) -> None:
    await assert_refused(api, signed(claims_of(admin.access_token) | change))


@pytest.mark.parametrize("claim", ["exp", "sid", "tid", "aud"])
async def test_token_missing_a_required_claim_is_refused(
    api: OpenAPIClient, admin: Account, claim: str
) -> None:
    claims = claims_of(admin.access_token)
    del claims[claim]
    await assert_refused(api, signed(claims))


async def test_garbage_and_missing_credentials_are_refused(api: OpenAPIClient) -> None:
    await assert_refused(api, "not-a-token")
    missing = await api.get("/v1/auth/me")
    assert missing.status_code == 401
    basic = await api.get("/v1/auth/me", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert basic.status_code == 401
    assert "Bearer" in (await basic.get_json())["error"]["message"]


async def test_refresh_rotates_and_reuse_ends_the_session(
    api: OpenAPIClient, make_user: MakeUser, db_engine: AsyncEngine
) -> None:
    member = await make_user()
    first = await api.post("/v1/auth/refresh", json={"refresh_token": member.refresh_token})
    assert first.status_code == 200
    rotated = await first.get_json()
    assert rotated["refresh_token"] != member.refresh_token
    assert rotated["expires_in"] > 0
    assert (await api.get("/v1/auth/me", headers=bearer(rotated["access_token"]))).status_code == 200

    # the old refresh token was used: presenting it again is theft, and ends the whole family
    reused = await api.post("/v1/auth/refresh", json={"refresh_token": member.refresh_token})
    assert reused.status_code == 401
    assert (
        await api.post("/v1/auth/refresh", json={"refresh_token": rotated["refresh_token"]})
    ).status_code == 401
    await assert_refused(api, rotated["access_token"], "no longer valid")
    await assert_refused(api, member.access_token, "no longer valid")
    actions = [(action, target) for action, target, _ in await audit_actions(db_engine, member.tenant)]
    assert ("token.refresh_reuse_detected", f"session:{claims_of(member.access_token)['sid']}") in actions

    # another sign-in of the same user is a separate session and keeps working
    again = await sign_in(api, member.tenant, member.email)
    assert (await api.get("/v1/auth/me", headers=again.headers)).status_code == 200


async def test_refresh_tokens_are_stored_hashed(
    api: OpenAPIClient, make_user: MakeUser, db_engine: AsyncEngine
) -> None:
    member = await make_user()
    stored = await scalar(
        db_engine,
        "SELECT count(*) FROM gateway.refresh_tokens WHERE token_hash = :raw",
        raw=member.refresh_token,
    )
    assert stored == 0
    digests = await scalar(
        db_engine,
        "SELECT count(*) FROM gateway.refresh_tokens r JOIN gateway.auth_sessions s ON s.id = r.session_id "
        "WHERE s.user_id = :user",
        user=member.user_id,
    )
    assert digests == 1


async def test_logout_revokes_refresh_and_access_tokens_at_once(
    api: OpenAPIClient, make_user: MakeUser, db_engine: AsyncEngine
) -> None:
    member = await make_user()
    response = await api.post("/v1/auth/logout", json={"refresh_token": member.refresh_token})
    assert response.status_code == 204
    await assert_refused(api, member.access_token, "no longer valid")
    refresh = await api.post("/v1/auth/refresh", json={"refresh_token": member.refresh_token})
    assert refresh.status_code == 401
    again = await api.post("/v1/auth/logout", json={"refresh_token": member.refresh_token})
    assert again.status_code == 204  # signing out twice is harmless
    assert (await api.post("/v1/auth/logout", json={"refresh_token": "otr_unknown"})).status_code == 401
    actions = [action for action, _, _ in await audit_actions(db_engine, member.tenant)]
    assert actions.count("logout") == 1


async def test_expired_refresh_token_is_refused(
    api: OpenAPIClient, make_user: MakeUser, db_engine: AsyncEngine
) -> None:
    member = await make_user()
    await execute(
        db_engine,
        "UPDATE gateway.refresh_tokens SET expires_at = now() - interval '1 second' WHERE session_id IN "
        "(SELECT id FROM gateway.auth_sessions WHERE user_id = :user)",
        user=member.user_id,
    )
    response = await api.post("/v1/auth/refresh", json={"refresh_token": member.refresh_token})
    assert response.status_code == 401
    assert "expired" in (await response.get_json())["error"]["message"]
