"""/v1/auth: sign in, refresh, sign out, who am I, and sign up when the configuration opens it."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, Field
from quart import Blueprint
from quart_schema import tag, validate_request, validate_response

from opentier.gateway.chat.revocation import end_session_streams
from opentier.gateway.errors import documented_errors, documented_no_content
from opentier.gateway.identity.api_models import Scope, TokenResponse, UserOut
from opentier.gateway.identity.service import TokenPair
from opentier.gateway.origin import request_origin
from opentier.gateway.principal import current_principal, require
from opentier.gateway.state import gateway_state

blueprint = Blueprint("identity_auth", __name__, url_prefix="/v1/auth")


def blueprints() -> list[Blueprint]:
    return [blueprint]


class LoginRequest(BaseModel):
    email: str = Field(max_length=320)
    password: str = Field(max_length=65536)
    tenant: str | None = Field(
        default=None, max_length=200, description="Tenant name; default tenant if none."
    )


class RefreshRequest(BaseModel):
    refresh_token: str = Field(max_length=200)


class SignupRequest(BaseModel):
    email: str = Field(max_length=320)
    password: str = Field(max_length=65536)
    display_name: str = Field(default="", max_length=200)
    tenant: str | None = Field(default=None, max_length=200)


class TenantOut(BaseModel):
    id: str
    name: str


class MeResponse(BaseModel):
    """The caller: its user, tenant, the scopes this credential holds, and the API key used, if any."""

    user: UserOut
    tenant: TenantOut
    scopes: list[Scope]
    api_key_id: str | None


def token_response(pair: TokenPair) -> TokenResponse:
    now = datetime.now(UTC)
    return TokenResponse(
        access_token=pair.access_token,
        expires_in=max(0, int((pair.access_expires_at - now).total_seconds())),
        refresh_token=pair.refresh_token,
        refresh_expires_in=max(0, int((pair.refresh_expires_at - now).total_seconds())),
        user=UserOut.of(pair.user),
    )


@blueprint.post("/login")
@tag(["auth"])
@validate_request(LoginRequest)
@validate_response(TokenResponse, 200)
@documented_errors(400, 401, 403, 429)
async def login(data: LoginRequest) -> TokenResponse:
    """Sign in with email and password; failed attempts are throttled per account and per address."""
    identity = gateway_state().require_identity()
    pair = await identity.login(data.tenant, data.email, data.password, request_origin())
    return token_response(pair)


@blueprint.post("/refresh")
@tag(["auth"])
@validate_request(RefreshRequest)
@validate_response(TokenResponse, 200)
@documented_errors(400, 401, 403)
async def refresh(data: RefreshRequest) -> TokenResponse:
    """Trade a refresh token for a new pair; the old one stops working, and reusing it ends the session."""
    identity = gateway_state().require_identity()
    return token_response(await identity.refresh(data.refresh_token, request_origin()))


@blueprint.post("/logout")
@tag(["auth"])
@validate_request(RefreshRequest)
@documented_no_content
@documented_errors(400, 401)
async def logout(data: RefreshRequest) -> tuple[str, int]:
    """End the session of this refresh token: it, and the access tokens of the session, stop at once
    (chat streams opened with them end with `session_ended`)."""
    ended = await gateway_state().require_identity().logout(data.refresh_token, request_origin())
    if ended is not None:
        end_session_streams([ended])
    return "", 204


@blueprint.get("/me")
@tag(["auth"])
@require()
@validate_response(MeResponse, 200)
@documented_errors(401, 403)
async def me() -> MeResponse:
    """Who the credential of this request belongs to, and what it may do."""
    principal = current_principal()
    user, tenant = await gateway_state().require_identity().users.me(principal)
    return MeResponse(
        user=UserOut.of(user),
        tenant=TenantOut(id=str(tenant.id), name=tenant.name),
        scopes=sorted(principal.scopes),  # type: ignore[arg-type]
        api_key_id=principal.api_key_id,
    )


@blueprint.post("/signup")
@tag(["auth"])
@validate_request(SignupRequest)
@validate_response(TokenResponse, 201)
@documented_errors(400, 403, 409)
async def signup(data: SignupRequest) -> tuple[TokenResponse, int]:
    """Create an account (a member) and sign in; refused unless `auth.signup` is `open`. A link to verify
    the address is mailed (docs/email.md)."""
    from opentier.gateway.routes.email_verification import verifications

    identity = gateway_state().require_identity()
    pair = await identity.signup(data.tenant, data.email, data.password, data.display_name, request_origin())
    verifications().after_signup(pair.user.id)
    return token_response(pair), 201
