"""Invitations: ``POST /v1/users/invitations`` (admin) mails a single-use link; ``POST
/v1/auth/invitations/accept`` (anonymous, with the link's token) sets the password and signs in.

See :mod:`opentier.gateway.mail.invitations` and docs/email.md.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field
from quart import Blueprint
from quart_schema import tag, validate_request, validate_response

from opentier.gateway.errors import documented_errors
from opentier.gateway.identity.api_models import RoleName, TokenResponse
from opentier.gateway.mail.invitations import Invitations
from opentier.gateway.mail.outbox import serving_outbox
from opentier.gateway.origin import request_origin
from opentier.gateway.principal import current_principal, require
from opentier.gateway.routes.auth import token_response
from opentier.gateway.state import gateway_state

admin = Blueprint("invitations", __name__, url_prefix="/v1/users/invitations")
accepting = Blueprint("invitations_accept", __name__, url_prefix="/v1/auth/invitations")


def blueprints() -> list[Blueprint]:
    return [admin, accepting]


def invitations() -> Invitations:
    """The invitation flow of the serving app."""
    return Invitations(gateway_state().require_identity(), serving_outbox())


class InviteRequest(BaseModel):
    email: str = Field(max_length=320)
    role: RoleName = "member"
    display_name: str | None = Field(default=None, max_length=200)
    tenant_id: str | None = Field(
        default=None,
        max_length=100,
        description="Tenant to invite into; default: the caller's. Another tenant only for operators "
        "(admins of `auth.operator_tenant`).",
    )


class InvitationOut(BaseModel):
    """An invitation mailed (in the background): the invited user and when its link stops working."""

    user_id: str
    email: str
    tenant_id: str
    expires_at: datetime
    resent: bool = Field(description="The address had a pending invitation; older links stop working.")


class AcceptRequest(BaseModel):
    token: str = Field(max_length=200, description="The `token` parameter of the mailed link.")
    password: str = Field(max_length=65536)
    display_name: str | None = Field(default=None, max_length=200)


@admin.post("")
@tag(["users"])
@require("admin")
@validate_request(InviteRequest)
@validate_response(InvitationOut, 202)
@documented_errors(400, 401, 403, 404, 409)
async def invite(data: InviteRequest) -> tuple[InvitationOut, int]:
    """Invite an address: the user is created without a password and mailed a single-use link.

    Inviting again an address that has not accepted yet mails a fresh link (older ones stop working);
    an address with an account is 409 `already_exists`."""
    sent = await invitations().invite(
        current_principal(),
        email=data.email,
        role=data.role,
        display_name=data.display_name,
        tenant_id=data.tenant_id,
        origin=request_origin(),
    )
    out = InvitationOut(
        user_id=str(sent.user_id),
        email=sent.email,
        tenant_id=str(sent.tenant_id),
        expires_at=sent.expires_at,
        resent=sent.resent,
    )
    return out, 202


@accepting.post("/accept")
@tag(["auth"])
@validate_request(AcceptRequest)
@validate_response(TokenResponse, 200)
@documented_errors(400, 429)
async def accept(data: AcceptRequest) -> TokenResponse:
    """Accept an invitation: set your password with the mailed token (once; it expires) and sign in.

    An unknown, expired or used token is refused with 400 `invitation_token_invalid`."""
    pair = await invitations().accept(data.token, data.password, data.display_name, request_origin())
    return token_response(pair)
