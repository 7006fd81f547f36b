"""Tenants, for the platform operator (``/v1/admin/tenants``; an admin key of the operator tenant): list,
show with counts, create, suspend, resume and delete after confirmation. See docs/admin.md::

    from opentier.client.admin import tenants

    created = client.send(tenants.create_tenant("acme"))
    client.send(tenants.suspend_tenant(created.id))
    client.send(tenants.delete_tenant(created.id, confirm="acme"))
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from opentier.client.calls import Call, _model, _page, _segment

PATH = "/v1/admin/tenants"


class Tenant(BaseModel):
    id: str
    name: str
    #: ``active``, ``suspended`` or ``deleting`` (a deletion the host has not finished).
    status: str
    created_at: datetime
    users: int


class TenantPage(BaseModel):
    tenants: list[Tenant]
    next_page_token: str | None = None


class TenantData(BaseModel):
    """What the intelligence host holds for a tenant."""

    collections: int
    documents: int
    chunks: int
    conversations: int
    messages: int
    ingestion_jobs: int


class TenantDetail(Tenant):
    api_keys: int
    usage_records: int
    #: None when the host did not answer (``data_error`` says why).
    data: TenantData | None = None
    data_error: str | None = None

    def counts(self) -> dict[str, int]:
        """Everything a deletion would remove, by kind (the host's part only when it answered)."""
        found = {"users": self.users, "api_keys": self.api_keys, "usage_records": self.usage_records}
        if self.data is not None:
            found |= self.data.model_dump()
        return found


class TenantDeleted(BaseModel):
    id: str
    name: str
    deleted: dict[str, int]


def list_tenants(
    status: str | None = None, page_size: int | None = None, page_token: str | None = None
) -> Call[TenantPage]:
    return Call("GET", PATH, _model(TenantPage), params=_page(page_size, page_token, status=status))


def get_tenant(tenant_id: str) -> Call[TenantDetail]:
    return Call("GET", f"{PATH}/{_segment(tenant_id)}", _model(TenantDetail))


def create_tenant(name: str) -> Call[Tenant]:
    return Call("POST", PATH, _model(Tenant), json={"name": name})


def set_status(tenant_id: str, status: str) -> Call[Tenant]:
    return Call("PATCH", f"{PATH}/{_segment(tenant_id)}", _model(Tenant), json={"status": status})


def suspend_tenant(tenant_id: str) -> Call[Tenant]:
    """Refuse the tenant's sign-ins, tokens and keys, and end its open streams, until resumed."""
    return set_status(tenant_id, "suspended")


def resume_tenant(tenant_id: str) -> Call[Tenant]:
    return set_status(tenant_id, "active")


def delete_tenant(tenant_id: str, confirm: str | None) -> Call[TenantDeleted]:
    """Delete the tenant and all it owns; ``confirm`` must be its exact name, else the gateway answers
    409 ``confirmation_required`` (a :class:`~opentier.client.errors.ConflictError`) and deletes nothing."""
    params = {"confirm": confirm} if confirm is not None else {}
    return Call("DELETE", f"{PATH}/{_segment(tenant_id)}", _model(TenantDeleted), params=params)
