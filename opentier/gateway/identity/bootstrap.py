"""The first admin of a tenant, made without the API (nobody can sign in to create it yet).

``opentier gateway create-admin`` and ``opentier up`` call :func:`create_admin`; it creates the tenant
when missing, refuses an email already taken, and writes an audit row like any other user creation.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from opentier.config import Settings
from opentier.db.engine import create_engine
from opentier.db.models.gateway import Tenant, User
from opentier.gateway.identity import audit
from opentier.gateway.identity.audit import Actor, Origin
from opentier.gateway.identity.passwords import Passwords
from opentier.gateway.identity.tenants import ensure_tenant
from opentier.gateway.identity.users import add_user


@dataclass(frozen=True, slots=True)
class CreatedAdmin:
    tenant_id: str
    tenant: str
    user_id: str
    email: str


async def create_admin(
    settings: Settings, *, email: str, password: str, tenant: str | None = None, display_name: str = ""
) -> CreatedAdmin:
    """Create an admin of ``tenant`` (default ``auth.default_tenant``); the schema must be migrated."""
    tenant_name = tenant or settings.auth.default_tenant
    password_hash = await Passwords(settings.auth).hash(password)
    engine = create_engine(settings, pool_size=1, max_overflow=0)
    try:
        sessions = async_sessionmaker(engine, expire_on_commit=False)
        async with sessions() as session, session.begin():
            row = await ensure_tenant(session, tenant_name)
            user = await add_user(
                session,
                tenant_id=row.id,
                email=email,
                password_hash=password_hash,
                display_name=display_name,
                role="admin",
            )
            audit.record(
                session,
                audit.USER_CREATED,
                actor=Actor(tenant_id=row.id),
                origin=Origin(address="cli"),
                target=f"user:{user.id}",
                details={"role": "admin", "via": "create-admin"},
            )
            return CreatedAdmin(str(row.id), row.name, str(user.id), user.email)
    finally:
        await engine.dispose()


async def has_admin(settings: Settings, tenant: str | None = None) -> bool:
    """Whether ``tenant`` exists and has an enabled admin (``opentier up`` asks before creating one)."""
    engine = create_engine(settings, pool_size=1, max_overflow=0)
    try:
        async with AsyncSession(engine) as session:
            found = await session.scalar(
                sa.select(sa.func.count())
                .select_from(User)
                .join(Tenant, Tenant.id == User.tenant_id)
                .where(
                    Tenant.name == (tenant or settings.auth.default_tenant),
                    User.role == "admin",
                    User.disabled.is_(False),
                )
            )
            return bool(found)
    finally:
        await engine.dispose()
