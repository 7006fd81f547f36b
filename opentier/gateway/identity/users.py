"""Users of a tenant: create, find, list, change role or state, delete — always scoped by tenant.

A user of another tenant is "not found", never "forbidden", so ids from elsewhere reveal nothing.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from opentier.db.models.gateway import AuthSession, User
from opentier.errors import AlreadyExistsError, InvalidRequestError, NotFoundError
from opentier.gateway.identity.paging import Page, decode_token, encode_token

_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}$")
MAX_PAGE_SIZE = 200
UNIQUE_VIOLATION = "23505"


def normalize_email(email: str) -> str:
    """``email`` without surrounding blanks; invalid_request when it is not an address."""
    email = email.strip()
    if len(email) > 320 or not _EMAIL.match(email):
        raise InvalidRequestError("email: not a valid email address")
    return email


def parse_id(value: str, what: str) -> uuid.UUID:
    """A UUID from a path; a malformed one is simply not found (it names nothing)."""
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFoundError(f"{what} {value!r} does not exist") from None


async def add_user(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    email: str,
    password_hash: str | None,
    display_name: str,
    role: str,
) -> User:
    """Insert a user; already_exists when the tenant has that email (in any case)."""
    user = User(
        tenant_id=tenant_id,
        email=normalize_email(email),
        password_hash=password_hash,
        display_name=display_name.strip(),
        role=role,
    )
    session.add(user)
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError as err:
        if getattr(err.orig, "sqlstate", None) == UNIQUE_VIOLATION:
            raise AlreadyExistsError(f"a user with email {user.email!r} exists in this tenant") from None
        raise
    await session.refresh(user)
    return user


async def get_user(session: AsyncSession, tenant_id: uuid.UUID, user_id: uuid.UUID) -> User:
    """The user ``user_id`` of ``tenant_id``; not_found otherwise."""
    user = await session.scalar(sa.select(User).where(User.id == user_id, User.tenant_id == tenant_id))
    if user is None:
        raise NotFoundError(f"user {user_id} does not exist")
    return user


async def find_by_email(session: AsyncSession, tenant_id: uuid.UUID, email: str) -> User | None:
    return await session.scalar(
        sa.select(User).where(User.tenant_id == tenant_id, sa.func.lower(User.email) == email.strip().lower())
    )


async def list_users(
    session: AsyncSession, tenant_id: uuid.UUID, page_size: int, page_token: str = ""
) -> Page[User]:
    """One page of the tenant's users, oldest first."""
    size = max(1, min(page_size, MAX_PAGE_SIZE))
    query = sa.select(User).where(User.tenant_id == tenant_id)
    if page_token:
        created, last_id = decode_token(page_token, 2)
        try:
            key = (datetime.fromisoformat(created), uuid.UUID(last_id))
        except ValueError:
            raise InvalidRequestError("page_token: not a token this server issued") from None
        query = query.where(sa.tuple_(User.created_at, User.id) > sa.tuple_(*key))
    rows = list(await session.scalars(query.order_by(User.created_at, User.id).limit(size + 1)))
    next_token = ""
    if len(rows) > size:
        rows = rows[:size]
        last = rows[-1]
        next_token = encode_token(last.created_at.isoformat(), str(last.id))
    return Page(rows, next_token)


async def revoke_sessions(session: AsyncSession, user_id: uuid.UUID, reason: str) -> None:
    """End every live sign-in of the user (its access and refresh tokens stop working)."""
    await session.execute(
        sa.update(AuthSession)
        .where(AuthSession.user_id == user_id, AuthSession.revoked_at.is_(None))
        .values(revoked_at=sa.func.now(), revoked_reason=reason)
    )


async def count_active_admins(session: AsyncSession, tenant_id: uuid.UUID) -> int:
    """Admins of the tenant who can sign in: enabled, with a password (an invitation not yet
    accepted does not count, so the last real admin cannot be demoted in favour of one)."""
    found = await session.scalar(
        sa.select(sa.func.count())
        .select_from(User)
        .where(
            User.tenant_id == tenant_id,
            User.role == "admin",
            User.disabled.is_(False),
            User.password_hash.is_not(None),
        )
    )
    return int(found or 0)
