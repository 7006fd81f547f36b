"""Every API key of the admin's tenant, whoever owns it (``/v1/admin/keys``; an admin's key): list
(filtered by owner and state, newest first; never the secret) and revoke, which ends the open chat
streams running on the key. See docs/admin-users.md::

    from opentier.client.admin import keys

    page = client.send(keys.list_keys(user_id=user_id, active=True))
    client.send(keys.revoke_key(page.keys[0].id))
"""

from __future__ import annotations

from pydantic import BaseModel

from opentier.client.calls import Call, _model, _page, _segment
from opentier.client.models import ApiKey

PATH = "/v1/admin/keys"


class KeyPage(BaseModel):
    keys: list[ApiKey]
    #: Empty on the last page.
    next_page_token: str = ""


def list_keys(
    *,
    user_id: str | None = None,
    active: bool | None = None,
    page_size: int | None = None,
    page_token: str | None = None,
) -> Call[KeyPage]:
    """The tenant's keys, newest first: of ``user_id`` only; ``active`` True for keys that work, False
    for revoked or expired ones."""
    state = None if active is None else ("true" if active else "false")
    params = _page(page_size, page_token, user_id=user_id, active=state)
    return Call("GET", PATH, _model(KeyPage), params=params)


def revoke_key(key_id: str) -> Call[ApiKey]:
    """Revoke a key of any user of the tenant, at once (idempotent)."""
    return Call("DELETE", f"{PATH}/{_segment(key_id)}", _model(ApiKey))
