"""Address verification against the real gateway (Hypercorn), host, PostgreSQL and a real SMTP server
(aiosmtpd) on loopback: an open sign-up is mailed a link that verifies the address once; a signed-in user
asks for a new link, at most every `mail.reset_resend_seconds`; an expired link is refused."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncEngine

from opentier.config import Settings
from opentier.gateway.identity.digests import digest
from tests.gateway.conftest import PASSWORD
from tests.gateway.helpers import audit_actions, execute
from tests.gateway.mailbox import PUBLIC_URL, free_port, link_token, mail_gateway, new_admin, smtp_server
from tests.gateway.served import running_host_fixture, served_settings_fixture

__all__ = ["running_host_fixture", "served_settings_fixture"]


def open_signup(settings: Settings, tenant: str) -> Settings:
    auth = settings.auth.model_copy(update={"signup": "open", "signup_tenants": [tenant]})
    return settings.model_copy(update={"auth": auth})


async def test_a_sign_up_is_mailed_a_link_that_verifies_the_address_once(
    served_settings: Settings, db_engine: AsyncEngine
) -> None:
    tenant = f"signup-{uuid.uuid4().hex[:8]}"
    settings = open_signup(served_settings, tenant)
    address = f"self-{uuid.uuid4().hex[:8]}@example.org"
    port = free_port()
    async with smtp_server(port) as inbox, mail_gateway(settings, port) as api:
        signed_up = await api.post(
            "/v1/auth/signup",
            json={"tenant": tenant, "email": address, "password": PASSWORD, "display_name": "Self"},
        )
        assert signed_up.status_code == 201, signed_up.text
        assert signed_up.json()["user"]["email_verified"] is False
        session = {"Authorization": f"Bearer {signed_up.json()['access_token']}"}

        [mail] = await inbox.wait(1)
        assert inbox.recipients == [[address]]
        assert mail["Subject"] == "Confirm your address for OpenTier"
        token = link_token(mail, "verify-email")
        rich = mail.get_body(preferencelist=("html",))
        assert rich is not None and f'href="{PUBLIC_URL}/verify-email?token={token}"' in rich.get_content()

        verified = await api.post("/v1/auth/email/verify", json={"token": token})
        assert verified.status_code == 200, verified.text
        assert verified.json()["email"] == address and verified.json()["email_verified"] is True
        me = await api.get("/v1/auth/me", headers=session)
        assert me.status_code == 200 and me.json()["user"]["email_verified"] is True

        again = await api.post("/v1/auth/email/verify", json={"token": token})
        assert again.status_code == 400
        assert again.json()["error"]["code"] == "verification_token_invalid"
        assert "already used" in again.json()["error"]["message"]
        unknown = await api.post("/v1/auth/email/verify", json={"token": "otm_" + "y" * 43})
        assert unknown.status_code == 400 and unknown.json()["error"]["code"] == "verification_token_invalid"

        nothing_to_do = await api.post("/v1/auth/email/verification", headers=session)
        assert nothing_to_do.status_code == 409
        assert nothing_to_do.json()["error"]["code"] == "email_already_verified"
    actions = [action for action, _, _ in await audit_actions(db_engine, tenant)]
    assert actions.count("user.email_verified") == 1


async def test_a_user_asks_for_a_new_link_at_most_so_often_and_an_expired_one_is_refused(
    served_settings: Settings, db_engine: AsyncEngine
) -> None:
    port = free_port()
    async with (
        smtp_server(port) as inbox,
        mail_gateway(served_settings, port, reset_resend_seconds=60) as api,
    ):
        _, admin = await new_admin(served_settings, api)
        assert (await api.post("/v1/auth/email/verification")).status_code == 401

        asked = await api.post("/v1/auth/email/verification", headers=admin)
        assert asked.status_code == 202, asked.text
        address = asked.json()["email"]
        [mail] = await inbox.wait(1)
        assert inbox.recipients == [[address]]
        first = link_token(mail, "verify-email")

        too_soon = await api.post("/v1/auth/email/verification", headers=admin)
        assert too_soon.status_code == 429 and too_soon.json()["error"]["code"] == "rate_limited"
        assert 0 < int(too_soon.headers["retry-after"]) <= 60

        await execute(
            db_engine,
            "UPDATE gateway.mail_tokens SET expires_at = now() - interval '1 second', "
            "created_at = now() - interval '2 minutes' WHERE token_hash = :h",
            h=digest(first),
        )
        expired = await api.post("/v1/auth/email/verify", json={"token": first})
        assert expired.status_code == 400 and "expired" in expired.json()["error"]["message"]
        me = await api.get("/v1/auth/me", headers=admin)
        assert me.json()["user"]["email_verified"] is False

        later = await api.post("/v1/auth/email/verification", headers=admin)
        assert later.status_code == 202
        second = link_token((await inbox.wait(2))[1], "verify-email")
        assert (await api.post("/v1/auth/email/verify", json={"token": second})).status_code == 200
        me = await api.get("/v1/auth/me", headers=admin)
        assert me.json()["user"]["email_verified"] is True


async def test_a_used_password_reset_link_verifies_the_address_too(served_settings: Settings) -> None:
    port = free_port()
    async with smtp_server(port) as inbox, mail_gateway(served_settings, port) as api:
        tenant, admin = await new_admin(served_settings, api)
        address = (await api.get("/v1/auth/me", headers=admin)).json()["user"]["email"]
        await api.post("/v1/auth/password-reset", json={"tenant": tenant, "email": address})
        token = link_token((await inbox.wait(1))[0], "reset")
        done = await api.post(
            "/v1/auth/password-reset/confirm", json={"token": token, "new_password": PASSWORD + " again"}
        )
        assert done.status_code == 204
        signed_in = await api.post(
            "/v1/auth/login", json={"tenant": tenant, "email": address, "password": PASSWORD + " again"}
        )
        assert signed_in.json()["user"]["email_verified"] is True
