"""``/v1/admin/tenants``: the platform operator's tenant operations (docs/admin.md).

Every route needs the ``admin`` scope *and* an admin of the operator tenant (``auth.operator_tenant``);
another tenant's admin gets 403. Suspending a tenant ends its open chat streams at once (``error`` event
``tenant_suspended``) and refuses its sign-ins, tokens and keys until it is resumed. Deleting needs the
tenant's name as ``confirm``: without it the answer is 409 ``confirmation_required`` listing what would be
deleted; with it the tenant goes ``deleting``, its streams end (``tenant_deleted``), the host purges its
data, then its gateway rows go. When the host cannot be reached the answer is 503, the tenant stays
``deleting``, and the same DELETE again resumes the deletion.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import Literal, cast

from pydantic import BaseModel, Field
from quart import Blueprint
from quart_schema import tag, validate_querystring, validate_request, validate_response
from sqlalchemy.ext.asyncio import async_sessionmaker

from opentier.db.models.gateway import Tenant
from opentier.errors import ConfirmationRequiredError, DatabaseError, OpenTierError
from opentier.gateway.chat.revocation import TENANT_DELETED, TENANT_SUSPENDED, Ending, open_streams
from opentier.gateway.errors import documented_errors
from opentier.gateway.identity.tenant_admin import NAME_MAX, GatewayCounts, TenantAdmin, TenantRow
from opentier.gateway.origin import request_origin
from opentier.gateway.principal import Principal, current_principal, require, require_operator
from opentier.gateway.request_id import current_request_id
from opentier.gateway.routes.context import host_client
from opentier.gateway.schemas.common import PageQuery
from opentier.gateway.state import gateway_state
from opentier.generated.intelligence.v1 import tenants_pb2

blueprint = Blueprint("admin_tenants", __name__, url_prefix="/v1/admin/tenants")
TAGS = ["Admin"]
DEFAULT_PAGE_SIZE = 50

log = logging.getLogger(__name__)

Status = Literal["active", "suspended", "deleting"]


def blueprints() -> list[Blueprint]:
    return [blueprint]


# -- shapes -----------------------------------------------------------------------------------------


class ListTenantsQuery(PageQuery):
    status: Status | None = Field(default=None, description="Only tenants in this status.")


class AdminTenant(BaseModel):
    id: str
    name: str
    status: Status = Field(description="`active`, `suspended`, or `deleting` (a deletion not finished).")
    created_at: datetime
    users: int = Field(description="Number of users of the tenant.")


class TenantList(BaseModel):
    tenants: list[AdminTenant]
    next_page_token: str | None = Field(description="Pass as `page_token` for the next page; null: last.")


class CreateTenantRequest(BaseModel):
    name: str = Field(min_length=1, max_length=NAME_MAX, description="Unique name, used to sign in.")


class UpdateTenantRequest(BaseModel):
    status: Literal["active", "suspended"] = Field(
        description="`suspended` refuses the tenant's sign-ins, tokens and keys and ends its open streams; "
        "`active` resumes it."
    )


class DeleteTenantQuery(BaseModel):
    confirm: str | None = Field(
        default=None, max_length=NAME_MAX, description="The tenant's exact name, to confirm the deletion."
    )


class TenantDataOut(BaseModel):
    """What the intelligence host holds for the tenant."""

    collections: int
    documents: int
    chunks: int
    conversations: int
    messages: int
    ingestion_jobs: int

    @classmethod
    def from_pb(cls, counts: tenants_pb2.TenantDataCounts) -> TenantDataOut:
        return cls(
            collections=counts.collections,
            documents=counts.documents,
            chunks=counts.chunks,
            conversations=counts.conversations,
            messages=counts.messages,
            ingestion_jobs=counts.ingestion_jobs,
        )


class TenantDetail(AdminTenant):
    api_keys: int = Field(description="API keys of the tenant's users, revoked ones included.")
    usage_records: int = Field(description="Rows of the token usage ledger charged to the tenant.")
    data: TenantDataOut | None = Field(description="The host's counts; null when the host did not answer.")
    data_error: str | None = Field(default=None, description="Why `data` is null.")


class TenantDeleted(BaseModel):
    id: str
    name: str
    deleted: dict[str, int] = Field(description="How many of each kind of object were deleted.")


# -- helpers ----------------------------------------------------------------------------------------


def tenant_admin() -> TenantAdmin:
    state = gateway_state()
    if state.engine is None:
        raise DatabaseError("the gateway's database is not open")
    sessions = async_sessionmaker(state.engine, expire_on_commit=False)
    return TenantAdmin(sessions, state.settings.auth.operator_tenant_name)


def operator() -> Principal:
    principal = current_principal()
    require_operator(principal)
    return principal


def _out(tenant: Tenant | TenantRow, users: int) -> AdminTenant:
    return AdminTenant(
        id=str(tenant.id),
        name=tenant.name,
        status=cast(Status, tenant.status),
        created_at=tenant.created_at,
        users=users,
    )


async def _host_counts(tenant_id: uuid.UUID) -> TenantDataOut:
    counts = await host_client().tenant_data(str(tenant_id), current_request_id() or "")
    return TenantDataOut.from_pb(counts)


async def _would_delete(tenant: Tenant, gateway: GatewayCounts) -> dict[str, object]:
    """What a deletion would remove; without the host's part (and with ``data_error``) when it is down."""
    details: dict[str, object] = {"tenant": {"id": str(tenant.id), "name": tenant.name}}
    would: dict[str, int] = gateway.as_dict()
    try:
        would |= (await _host_counts(tenant.id)).model_dump()
    except OpenTierError as err:
        details["data_error"] = f"{err.code}: {err}"
    details["would_delete"] = would
    return details


