"""/v1/auth/password-reset: ask for a reset link by mail, then set a new password with its token.

The outbox, the reset flow and the mail notices (docs/email.md) of the app start while it serves (after
the database opens) and close before the database does, waiting briefly for mails still being sent.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator

from pydantic import BaseModel, Field
from quart import Blueprint
from quart_schema import tag, validate_request, validate_response

from opentier.gateway.errors import documented_errors, documented_no_content
from opentier.gateway.mail import notices
from opentier.gateway.mail.outbox import EXTRAS_KEY, Outbox
from opentier.gateway.mail.reset import PasswordResets
from opentier.gateway.origin import request_origin
from opentier.gateway.state import gateway_state

log = logging.getLogger("opentier.gateway.mail")

blueprint = Blueprint("password_reset", __name__, url_prefix="/v1/auth/password-reset")

OUTBOX_KEY = EXTRAS_KEY
RESETS_KEY = "password_resets"
ACCEPTED = "if this address belongs to an account, a reset link is on its way"


def blueprints() -> list[Blueprint]:
    return [blueprint]


@blueprint.while_app_serving
async def _mail() -> AsyncGenerator[None, None]:
    state = gateway_state()
    settings = state.settings
    if settings.mail.mode == "log" and settings.environment == "production":
        log.warning("mail.mode is 'log': mails, reset links included, go to the log instead of being sent")
    outbox = Outbox(settings.mail)
    state.extras[OUTBOX_KEY] = outbox
    state.extras[RESETS_KEY] = PasswordResets(state.require_identity(), outbox, settings.auth.default_tenant)
    notices.install(state, notices.Notices(state.require_identity(), outbox))
    yield
    notices.uninstall(state)
    await outbox.close(settings.gateway.shutdown_grace_seconds)
    del state.extras[RESETS_KEY]


def resets() -> PasswordResets:
    found = gateway_state().extras.get(RESETS_KEY)
    if not isinstance(found, PasswordResets):
        gateway_state().require_identity()  # the not-serving error
        raise RuntimeError("the password reset flow is not installed on this app")
    return found


class ResetRequest(BaseModel):
    email: str = Field(max_length=320)
    tenant: str | None = Field(
        default=None, max_length=200, description="Tenant name; default tenant if none."
    )


class ResetAccepted(BaseModel):
    """The same answer whether or not the address has an account."""

    message: str


class ResetConfirm(BaseModel):
    token: str = Field(max_length=200, description="The `token` parameter of the mailed link.")
    new_password: str = Field(max_length=65536)


@blueprint.post("")
@tag(["auth"])
@validate_request(ResetRequest)
@validate_response(ResetAccepted, 202)
@documented_errors(400, 429)
async def request_reset(data: ResetRequest) -> tuple[ResetAccepted, int]:
    """Mail a single-use reset link if the address has an account; the answer never tells whether it does."""
    resets().request(data.tenant, data.email, request_origin())
    return ResetAccepted(message=ACCEPTED), 202


@blueprint.post("/confirm")
@tag(["auth"])
@validate_request(ResetConfirm)
@documented_no_content
@documented_errors(400, 429)
async def confirm_reset(data: ResetConfirm) -> tuple[str, int]:
    """Set a new password with a reset token (once; it expires); every session of the account ends.

    An unknown, expired or used token is refused with 400 `reset_token_invalid`."""
    await resets().confirm(data.token, data.new_password, request_origin())
    return "", 204
