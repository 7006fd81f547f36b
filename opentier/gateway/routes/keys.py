"""API keys: /v1/keys for the caller's own, /v1/users/<id>/keys for admins managing anyone's in the tenant.

A key is shown once, when created; afterwards only its prefix. Revocation acts on the next request.
"""

from __future__ import annotations

from pydantic import BaseModel, Field
from quart import Blueprint
from quart_schema import tag, validate_request, validate_response

from opentier.gateway.chat.revocation import end_key_streams
from opentier.gateway.errors import documented_errors
from opentier.gateway.identity.api_models import ApiKeyOut, NewApiKeyOut, Scope
from opentier.gateway.origin import request_origin
from opentier.gateway.principal import current_principal, require
from opentier.gateway.state import gateway_state

own = Blueprint("identity_keys", __name__, url_prefix="/v1/keys")
admin = Blueprint("identity_user_keys", __name__, url_prefix="/v1/users/<user_id>/keys")


def blueprints() -> list[Blueprint]:
    return [own, admin]


class CreateKeyRequest(BaseModel):
    name: str = Field(min_length=1, max_length=200, description="What the key is for, to tell keys apart.")
    scopes: list[Scope] = Field(min_length=1, description="What the key may do; at most what its owner may.")
    expires_in_days: int | None = Field(
        default=None, ge=1, description="Days until the key stops working; default from auth settings."
    )


class KeyList(BaseModel):
    keys: list[ApiKeyOut]


async def _create(owner_id: str, data: CreateKeyRequest) -> tuple[NewApiKeyOut, int]:
    new = (
        await gateway_state()
        .require_identity()
        .keys.create(
            current_principal(),
            owner_id,
            name=data.name,
            scopes=list(data.scopes),
            expires_in_days=data.expires_in_days,
            origin=request_origin(),
        )
    )
    listed = ApiKeyOut.of(new.row)
    from opentier.gateway.mail.notices import notify_key_created  # mails the owner (docs/email.md)

    notify_key_created(current_principal(), new.row, request_origin())
    return NewApiKeyOut(**listed.model_dump(), key=new.secret), 201


async def _list(owner_id: str) -> KeyList:
    keys = await gateway_state().require_identity().keys.list(current_principal(), owner_id)
    return KeyList(keys=[ApiKeyOut.of(key) for key in keys])


async def _revoke(owner_id: str, key_id: str) -> ApiKeyOut:
    key = (
        await gateway_state()
        .require_identity()
        .keys.revoke(current_principal(), owner_id, key_id, request_origin())
    )
    end_key_streams(str(key.id))
    return ApiKeyOut.of(key)


@own.post("")
@tag(["keys"])
@require()
@validate_request(CreateKeyRequest)
@validate_response(NewApiKeyOut, 201)
@documented_errors(400, 401, 403)
async def create_own_key(data: CreateKeyRequest) -> tuple[NewApiKeyOut, int]:
    """Create a key for yourself; the response holds the key, shown this once."""
    return await _create(current_principal().user_id, data)


@own.get("")
@tag(["keys"])
@require()
@validate_response(KeyList, 200)
@documented_errors(401, 403)
async def list_own_keys() -> KeyList:
    return await _list(current_principal().user_id)


@own.delete("/<key_id>")
@tag(["keys"])
@require()
@validate_response(ApiKeyOut, 200)
@documented_errors(401, 403, 404)
async def revoke_own_key(key_id: str) -> ApiKeyOut:
    """Revoke one of your keys; it stops working at once."""
    return await _revoke(current_principal().user_id, key_id)


@admin.post("")
@tag(["keys"])
@require("admin")
@validate_request(CreateKeyRequest)
@validate_response(NewApiKeyOut, 201)
@documented_errors(400, 401, 403, 404)
async def create_user_key(user_id: str, data: CreateKeyRequest) -> tuple[NewApiKeyOut, int]:
    """Create a key for a user of your tenant (admin)."""
    return await _create(user_id, data)


@admin.get("")
@tag(["keys"])
@require("admin")
@validate_response(KeyList, 200)
@documented_errors(401, 403, 404)
async def list_user_keys(user_id: str) -> KeyList:
    return await _list(user_id)


@admin.delete("/<key_id>")
@tag(["keys"])
@require("admin")
@validate_response(ApiKeyOut, 200)
@documented_errors(401, 403, 404)
async def revoke_user_key(user_id: str, key_id: str) -> ApiKeyOut:
    """Revoke a key of a user of your tenant (admin)."""
    return await _revoke(user_id, key_id)
