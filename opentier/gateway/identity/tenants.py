"""Tenants by name: looked up for sign-in, created for the first admin or an open sign-up."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from opentier.db.models.gateway import Tenant


async def find_tenant(session: AsyncSession, name: str) -> Tenant | None:
    """The tenant called ``name``, if any."""
    result = await session.scalars(sa.select(Tenant).where(Tenant.name == name))
    return result.one_or_none()


async def ensure_tenant(session: AsyncSession, name: str) -> Tenant:
    """The tenant called ``name``, created when missing (safe when two callers race)."""
    await session.execute(insert(Tenant).values(name=name).on_conflict_do_nothing(index_elements=["name"]))
    tenant = await find_tenant(session, name)
    assert tenant is not None
    return tenant
