"""Tenant administration for the platform operator: list, create, suspend, resume and delete tenants.

Only the gateway's side is here (tenant rows, their users and keys, the usage ledger, the audit log);
the host's data of a tenant is counted and purged over gRPC by the route. Every change is audited under
the operator (its own tenant's log), and the operator tenant itself can be neither suspended nor
deleted. Deleting is two steps: :meth:`TenantAdmin.start_deletion` marks the tenant ``deleting``
(refused at sign-in and on every request, like a suspended one) and, once the host's data is gone,
:meth:`TenantAdmin.finish_deletion` removes the row, with users, sessions, keys, mail tokens and limit
overrides by cascade, and the tenant's usage rows; the audit log keeps every event.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from opentier.db.models.gateway import ApiKey, Tenant, TenantStatus, TokenUsage, User
from opentier.errors import AlreadyExistsError, InvalidRequestError, NotFoundError
from opentier.gateway.identity import audit
from opentier.gateway.identity.admin import actor_of
from opentier.gateway.identity.audit import Origin
from opentier.gateway.identity.paging import Page, decode_token, encode_token
from opentier.gateway.principal import Principal

NAME_MAX = 200


@dataclass(frozen=True, slots=True)
class TenantRow:
    """A tenant as the operator sees it in a list."""

    id: uuid.UUID
    name: str
    status: str
    created_at: datetime
    users: int


@dataclass(frozen=True, slots=True)
class GatewayCounts:
    """What the gateway holds for a tenant."""

    users: int
    api_keys: int
    usage_records: int

    def as_dict(self) -> dict[str, int]:
        return {"users": self.users, "api_keys": self.api_keys, "usage_records": self.usage_records}


def _parse_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFoundError(f"tenant {value!r} does not exist") from None


def check_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > NAME_MAX:
        raise InvalidRequestError(f"a tenant name must have 1 to {NAME_MAX} characters")
    return name


def _users_count() -> sa.ScalarSelect[int]:
    return sa.select(sa.func.count()).where(User.tenant_id == Tenant.id).scalar_subquery()


class TenantAdmin:
    """The operator's tenant operations over the gateway's database; routes check the operator first."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], operator_tenant: str) -> None:
        self._sessions = sessions
        self.operator_tenant = operator_tenant

    async def list(self, status: str | None, page_size: int, page_token: str) -> Page[TenantRow]:
        """Tenants oldest first, with their number of users; ``status`` filters."""
        statement = sa.select(Tenant, _users_count().label("users"))
        if status is not None:
            statement = statement.where(Tenant.status == status)
        if page_token:
            at, tenant_id = decode_token(page_token, 2)
            try:
                after = (datetime.fromisoformat(at), uuid.UUID(tenant_id))
            except ValueError:
                raise InvalidRequestError("page_token: not a token this server issued") from None
            statement = statement.where(sa.tuple_(Tenant.created_at, Tenant.id) > after)
        statement = statement.order_by(Tenant.created_at, Tenant.id).limit(page_size + 1)
        async with self._sessions() as session:
            rows = (await session.execute(statement)).all()
        items = [
            TenantRow(tenant.id, tenant.name, tenant.status, tenant.created_at, int(users))
            for tenant, users in rows[:page_size]
        ]
        more = len(rows) > page_size
        token = encode_token(items[-1].created_at.isoformat(), str(items[-1].id)) if more else ""
        return Page(items, token)

    async def get(self, tenant_id: str) -> Tenant:
        async with self._sessions() as session:
            return await self._get(session, tenant_id)

    async def counts(self, tenant_id: uuid.UUID) -> GatewayCounts:
        async with self._sessions() as session:
            return await _gateway_counts(session, tenant_id)

    async def create(self, principal: Principal, name: str, origin: Origin) -> Tenant:
        """A new active tenant without users (invite its first admin next); 409 when the name is taken."""
        name = check_name(name)
        async with self._sessions() as session:
            try:
                async with session.begin():
                    tenant = Tenant(name=name)
                    session.add(tenant)
                    await session.flush()
                    await session.refresh(tenant)
                    audit.record(
                        session,
                        audit.TENANT_CREATED,
                        actor=actor_of(principal),
                        origin=origin,
                        target=_target(tenant),
                        details={"name": name},
                    )
            except IntegrityError:
                raise AlreadyExistsError(f"a tenant named {name!r} exists already") from None
            return tenant

    async def set_status(self, principal: Principal, tenant_id: str, status: str, origin: Origin) -> Tenant:
        """Suspend (``suspended``) or resume (``active``) a tenant; audited when it changes."""
        if status not in (TenantStatus.ACTIVE, TenantStatus.SUSPENDED):
            raise InvalidRequestError("status must be `active` or `suspended`")
        async with self._sessions() as session, session.begin():
            tenant = await self._get(session, tenant_id, lock=True)
            self._refuse_operator(tenant, "suspended")
            if tenant.status == TenantStatus.DELETING:
                raise InvalidRequestError(
                    f"tenant {tenant.name!r} is being deleted; delete it again to finish the deletion"
                )
            if tenant.status != status:
                tenant.status = status
                action = audit.TENANT_SUSPENDED if status == TenantStatus.SUSPENDED else audit.TENANT_RESUMED
                audit.record(
                    session,
                    action,
                    actor=actor_of(principal),
                    origin=origin,
                    target=_target(tenant),
                    details={"name": tenant.name},
                )
            return tenant

    def check_deletable(self, tenant: Tenant) -> None:
        self._refuse_operator(tenant, "deleted")

    async def start_deletion(self, tenant_id: uuid.UUID) -> Tenant:
        """Mark the tenant ``deleting``: from now on it is refused everywhere, and cannot be resumed."""
        async with self._sessions() as session, session.begin():
            tenant = await self._get(session, str(tenant_id), lock=True)
            self._refuse_operator(tenant, "deleted")
            tenant.status = TenantStatus.DELETING
            return tenant

    async def finish_deletion(
        self, principal: Principal, tenant_id: uuid.UUID, host_counts: dict[str, int], origin: Origin
    ) -> dict[str, Any]:
        """Delete the tenant's gateway rows once its host data is gone; audit what was deleted."""
        async with self._sessions() as session, session.begin():
            tenant = await self._get(session, str(tenant_id), lock=True)
            self._refuse_operator(tenant, "deleted")
            counts = await _gateway_counts(session, tenant.id)
            await session.execute(sa.delete(TokenUsage).where(TokenUsage.tenant_id == tenant.id))
            await session.execute(sa.delete(Tenant).where(Tenant.id == tenant.id))
            deleted: dict[str, Any] = {**counts.as_dict(), **host_counts}
            audit.record(
                session,
                audit.TENANT_DELETED,
                actor=actor_of(principal),
                origin=origin,
                target=_target(tenant),
                details={"name": tenant.name, "deleted": deleted},
            )
            return deleted

    async def _get(self, session: AsyncSession, tenant_id: str, *, lock: bool = False) -> Tenant:
        statement = sa.select(Tenant).where(Tenant.id == _parse_id(tenant_id))
        if lock:
            statement = statement.with_for_update()
        tenant = (await session.scalars(statement)).one_or_none()
        if tenant is None:
            raise NotFoundError(f"tenant {tenant_id} does not exist")
        return tenant

    def _refuse_operator(self, tenant: Tenant, what: str) -> None:
        if tenant.name == self.operator_tenant:
            raise InvalidRequestError(
                f"{tenant.name!r} is the operator tenant (auth.operator_tenant): it cannot be {what}"
            )


def _target(tenant: Tenant) -> str:
    return f"tenant:{tenant.id}"


async def _gateway_counts(session: AsyncSession, tenant_id: uuid.UUID) -> GatewayCounts:
    async def count(model: type[Any], column: Any) -> int:
        found = await session.scalar(sa.select(sa.func.count()).select_from(model).where(column == tenant_id))
        return int(found or 0)

    return GatewayCounts(
        users=await count(User, User.tenant_id),
        api_keys=await count(ApiKey, ApiKey.tenant_id),
        usage_records=await count(TokenUsage, TokenUsage.tenant_id),
    )
