"""Helpers of the gateway tests: reading the audit log and the identity tables of a tenant."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine


async def audit_actions(engine: AsyncEngine, tenant: str) -> list[tuple[str, str | None, dict[str, Any]]]:
    """(action, target, details) of the tenant's audit rows, oldest first."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT a.action, a.target, a.details FROM gateway.audit_log a "
                "JOIN gateway.tenants t ON t.id = a.tenant_id WHERE t.name = :tenant ORDER BY a.id"
            ),
            {"tenant": tenant},
        )
        return [(row[0], row[1], row[2]) for row in rows]


async def scalar(engine: AsyncEngine, sql: str, **params: Any) -> Any:
    async with engine.connect() as conn:
        return await conn.scalar(text(sql), params)


async def execute(engine: AsyncEngine, sql: str, **params: Any) -> None:
    async with engine.begin() as conn:
        await conn.execute(text(sql), params)
