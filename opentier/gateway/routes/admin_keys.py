"""``/v1/admin/keys``: every API key of the admin's tenant (scope ``admin``), whoever owns it.

``GET`` lists them newest first, a page at a time, filtered by owner and state; the key itself is never
shown (only its prefix: the gateway keeps a digest). ``DELETE /v1/admin/keys/{key_id}`` revokes one at
once, audited as ``api_key.revoked``, and ends the open chat streams running on it
(``api_key_revoked``). See docs/admin-users.md.
"""

from __future__ import annotations

from pydantic import BaseModel, Field
from quart import Blueprint
from quart_schema import tag, validate_querystring, validate_response

from opentier.errors import DatabaseError
from opentier.gateway.chat.revocation import end_key_streams
from opentier.gateway.errors import documented_errors
from opentier.gateway.identity.api_models import ApiKeyOut
from opentier.gateway.identity.tenant_keys import MAX_PAGE_SIZE, KeyFilter, TenantKeys
from opentier.gateway.origin import request_origin
from opentier.gateway.principal import current_principal, require
from opentier.gateway.state import gateway_state

blueprint = Blueprint("admin_keys", __name__, url_prefix="/v1/admin/keys")
TAGS = ["Admin"]


def blueprints() -> list[Blueprint]:
    return [blueprint]


class AdminKeysQuery(BaseModel):
    """Which keys to list, newest first."""

    user_id: str | None = Field(default=None, max_length=64, description="Only the keys of this user.")
    active: bool | None = Field(
        default=None,
        description="`true`: only keys that work (neither revoked nor expired); `false`: only the others.",
    )
    page_size: int = Field(default=50, ge=1, le=MAX_PAGE_SIZE)
    page_token: str = Field(default="", max_length=500, description="`next_page_token` of the last page.")


class AdminKeyList(BaseModel):
    """One page of the tenant's keys, newest first."""

    keys: list[ApiKeyOut]
    next_page_token: str = Field(description="Pass as page_token for the next page; empty on the last.")


def _keys() -> TenantKeys:
    engine = gateway_state().engine
    if engine is None:
        raise DatabaseError("the gateway's database is not open")
    return TenantKeys(engine)


@blueprint.get("")
@require("admin")
@tag(TAGS)
@documented_errors(400, 401, 403, 500)
@validate_querystring(AdminKeysQuery)
@validate_response(AdminKeyList, 200)
async def list_tenant_keys(query_args: AdminKeysQuery) -> AdminKeyList:
    """Every API key of your tenant, newest first (scope `admin`): filter by `user_id` (the owner) and
    `active`. Only the prefix of a key is shown, never the key."""
    page = await _keys().list(
        current_principal(),
        KeyFilter(user_id=query_args.user_id, active=query_args.active),
        query_args.page_size,
        query_args.page_token,
    )
    return AdminKeyList(keys=[ApiKeyOut.of(key) for key in page.items], next_page_token=page.next_token)


@blueprint.delete("/<key_id>")
@require("admin")
@tag(TAGS)
@documented_errors(401, 403, 404, 500)
@validate_response(ApiKeyOut, 200)
async def revoke_tenant_key(key_id: str) -> ApiKeyOut:
    """Revoke any API key of your tenant (scope `admin`; audited): it stops working at once and the chat
    streams running on it end with `api_key_revoked`. Revoking a revoked key changes nothing."""
    key = await _keys().revoke(current_principal(), key_id, request_origin())
    end_key_streams(str(key.id))
    return ApiKeyOut.of(key)