# -- routes -----------------------------------------------------------------------------------------


@blueprint.get("")
@require("admin")
@tag(TAGS)
@documented_errors(400, 401, 403)
@validate_querystring(ListTenantsQuery)
@validate_response(TenantList)
async def list_tenants(query_args: ListTenantsQuery) -> TenantList:
    """Every tenant, oldest first, with its status and number of users (operator only)."""
    operator()
    page = await tenant_admin().list(
        query_args.status, query_args.page_size or DEFAULT_PAGE_SIZE, query_args.page_token or ""
    )
    return TenantList(
        tenants=[_out(row, row.users) for row in page.items],
        next_page_token=page.next_token or None,
    )


@blueprint.post("")
@require("admin")
@tag(TAGS)
@documented_errors(400, 401, 403, 409)
@validate_request(CreateTenantRequest)
@validate_response(AdminTenant, 201)
async def create_tenant(data: CreateTenantRequest) -> tuple[AdminTenant, int]:
    """Create an empty, active tenant (operator only); invite its first admin next. 409: the name exists."""
    principal = operator()
    tenant = await tenant_admin().create(principal, data.name, request_origin())
    return _out(tenant, 0), 201


@blueprint.get("/<tenant_id>")
@require("admin")
@tag(TAGS)
@documented_errors(401, 403, 404)
@validate_response(TenantDetail)
async def get_tenant(tenant_id: str) -> TenantDetail:
    """A tenant with its counts: users and API keys, and the host's collections, documents, chunks,
    conversations, messages and ingestion jobs (`data` is null when the host does not answer)."""
    operator()
    admin = tenant_admin()
    tenant = await admin.get(tenant_id)
    counts = await admin.counts(tenant.id)
    data: TenantDataOut | None = None
    problem: str | None = None
    try:
        data = await _host_counts(tenant.id)
    except OpenTierError as err:
        log.warning("tenant %s: the host's counts could not be read: %s", tenant.id, err)
        problem = f"{err.code}: {err}"
    base = _out(tenant, counts.users)
    return TenantDetail(
        **base.model_dump(),
        api_keys=counts.api_keys,
        usage_records=counts.usage_records,
        data=data,
        data_error=problem,
    )


@blueprint.patch("/<tenant_id>")
@require("admin")
@tag(TAGS)
@documented_errors(400, 401, 403, 404)
@validate_request(UpdateTenantRequest)
@validate_response(AdminTenant)
async def update_tenant(tenant_id: str, data: UpdateTenantRequest) -> AdminTenant:
    """Suspend or resume a tenant (operator only; never the operator tenant).

    Suspending refuses the tenant's sign-ins, access tokens and API keys (403) and ends its open chat
    streams at once with an `error` event `tenant_suspended`.
    """
    principal = operator()
    admin = tenant_admin()
    tenant = await admin.set_status(principal, tenant_id, data.status, request_origin())
    if data.status == "suspended":
        ended = open_streams().end(
            Ending(TENANT_SUSPENDED, "your tenant was suspended by the operator"), tenant_id=str(tenant.id)
        )
        if ended:
            log.info("tenant %s suspended: %d open streams ended", tenant.id, ended)
    counts = await admin.counts(tenant.id)
    return _out(tenant, counts.users)


@blueprint.delete("/<tenant_id>")
@require("admin")
@tag(TAGS)
@documented_errors(400, 401, 403, 404, 409, 503)
@validate_querystring(DeleteTenantQuery)
@validate_response(TenantDeleted)
async def delete_tenant(tenant_id: str, query_args: DeleteTenantQuery) -> TenantDeleted:
    """Delete a tenant and everything it owns (operator only; never the operator tenant).

    Without `confirm` set to the tenant's exact name: 409 `confirmation_required`, whose `details` list
    what would be deleted (`data_error` instead of the host's counts when the host does not answer).
    With it: the tenant is marked `deleting` (refused everywhere), its open streams end
    (`tenant_deleted`), the host deletes its collections, documents, chunks, ingestion jobs,
    conversations and messages, then its users, sessions, API keys, mail tokens, limit overrides and
    usage records go. The audit log is kept. 503 when the host does not answer: the tenant stays
    `deleting`; the same request again finishes the deletion.
    """
    principal = operator()
    admin = tenant_admin()
    tenant = await admin.get(tenant_id)
    admin.check_deletable(tenant)
    if query_args.confirm != tenant.name:
        details = await _would_delete(tenant, await admin.counts(tenant.id))
        raise ConfirmationRequiredError(
            f"deleting tenant {tenant.name!r} removes everything it owns: repeat the request with "
            f"confirm={tenant.name} to go ahead",
            details=details,
        )
    tenant = await admin.start_deletion(tenant.id)
    open_streams().end(
        Ending(TENANT_DELETED, "your tenant was deleted by the operator"), tenant_id=str(tenant.id)
    )
    purged = await host_client().purge_tenant_data(str(tenant.id), current_request_id() or "")
    deleted = await admin.finish_deletion(
        principal, tenant.id, TenantDataOut.from_pb(purged).model_dump(), request_origin()
    )
    log.info("tenant %s (%s) deleted: %s", tenant.id, tenant.name, deleted)
    return TenantDeleted(id=str(tenant.id), name=tenant.name, deleted=deleted)
