"""/v1/users: the tenant's users, for admins (scope `admin`). Other tenants' users are never found.

Disabling, deleting or logging out a user by force ends its open chat streams in this gateway at once
(other gateways' turns notice within ``streaming.revalidate_seconds``); see docs/admin-users.md.
"""

from __future__ import annotations

import uuid

from pydantic import BaseModel, Field, ValidationError
from quart import Blueprint, request
from quart_schema import (
    RequestSchemaValidationError,
    document_request,
    tag,
    validate_querystring,
    validate_request,
    validate_response,
)

from opentier.gateway.chat.revocation import end_key_streams, end_session_streams, end_user_streams
from opentier.gateway.errors import documented_errors, documented_no_content
from opentier.gateway.identity.admin import UserChange
from opentier.gateway.identity.api_models import RoleName, UserOut
from opentier.gateway.origin import request_origin
from opentier.gateway.principal import current_principal, require
from opentier.gateway.state import gateway_state

blueprint = Blueprint("identity_users", __name__, url_prefix="/v1/users")


def blueprints() -> list[Blueprint]:
    return [blueprint]


class CreateUserRequest(BaseModel):
    email: str = Field(max_length=320)
    password: str = Field(
        max_length=65536, description="Initial password; the user may be asked to change it."
    )
    display_name: str = Field(default="", max_length=200)
    role: RoleName = "member"


class UpdateUserRequest(BaseModel):
    """Fields to change; those left out stay as they are. Disabling ends the user's sessions at once."""

    role: RoleName | None = None
    disabled: bool | None = None
    display_name: str | None = Field(default=None, max_length=200)
    password: str | None = Field(default=None, max_length=65536)


class ListUsersQuery(BaseModel):
    page_size: int = Field(default=50, ge=1, le=200)
    page_token: str = Field(default="", max_length=500)


class ForceLogoutRequest(BaseModel):
    """Optional body of a forced logout."""

    revoke_api_keys: bool = Field(
        default=False, description="Revoke the user's API keys too (they stop working at once)."
    )


class ForceLogoutResult(BaseModel):
    """What the forced logout ended."""

    user: UserOut
    sessions_ended: int = Field(description="Sign-in sessions ended (their tokens stop working at once).")
    api_keys_revoked: list[str] = Field(description="Ids of the API keys revoked (with `revoke_api_keys`).")
    streams_ended: int = Field(description="Open chat streams of this gateway that were ended.")


class UserList(BaseModel):
    users: list[UserOut]
    next_page_token: str = Field(description="Pass as page_token for the next page; empty on the last.")


@blueprint.post("")
@tag(["users"])
@require("admin")
@validate_request(CreateUserRequest)
@validate_response(UserOut, 201)
@documented_errors(400, 401, 403, 409)
async def create_user(data: CreateUserRequest) -> tuple[UserOut, int]:
    """Create a user of the caller's tenant."""
    user = (
        await gateway_state()
        .require_identity()
        .users.create(
            current_principal(),
            email=data.email,
            password=data.password,
            display_name=data.display_name,
            role=data.role,
            origin=request_origin(),
        )
    )
    return UserOut.of(user), 201


@blueprint.get("")
@tag(["users"])
@require("admin")
@validate_querystring(ListUsersQuery)
@validate_response(UserList, 200)
@documented_errors(400, 401, 403)
async def list_users(query_args: ListUsersQuery) -> UserList:
    """The tenant's users, oldest first, a page at a time."""
    page = (
        await gateway_state()
        .require_identity()
        .users.list(current_principal(), query_args.page_size, query_args.page_token)
    )
    return UserList(users=[UserOut.of(user) for user in page.items], next_page_token=page.next_token)


@blueprint.get("/<user_id>")
@tag(["users"])
@require("admin")
@validate_response(UserOut, 200)
@documented_errors(401, 403, 404)
async def get_user(user_id: str) -> UserOut:
    user = await gateway_state().require_identity().users.get(current_principal(), user_id)
    return UserOut.of(user)


@blueprint.patch("/<user_id>")
@tag(["users"])
@require("admin")
@validate_request(UpdateUserRequest)
@validate_response(UserOut, 200)
@documented_errors(400, 401, 403, 404)
async def update_user(user_id: str, data: UpdateUserRequest) -> UserOut:
    """Change a user's role, state, name or password (audited)."""
    change = UserChange(
        role=data.role, disabled=data.disabled, display_name=data.display_name, password=data.password
    )
    updated = (
        await gateway_state()
        .require_identity()
        .users.update(current_principal(), user_id, change, request_origin())
    )
    user = updated.user
    if user.disabled:
        end_user_streams(str(user.id))
    else:
        end_session_streams(updated.ended_sessions)
    return UserOut.of(user)


@blueprint.post("/<user_id>/logout")
@tag(["users"])
@require("admin")
@document_request(ForceLogoutRequest)
@validate_response(ForceLogoutResult, 200)
@documented_errors(400, 401, 403, 404)
async def force_logout(user_id: str) -> ForceLogoutResult:
    """Log a user out everywhere (audited as `user.logged_out_by_admin`): every sign-in session ends
    and its open chat streams end with `session_ended`; with `revoke_api_keys` its API keys are revoked
    too, and their streams end with `api_key_revoked`. The body is optional."""
    raw = await request.get_json(silent=True)
    try:
        data = ForceLogoutRequest.model_validate({} if raw is None else raw)
    except ValidationError as err:
        raise RequestSchemaValidationError(err) from None
    done = (
        await gateway_state()
        .require_identity()
        .users.logout(
            current_principal(), user_id, revoke_api_keys=data.revoke_api_keys, origin=request_origin()
        )
    )
    streams = end_session_streams(done.sessions)
    for key_id in done.api_keys:
        streams += end_key_streams(key_id)
    return ForceLogoutResult(
        user=UserOut.of(done.user),
        sessions_ended=len(done.sessions),
        api_keys_revoked=done.api_keys,
        streams_ended=streams,
    )


@blueprint.delete("/<user_id>")
@tag(["users"])
@require("admin")
@documented_no_content
@documented_errors(400, 401, 403, 404)
async def delete_user(user_id: str) -> tuple[str, int]:
    """Delete a user with its keys and sessions; the audit log keeps what it did."""
    await gateway_state().require_identity().users.delete(current_principal(), user_id, request_origin())
    end_user_streams(str(uuid.UUID(user_id)), deleted=True)  # the id was found: it is a UUID
    return "", 204
