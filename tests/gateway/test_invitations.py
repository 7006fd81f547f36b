"""Invitations against the real gateway (Hypercorn), host, PostgreSQL and a real SMTP server (aiosmtpd) on
loopback: the invited user gets the mail, follows its link, sets a password and signs in; the link works
once and expires; inviting again re-sends; members and other tenants' admins are refused, operators are
not; the page the link opens is served with its security headers."""

from __future__ import annotations

import asyncio
import re
import uuid
from pathlib import Path

import httpx
from click.testing import CliRunner
from sqlalchemy.ext.asyncio import AsyncEngine

from opentier.cli import main
from opentier.config import Settings
from opentier.gateway.identity.digests import digest
from tests.gateway.conftest import PASSWORD
from tests.gateway.helpers import audit_actions, execute, scalar
from tests.gateway.mailbox import (
    PUBLIC_URL,
    SENDER,
    free_port,
    link_token,
    mail_gateway,
    new_admin,
    smtp_server,
    text_of,
)
from tests.gateway.served import ServedAPI, running_host_fixture, served_settings_fixture

__all__ = ["running_host_fixture", "served_settings_fixture"]

CHOSEN = "the invited person's own passphrase"
PAGES = Path(__file__).resolve().parents[2] / "opentier" / "gateway" / "web" / "pages"


def invitee() -> str:
    return f"invitee-{uuid.uuid4().hex[:8]}@example.org"


async def login(api: ServedAPI, tenant: str, address: str, password: str) -> httpx.Response:
    return await api.post("/v1/auth/login", json={"tenant": tenant, "email": address, "password": password})


async def accept(api: ServedAPI, token: str, password: str = CHOSEN, **more: str) -> httpx.Response:
    return await api.post("/v1/auth/invitations/accept", json={"token": token, "password": password} | more)


async def test_an_invited_user_follows_the_link_sets_a_password_and_signs_in(
    served_settings: Settings, db_engine: AsyncEngine
) -> None:
    port = free_port()
    address = invitee()
    async with smtp_server(port) as inbox, mail_gateway(served_settings, port) as api:
        tenant, admin = await new_admin(served_settings, api)
        invited = await api.post(
            "/v1/users/invitations",
            json={"email": address, "role": "member", "display_name": "Ada"},
            headers=admin,
        )
        assert invited.status_code == 202, invited.text
        body = invited.json()
        assert body["email"] == address and body["resent"] is False
        [mail] = await inbox.wait(1)
        assert inbox.recipients == [[address]]
        assert mail["From"] == SENDER
        assert mail["Subject"] == f"You are invited to OpenTier ({tenant})"
        assert "Hello Ada," in text_of(mail)
        token = link_token(mail, "invitation")
        rich = mail.get_body(preferencelist=("html",))
        assert rich is not None and f'href="{PUBLIC_URL}/invitation?token={token}"' in rich.get_content()

        # Until accepted, nobody signs in as the invited user, whatever the password.
        assert (await login(api, tenant, address, "")).status_code in (400, 401)
        assert (await login(api, tenant, address, CHOSEN)).status_code == 401
        listed = await api.get(f"/v1/users/{body['user_id']}", headers=admin)
        assert listed.json()["email_verified"] is False

        # A password the policy refuses does not spend the link.
        weak = await accept(api, token, "short")
        assert weak.status_code == 400 and weak.json()["error"]["code"] == "invalid_request"

        accepted = await accept(api, token, display_name="Ada Lovelace")
        assert accepted.status_code == 200, accepted.text
        signed_in = accepted.json()
        assert signed_in["user"]["email"] == address and signed_in["user"]["email_verified"] is True
        assert signed_in["user"]["display_name"] == "Ada Lovelace"
        me = await api.client.get(
            "/v1/auth/me", headers={"Authorization": f"Bearer {signed_in['access_token']}"}
        )
        assert me.status_code == 200 and me.json()["tenant"]["name"] == tenant

        assert (await login(api, tenant, address, CHOSEN)).status_code == 200
        again = await accept(api, token, CHOSEN + "!")
        assert again.status_code == 400
        assert again.json()["error"]["code"] == "invitation_token_invalid"
        assert "already" in again.json()["error"]["message"]
        assert (await login(api, tenant, address, CHOSEN + "!")).status_code == 401

    actions = [action for action, _, _ in await audit_actions(db_engine, tenant)]
    assert "user.invited" in actions and "user.invitation_accepted" in actions
    stored = await scalar(
        db_engine, "SELECT count(*) FROM gateway.mail_tokens WHERE token_hash = :h", h=digest(token)
    )
    assert stored == 1  # only the digest is kept


