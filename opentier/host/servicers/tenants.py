"""TenantData: count or purge all of one tenant's data, for the gateway's platform operator.

Like every call, these act on ``caller.tenant_id`` only; being destructive across a whole tenant, they
are refused unless the gateway granted the call the ``admin`` scope (it does so for its operator only).
"""

from __future__ import annotations

import grpc.aio

from opentier.engine.tenancy import TenantCounts, TenantData
from opentier.errors import PermissionDeniedError
from opentier.generated.intelligence.v1 import common_pb2, tenants_pb2, tenants_pb2_grpc
from opentier.host.servicers.convert import tenant_of

ADMIN_SCOPE = "admin"


def admin_tenant_of(caller: common_pb2.Caller) -> str:
    """The caller's tenant, when the caller holds the ``admin`` scope; permission_denied otherwise."""
    tenant = tenant_of(caller)
    if ADMIN_SCOPE not in caller.scopes:
        raise PermissionDeniedError("tenant data calls need the admin scope in caller.scopes")
    return tenant


def counts_pb(counts: TenantCounts) -> tenants_pb2.TenantDataCounts:
    return tenants_pb2.TenantDataCounts(
        collections=counts.collections,
        documents=counts.documents,
        chunks=counts.chunks,
        conversations=counts.conversations,
        messages=counts.messages,
        ingestion_jobs=counts.ingestion_jobs,
    )


class TenantDataServicer(tenants_pb2_grpc.TenantDataServicer):
    def __init__(self, tenants: TenantData) -> None:
        self._tenants = tenants

    async def DescribeTenantData(
        self, request: tenants_pb2.TenantDataRequest, context: grpc.aio.ServicerContext
    ) -> tenants_pb2.TenantDataCounts:
        return counts_pb(await self._tenants.counts(admin_tenant_of(request.caller)))

    async def PurgeTenantData(
        self, request: tenants_pb2.TenantDataRequest, context: grpc.aio.ServicerContext
    ) -> tenants_pb2.TenantDataCounts:
        return counts_pb(await self._tenants.purge(admin_tenant_of(request.caller)))
