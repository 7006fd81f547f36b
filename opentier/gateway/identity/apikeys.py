"""API keys: ``otk_<prefix>_<secret>``, shown once, stored as the prefix plus a SHA-256 digest.

The prefix (12 hex digits) finds the row and lets people tell their keys apart; the digest proves the
rest. Revocation and expiry are checked on every use, so they act at once.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from opentier.db.models.gateway import ApiKey, Tenant, User
from opentier.errors import NotFoundError
from opentier.gateway.identity.digests import digest, random_secret, same_digest

KEY_PREFIX = "otk_"
PREFIX_HEX_DIGITS = 12


@dataclass(frozen=True, slots=True)
class NewKey:
    """A key just made: the row, and the full key — returned to its owner once, never stored."""

    row: ApiKey
    secret: str


@dataclass(frozen=True, slots=True)
class KeyLookup:
    key: ApiKey
    user: User
    tenant: Tenant


def looks_like_key(credential: str) -> bool:
    return credential.startswith(KEY_PREFIX)


def split_key(credential: str) -> str | None:
    """The prefix of a well-formed key, else None."""
    parts = credential.split("_", 2)
    if len(parts) != 3 or parts[0] + "_" != KEY_PREFIX or len(parts[1]) != PREFIX_HEX_DIGITS or not parts[2]:
        return None
    return parts[1]


async def create_key(
    session: AsyncSession,
    *,
    owner: User,
    name: str,
    scopes: list[str],
    ttl: timedelta | None,
) -> NewKey:
    prefix = secrets.token_hex(PREFIX_HEX_DIGITS // 2)
    secret = f"{KEY_PREFIX}{prefix}_{random_secret()}"
    row = ApiKey(
        tenant_id=owner.tenant_id,
        user_id=owner.id,
        name=name.strip(),
        prefix=prefix,
        key_hash=digest(secret),
        scopes=sorted(set(scopes)),
        expires_at=None if ttl is None else datetime.now(UTC) + ttl,
    )
    session.add(row)
    await session.flush()
    await session.refresh(row)
    return NewKey(row, secret)


async def find_key(session: AsyncSession, credential: str) -> KeyLookup | None:
    """The key ``credential`` names and proves, with its user and tenant; None otherwise."""
    prefix = split_key(credential)
    if prefix is None:
        return None
    found = (
        await session.execute(
            sa.select(ApiKey, User, Tenant)
            .join(User, User.id == ApiKey.user_id)
            .join(Tenant, Tenant.id == ApiKey.tenant_id)
            .where(ApiKey.prefix == prefix)
        )
    ).one_or_none()
    if found is None or not same_digest(credential, found[0].key_hash):
        return None
    return KeyLookup(*found)


async def touch(session: AsyncSession, key: ApiKey, every_seconds: int) -> None:
    """Record the key's use when the last record is older than ``every_seconds`` (cheap otherwise)."""
    now = datetime.now(UTC)
    if key.last_used_at is not None and now - key.last_used_at < timedelta(seconds=every_seconds):
        return
    await session.execute(
        sa.update(ApiKey)
        .where(
            ApiKey.id == key.id,
            sa.or_(
                ApiKey.last_used_at.is_(None),
                ApiKey.last_used_at < sa.func.now() - sa.text(f"interval '{int(every_seconds)} seconds'"),
            ),
        )
        .values(last_used_at=sa.func.now())
    )


async def user_keys(session: AsyncSession, owner: User) -> list[ApiKey]:
    """Every key of ``owner``, newest first (revoked and expired ones too, marked as such)."""
    result = await session.scalars(
        sa.select(ApiKey).where(ApiKey.user_id == owner.id).order_by(ApiKey.created_at.desc(), ApiKey.id)
    )
    return list(result)


async def owned_key(session: AsyncSession, owner: User, key_id: uuid.UUID) -> ApiKey:
    key = await session.scalar(
        sa.select(ApiKey).where(ApiKey.id == key_id, ApiKey.user_id == owner.id).with_for_update()
    )
    if key is None:
        raise NotFoundError(f"API key {key_id} does not exist")
    return key
