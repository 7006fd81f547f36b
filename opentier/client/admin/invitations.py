"""Invitations (``POST /v1/users/invitations``, scope ``admin``): the gateway creates the user without a
password and mails a single-use link with which the invitee sets a password. Inviting into another tenant
than the key's own needs an operator's key. See docs/email.md::

    from opentier.client.admin import invitations

    sent = client.send(invitations.invite("ada@example.org", role="admin", display_name="Ada"))
    print(sent.user_id, sent.expires_at)
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from opentier.client.calls import Call, _body


class Invitation(BaseModel):
    """An invitation mailed (the mail leaves in the background): the invited user and when its link stops
    working; ``resent`` when the address had a pending invitation, whose older links stop working."""

    user_id: str
    email: str
    tenant_id: str
    expires_at: datetime
    resent: bool = False


def invite(
    email: str, *, role: str = "member", tenant_id: str | None = None, display_name: str | None = None
) -> Call[Invitation]:
    """Invite ``email`` as ``role`` into the key's tenant (or ``tenant_id``, operators only)."""
    body = _body(email=email, role=role, tenant_id=tenant_id, display_name=display_name)
    return Call("POST", "/v1/users/invitations", Invitation.model_validate, json=body)
