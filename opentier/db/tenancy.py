"""Tenancy enforced by PostgreSQL: the tenant each transaction of the host acts for.

Every table of schema ``intelligence`` that has ``tenant_id`` has row-level security with a policy
(migration 0007): a row is visible and writable only when its ``tenant_id`` equals the
transaction-local setting ``opentier.tenant_id``, or when that setting is :data:`INTERNAL` (the host's
own cross-tenant work: ingestion workers, recovery at start-up, evaluation). Unset, nothing is visible.

The setting comes from a context variable: the gRPC servicers enter :func:`tenant_scope` with the
caller's tenant, the ingestion workers and start-up enter :func:`internal_scope`. An engine made with
``create_engine(settings, tenancy=True)`` (the host's) runs one statement at the start of every
transaction, ``SELECT set_config('opentier.tenant_id', $1, true)``, so no query has to remember it.

A superuser (the embedded default connects as ``postgres``) and a role with BYPASSRLS are exempt from
row-level security, ``FORCE`` or not. On such a connection the same statement also switches the
transaction to the unprivileged role :data:`TENANT_ROLE`, except in the internal scope.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

#: The transaction-local setting the policies read.
SETTING = "opentier.tenant_id"
#: Its value for the host's cross-tenant work; never a tenant id (the gateway makes UUIDs).
INTERNAL = "*"
#: The role a privileged connection takes for tenant work (created by migration 0007, no login).
TENANT_ROLE = "opentier_tenant"

_PRIVILEGED = "opentier.privileged"
_SET_TENANT = f"SELECT set_config('{SETTING}', $1, true)"
_SET_TENANT_AND_ROLE = f"SELECT set_config('{SETTING}', $1, true), set_config('role', '{TENANT_ROLE}', true)"
_IS_PRIVILEGED = "SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user"

_scope: contextvars.ContextVar[str] = contextvars.ContextVar("opentier_tenant_scope", default="")


def current_scope() -> str:
    """The tenant this task acts for, :data:`INTERNAL`, or ``""`` (none: no rows at all)."""
    return _scope.get()


def enter_tenant(tenant_id: str) -> None:
    """Act for ``tenant_id`` until the current task ends (a gRPC call runs in a task of its own)."""
    _scope.set(_checked(tenant_id))


@contextlib.contextmanager
def tenant_scope(tenant_id: str) -> Iterator[None]:
    """Act for ``tenant_id`` inside the block: transactions begun there see its rows only."""
    token = _scope.set(_checked(tenant_id))
    try:
        yield
    finally:
        _scope.reset(token)


@contextlib.contextmanager
def internal_scope() -> Iterator[None]:
    """Act for the host itself inside the block (work on any tenant's rows); tasks started there too."""
    token = _scope.set(INTERNAL)
    try:
        yield
    finally:
        _scope.reset(token)


async def restrict(conn: AsyncConnection, tenant_id: str) -> None:
    """Narrow the transaction open on ``conn`` to ``tenant_id`` from here on (e.g. after an internal
    claim of a tenant's work)."""
    tenant = _checked(tenant_id)
    privileged = (await conn.get_raw_connection()).info.get(_PRIVILEGED, False)
    await conn.exec_driver_sql(_SET_TENANT_AND_ROLE if privileged else _SET_TENANT, (tenant,))


def enforce_tenancy(engine: AsyncEngine) -> None:
    """Make every transaction of ``engine`` carry the current scope (see the module docstring)."""
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "connect")
    def _connected(dbapi_connection: Any, record: Any) -> None:
        privileged = dbapi_connection.run_async(lambda raw: raw.fetchval(_IS_PRIVILEGED))
        record.info[_PRIVILEGED] = bool(privileged)

    @event.listens_for(sync_engine, "begin")
    def _begun(conn: sa.Connection) -> None:
        scope = _scope.get()
        fairy = conn.connection
        statement = _SET_TENANT_AND_ROLE if scope != INTERNAL and fairy.info.get(_PRIVILEGED) else _SET_TENANT
        # The raw cursor: a statement through ``conn`` here would begin the transaction again.
        cursor = fairy.cursor()
        try:
            cursor.execute(statement, (scope,))
        finally:
            cursor.close()


def _checked(tenant_id: str) -> str:
    tenant = tenant_id.strip()
    if not tenant or tenant == INTERNAL:
        raise ValueError(f"not a tenant id: {tenant_id!r}")
    return tenant
