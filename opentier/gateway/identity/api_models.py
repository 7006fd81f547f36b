"""The JSON shapes of the identity routes (request bodies, responses), as pydantic models.

They are what ``/openapi.json`` documents; secrets appear in exactly two of them — a new API key and a
token pair — and nowhere else.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, Field

from opentier.db.models.gateway import ApiKey, User

Scope = Literal["read", "ingest", "chat", "admin"]
RoleName = Literal["admin", "member"]


class UserOut(BaseModel):
    """A user as shown to itself and to its tenant's admins (never its password hash)."""

    id: str
    email: str
    display_name: str
    role: RoleName
    disabled: bool
    email_verified: bool = Field(
        description="Whether the user proved the address (a verification link or an accepted invitation)."
    )
    created_at: datetime
    last_login_at: datetime | None

    @classmethod
    def of(cls, user: User) -> UserOut:
        return cls(
            id=str(user.id),
            email=user.email,
            display_name=user.display_name,
            role=user.role,  # type: ignore[arg-type]
            disabled=user.disabled,
            email_verified=user.email_verified_at is not None,
            created_at=user.created_at,
            last_login_at=user.last_login_at,
        )


class TokenResponse(BaseModel):
    """A token pair: send the access token as `Authorization: Bearer`; trade the refresh token at
    /v1/auth/refresh for a new pair before the access token expires."""

    access_token: str
    token_type: Literal["Bearer"] = "Bearer"
    expires_in: int = Field(description="Seconds the access token stays valid.")
    refresh_token: str
    refresh_expires_in: int = Field(description="Seconds the refresh token stays valid (if not used).")
    user: UserOut


class ApiKeyOut(BaseModel):
    """An API key as listed: its prefix tells it apart; the key itself is never shown again."""

    id: str
    name: str
    prefix: str = Field(description="The `otk_<prefix>_` start of the key.")
    scopes: list[Scope]
    owner_id: str
    created_at: datetime
    last_used_at: datetime | None = Field(description="Updated at most once a minute.")
    expires_at: datetime | None
    revoked_at: datetime | None
    state: Literal["active", "expired", "revoked"]

    @classmethod
    def of(cls, key: ApiKey) -> ApiKeyOut:
        state: Literal["active", "expired", "revoked"] = "active"
        if key.revoked_at is not None:
            state = "revoked"
        elif key.expires_at is not None and key.expires_at <= datetime.now(UTC):
            state = "expired"
        return cls(
            id=str(key.id),
            name=key.name,
            prefix=f"otk_{key.prefix}_",
            scopes=key.scopes,  # type: ignore[arg-type]
            owner_id=str(key.user_id),
            created_at=key.created_at,
            last_used_at=key.last_used_at,
            expires_at=key.expires_at,
            revoked_at=key.revoked_at,
            state=state,
        )


class NewApiKeyOut(ApiKeyOut):
    """A key just created. `key` is shown this once: store it now, it cannot be recovered."""

    key: str
