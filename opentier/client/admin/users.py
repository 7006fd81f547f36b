"""Users of the admin's tenant (``/v1/users``; an admin's key): list, show, change role, disable or
enable, log out by force (ending the user's open chat streams) and delete. See docs/admin-users.md::

    from opentier.client.admin import users

    for user in client.send(users.list_users()).users:
        print(user.email, user.role)
    client.send(users.disable_user(user_id))          # its open streams end: account_disabled
    client.send(users.logout_user(user_id, revoke_api_keys=True))
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from opentier.client.calls import Call, _body, _model, _nothing, _page, _segment

PATH = "/v1/users"


class User(BaseModel):
    id: str
    email: str
    display_name: str = ""
    #: ``admin`` or ``member``.
    role: str
    disabled: bool
    created_at: datetime
    last_login_at: datetime | None = None


class UserPage(BaseModel):
    users: list[User]
    #: Empty on the last page.
    next_page_token: str = ""


class LoggedOut(BaseModel):
    """What a forced logout ended."""

    user: User
    sessions_ended: int
    api_keys_revoked: list[str]
    #: Open chat streams of the gateway that answered (others end within streaming.revalidate_seconds).
    streams_ended: int


def list_users(page_size: int | None = None, page_token: str | None = None) -> Call[UserPage]:
    """The tenant's users, oldest first, a page at a time."""
    return Call("GET", PATH, _model(UserPage), params=_page(page_size, page_token))


def get_user(user_id: str) -> Call[User]:
    return Call("GET", f"{PATH}/{_segment(user_id)}", _model(User))


def update_user(
    user_id: str, *, role: str | None = None, disabled: bool | None = None, display_name: str | None = None
) -> Call[User]:
    """Change what is given; disabling ends the user's sessions and open streams at once."""
    body = _body(role=role, disabled=disabled, display_name=display_name)
    return Call("PATCH", f"{PATH}/{_segment(user_id)}", _model(User), json=body)


def set_role(user_id: str, role: str) -> Call[User]:
    return update_user(user_id, role=role)


def disable_user(user_id: str) -> Call[User]:
    """Refuse the user's sign-ins, tokens and keys; its open chat streams end (``account_disabled``)."""
    return update_user(user_id, disabled=True)


def enable_user(user_id: str) -> Call[User]:
    return update_user(user_id, disabled=False)


def logout_user(user_id: str, *, revoke_api_keys: bool = False) -> Call[LoggedOut]:
    """End every sign-in session of the user (its streams end: ``session_ended``); with
    ``revoke_api_keys`` revoke its API keys too (``api_key_revoked``)."""
    return Call(
        "POST",
        f"{PATH}/{_segment(user_id)}/logout",
        _model(LoggedOut),
        json={"revoke_api_keys": revoke_api_keys},
    )


def delete_user(user_id: str) -> Call[None]:
    """Delete the user with its keys and sessions (the audit log keeps what it did)."""
    return Call("DELETE", f"{PATH}/{_segment(user_id)}", _nothing)