async def test_inviting_again_resends_a_fresh_link_and_an_account_is_refused(
    served_settings: Settings,
) -> None:
    port = free_port()
    address = invitee()
    async with smtp_server(port) as inbox, mail_gateway(served_settings, port) as api:
        tenant, admin = await new_admin(served_settings, api)
        first = await api.post("/v1/users/invitations", json={"email": address}, headers=admin)
        assert first.status_code == 202
        second = await api.post(
            "/v1/users/invitations", json={"email": address.upper(), "role": "admin"}, headers=admin
        )
        assert second.status_code == 202 and second.json()["resent"] is True
        assert second.json()["user_id"] == first.json()["user_id"]
        old, new = (link_token(mail, "invitation") for mail in await inbox.wait(2))

        refused = await accept(api, old)
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "invitation_token_invalid"
        accepted = await accept(api, new)
        assert accepted.status_code == 200 and accepted.json()["user"]["role"] == "admin"

        exists = await api.post("/v1/users/invitations", json={"email": address}, headers=admin)
        assert exists.status_code == 409 and exists.json()["error"]["code"] == "already_exists"
        assert len(inbox.messages) == 2
        assert (await login(api, tenant, address, CHOSEN)).status_code == 200


async def test_an_expired_or_unknown_link_is_refused(
    served_settings: Settings, db_engine: AsyncEngine
) -> None:
    port = free_port()
    address = invitee()
    async with smtp_server(port) as inbox, mail_gateway(served_settings, port) as api:
        tenant, admin = await new_admin(served_settings, api)
        invited = await api.post("/v1/users/invitations", json={"email": address}, headers=admin)
        token = link_token((await inbox.wait(1))[0], "invitation")
        await execute(
            db_engine,
            "UPDATE gateway.mail_tokens SET expires_at = now() - interval '1 second' WHERE token_hash = :h",
            h=digest(token),
        )
        expired = await accept(api, token)
        assert expired.status_code == 400
        assert expired.json()["error"]["code"] == "invitation_token_invalid"
        assert "expired" in expired.json()["error"]["message"]
        unknown = await accept(api, "otm_" + "x" * 43)
        assert unknown.status_code == 400 and unknown.json()["error"]["code"] == "invitation_token_invalid"
        assert (await login(api, tenant, address, CHOSEN)).status_code == 401

        # The admin invites again: the fresh link works.
        again = await api.post("/v1/users/invitations", json={"email": address}, headers=admin)
        assert again.status_code == 202 and again.json()["user_id"] == invited.json()["user_id"]
        fresh = link_token((await inbox.wait(2))[1], "invitation")
        assert (await accept(api, fresh)).status_code == 200


async def test_members_and_other_tenants_admins_cannot_invite_operators_can(
    served_settings: Settings,
) -> None:
    operator_tenant = f"operator-{uuid.uuid4().hex[:8]}"
    settings = served_settings.model_copy(
        update={"auth": served_settings.auth.model_copy(update={"operator_tenant": operator_tenant})}
    )
    port = free_port()
    address = invitee()
    async with smtp_server(port) as inbox, mail_gateway(settings, port) as api:
        tenant, admin = await new_admin(settings, api)
        _, operator = await new_admin(settings, api, operator_tenant)
        other, other_admin = await new_admin(settings, api)
        other_id = (await api.get("/v1/auth/me", headers=other_admin)).json()["tenant"]["id"]

        member = f"member-{uuid.uuid4().hex[:8]}@example.org"
        created = await api.post(
            "/v1/users", json={"email": member, "password": PASSWORD, "role": "member"}, headers=admin
        )
        assert created.status_code == 201
        signed_in = await login(api, tenant, member, PASSWORD)
        member_headers = {"Authorization": f"Bearer {signed_in.json()['access_token']}"}
        refused = await api.post("/v1/users/invitations", json={"email": address}, headers=member_headers)
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "permission_denied"

        elsewhere = await api.post(
            "/v1/users/invitations", json={"email": address, "tenant_id": other_id}, headers=admin
        )
        assert elsewhere.status_code == 403 and elsewhere.json()["error"]["code"] == "permission_denied"

        by_operator = await api.post(
            "/v1/users/invitations",
            json={"email": address, "role": "admin", "tenant_id": other_id},
            headers=operator,
        )
        assert by_operator.status_code == 202, by_operator.text
        assert by_operator.json()["tenant_id"] == other_id
        [mail] = await inbox.wait(1)
        assert inbox.recipients == [[address]]
        assert other in mail["Subject"]
        accepted = await accept(api, link_token(mail, "invitation"))
        assert accepted.status_code == 200 and accepted.json()["user"]["role"] == "admin"
        assert (await login(api, other, address, CHOSEN)).status_code == 200
        assert (await login(api, tenant, address, CHOSEN)).status_code == 401


async def test_the_invitation_page_is_served_with_its_security_headers(served_settings: Settings) -> None:
    port = free_port()
    async with smtp_server(port), mail_gateway(served_settings, port) as api:
        for path, script_page in (
            ("/invitation", "invitation"),
            ("/reset", "reset"),
            ("/verify-email", "verify-email"),
        ):
            page = await api.client.get(path, params={"token": "otm_abc"})
            assert page.status_code == 200
            assert page.headers["content-type"].startswith("text/html")
            policy = page.headers["content-security-policy"]
            assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
            assert page.headers["referrer-policy"] == "no-referrer"
            assert f'data-page="{script_page}"' in page.text
            assert '<script type="module" src="/web/pages/pages.js">' in page.text
            assert "<label" in page.text or 'role="status"' in page.text
        script = await api.client.get("/web/pages/pages.js")
        assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
        assert "content-security-policy" in script.headers
        cached = await api.client.get(
            "/web/pages/pages.js", headers={"If-None-Match": script.headers["etag"]}
        )
        assert cached.status_code == 304
        assert (await api.client.get("/web/pages/invitation.html")).status_code == 404
        document = (await api.client.get("/openapi.json")).json()
        assert "/invitation" not in document["paths"] and "/v1/users/invitations" in document["paths"]

    # No markup from strings: the script writes text nodes only; no inline script, handler or style.
    script_text = (PAGES / "pages.js").read_text()
    forbidden = r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function\("
    assert not re.search(forbidden, script_text)
    for html in PAGES.glob("*.html"):
        text = html.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)", text), html.name
        assert not re.search(r"\son[a-z]+=|\sstyle=|<style", text), html.name


async def test_opentier_admin_invite_mails_the_link(served_settings: Settings, tmp_path: Path) -> None:
    port = free_port()
    address = invitee()
    async with smtp_server(port) as inbox, mail_gateway(served_settings, port) as api:
        tenant, admin = await new_admin(served_settings, api)
        key = await api.post("/v1/keys", json={"name": "cli", "scopes": ["admin"]}, headers=admin)
        assert key.status_code == 201
        await inbox.wait(1)  # the notice of the new key
        (tmp_path / "opentier.toml").write_text("")
        env = {
            "OPENTIER_CONFIG": str(tmp_path / "opentier.toml"),
            "OPENTIER_REMOTE_CONFIG": str(tmp_path / "remote.toml"),
        }
        runner = CliRunner(env=env)
        arguments = ["admin", "invite", address, "--role", "admin", "--name", "Grace"]
        arguments += ["--url", str(api.client.base_url), "--api-key", key.json()["key"]]
        result = await asyncio.to_thread(runner.invoke, main, arguments)
        assert result.exit_code == 0, result.output
        assert f"mailed an invitation to {address}" in result.output
        mail = next(m for m in await inbox.wait(2) if address in m["To"])
        assert "Hello Grace," in text_of(mail) and "as admin" in text_of(mail)
        assert (await accept(api, link_token(mail, "invitation"))).status_code == 200
        assert (await login(api, tenant, address, CHOSEN)).status_code == 200

        again = await asyncio.to_thread(runner.invoke, main, arguments)
        assert again.exit_code == 2 and "already_exists" in again.output
