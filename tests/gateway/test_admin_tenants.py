"""Tenant administration by the platform operator, through the real gateway under Hypercorn, the real host
and PostgreSQL: create, list, suspend and resume (sign-ins, tokens and keys refused meanwhile, open streams
ended), delete after confirmation (checked by SQL: nothing of the tenant left, nothing of another touched),
a deletion the host could not finish resumed, and nobody but the operator's admins let in."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from opentier.gateway.identity.bootstrap import create_admin
from tests.gateway.conftest import PASSWORD
from tests.gateway.helpers import audit_actions
from tests.gateway.streaming import (  # noqa: F401 - fixtures
    ChatGateway,
    ChatUser,
    chat_gateway_fixture,
    chat_settings_fixture,
    host_chat_options_fixture,
    ingest_text,
    limits_options_fixture,
    read_turn,
    receive,
    streaming_host_fixture,
    streaming_options_fixture,
    ws_connect,
)

OPERATOR = "operators"
pytestmark = pytest.mark.auth(operator_tenant=OPERATOR)

TENANTS = "/v1/admin/tenants"
LIFT = "Wings make lift because air flows faster over the curved upper surface. Flaps raise lift."
#: Tables of schema intelligence whose rows belong to a tenant (tenant_id is the gateway's tenant id).
HOST_TABLES = (
    "collections",
    "documents",
    "chunks",
    "ingestion_jobs",
    "ingestion_items",
    "conversations",
    "messages",
    "fulltext_terms",
    "fulltext_totals",
)
GATEWAY_TABLES = ("users", "api_keys", "auth_sessions", "token_usage")


@dataclass
class TenantUser:
    """An admin of a tenant the operator created: its credentials, token and one API key."""

    tenant: str
    tenant_id: str
    email: str
    user: ChatUser


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def sign_in(gateway: ChatGateway, tenant: str, email: str) -> httpx.Response:
    return await gateway.api.post(
        "/v1/auth/login", json={"tenant": tenant, "email": email, "password": PASSWORD}
    )


async def admin_of(gateway: ChatGateway, tenant: str) -> tuple[str, str, dict[str, Any]]:
    """A new admin of ``tenant`` (bootstrapped as `opentier gateway create-admin` does), signed in."""
    email = f"admin-{uuid.uuid4().hex[:8]}@example.org"
    await create_admin(gateway.settings, email=email, password=PASSWORD, tenant=tenant)
    login = await sign_in(gateway, tenant, email)
    assert login.status_code == 200, login.text
    return email, login.json()["access_token"], login.json()["user"]


async def operator(gateway: ChatGateway) -> dict[str, str]:
    """Headers of a new admin of the operator tenant."""
    _email, token, _user = await admin_of(gateway, OPERATOR)
    return bearer(token)


async def new_tenant(gateway: ChatGateway, ops: dict[str, str]) -> TenantUser:
    """A tenant created by the operator, its first admin signed in, with an API key."""
    name = f"tenant-{uuid.uuid4().hex[:10]}"
    created = await gateway.api.post(TENANTS, json={"name": name}, headers=ops)
    assert created.status_code == 201, created.text
    tenant_id = created.json()["id"]
    assert created.json() | {"created_at": None} == {
        "id": tenant_id,
        "name": name,
        "status": "active",
        "users": 0,
        "created_at": None,
    }
    email, token, user = await admin_of(gateway, name)
    key = await gateway.api.post(
        "/v1/keys", json={"name": "work", "scopes": ["read", "ingest", "chat"]}, headers=bearer(token)
    )
    assert key.status_code == 201, key.text
    chat_user = ChatUser(
        name, tenant_id, user["id"], bearer(token), token, key.json()["key"], key.json()["id"]
    )
    return TenantUser(name, tenant_id, email, chat_user)


async def chat_once(gateway: ChatGateway, user: ChatUser, collection_id: str) -> list[dict[str, Any]]:
    async with ws_connect(gateway, key=user.key) as ws:
        assert (await receive(ws))["type"] == "hello"
        await ws.send(
            json.dumps({"type": "start", "message": "Why do wings lift?", "collection_ids": [collection_id]})
        )
        events = await read_turn(ws)
    assert events[-1]["status"] == "complete", events
    return events


async def rows(engine: AsyncEngine, tenant_id: str) -> dict[str, int]:
    """Rows of the tenant in every table that holds its data, by SQL."""
    found: dict[str, int] = {}
    async with engine.connect() as conn:
        for table in HOST_TABLES:
            found[f"intelligence.{table}"] = int(
                await conn.scalar(
                    text(f"SELECT count(*) FROM intelligence.{table} WHERE tenant_id = :t"), {"t": tenant_id}
                )
                or 0
            )
        for table in GATEWAY_TABLES:
            found[f"gateway.{table}"] = int(
                await conn.scalar(
                    text(f"SELECT count(*) FROM gateway.{table} WHERE tenant_id = CAST(:t AS uuid)"),
                    {"t": tenant_id},
                )
                or 0
            )
        found["gateway.tenants"] = int(
            await conn.scalar(
                text("SELECT count(*) FROM gateway.tenants WHERE id = CAST(:t AS uuid)"), {"t": tenant_id}
            )
            or 0
        )
    return found


async def listed(gateway: ChatGateway, ops: dict[str, str], **params: Any) -> dict[str, dict[str, Any]]:
    """Every tenant of the list (all pages), by id."""
    found: dict[str, dict[str, Any]] = {}
    token: str | None = None
    while True:
        query = params | ({"page_token": token} if token else {}) | {"page_size": 50}
        page = await gateway.api.get(TENANTS, params=query, headers=ops)
        assert page.status_code == 200, page.text
        found |= {tenant["id"]: tenant for tenant in page.json()["tenants"]}
        token = page.json()["next_page_token"]
        if not token:
            return found


async def test_the_operator_creates_lists_suspends_and_resumes_a_tenant(
    chat_gateway: ChatGateway, db_engine: AsyncEngine
) -> None:
    api, ops = chat_gateway.api, await operator(chat_gateway)
    acme = await new_tenant(chat_gateway, ops)
    again = await api.post(TENANTS, json={"name": acme.tenant}, headers=ops)
    assert again.status_code == 409 and again.json()["error"]["code"] == "already_exists"

    everyone = await listed(chat_gateway, ops)
    assert everyone[acme.tenant_id] | {"created_at": None} == {
        "id": acme.tenant_id,
        "name": acme.tenant,
        "status": "active",
        "users": 1,
        "created_at": None,
    }
    shown = await api.get(f"{TENANTS}/{acme.tenant_id}", headers=ops)
    assert shown.status_code == 200, shown.text
    assert (shown.json()["users"], shown.json()["api_keys"]) == (1, 1)
    assert shown.json()["data"] == dict.fromkeys(
        ("collections", "documents", "chunks", "conversations", "messages", "ingestion_jobs"), 0
    )

    suspended = await api.patch(f"{TENANTS}/{acme.tenant_id}", json={"status": "suspended"}, headers=ops)
    assert suspended.status_code == 200, suspended.text
    assert suspended.json()["status"] == "suspended"
    assert acme.tenant_id in await listed(chat_gateway, ops, status="suspended")
    assert acme.tenant_id not in await listed(chat_gateway, ops, status="active")
    # Sign-in, the access token issued before and the API key: all refused while suspended.
    refused = [
        await sign_in(chat_gateway, acme.tenant, acme.email),
        await api.get("/v1/collections", headers=acme.user.headers),
        await api.get("/v1/collections", headers=acme.user.key_headers),
    ]
    assert [(r.status_code, r.json()["error"]["code"]) for r in refused] == [(403, "permission_denied")] * 3

    resumed = await api.patch(f"{TENANTS}/{acme.tenant_id}", json={"status": "active"}, headers=ops)
    assert resumed.status_code == 200 and resumed.json()["status"] == "active"
    assert (await sign_in(chat_gateway, acme.tenant, acme.email)).status_code == 200
    assert (await api.get("/v1/collections", headers=acme.user.key_headers)).status_code == 200

    actions = [
        (action, target)
        for action, target, _details in await audit_actions(db_engine, OPERATOR)
        if action.startswith("tenant.") and target == f"tenant:{acme.tenant_id}"
    ]
    assert [action for action, _target in actions] == ["tenant.created", "tenant.suspended", "tenant.resumed"]


async def test_deleting_a_tenant_needs_its_name_and_removes_everything_it_owns_and_nothing_else(
    chat_gateway: ChatGateway, db_engine: AsyncEngine
) -> None:
    api, ops = chat_gateway.api, await operator(chat_gateway)
    doomed, kept = await new_tenant(chat_gateway, ops), await new_tenant(chat_gateway, ops)
    for tenant in (doomed, kept):
        ingested = await ingest_text(chat_gateway, tenant.user, LIFT, filename="lift.txt")
        await chat_once(chat_gateway, tenant.user, ingested.collection_id)
    # The usage ledger is written in the background: wait for both turns' rows.
    async with asyncio.timeout(10):
        while [(await rows(db_engine, t.tenant_id))["gateway.token_usage"] for t in (doomed, kept)] != [1, 1]:
            await asyncio.sleep(0.05)
    before, kept_before = await rows(db_engine, doomed.tenant_id), await rows(db_engine, kept.tenant_id)
    for table in ("collections", "documents", "chunks", "conversations", "messages", "fulltext_terms"):
        assert before[f"intelligence.{table}"] > 0, table
    assert before["gateway.api_keys"] == 1 and before["gateway.token_usage"] == 1

    # The confirmation step: without the name, or with a wrong one, nothing happens and the answer says
    # what would be deleted.
    for params in ({}, {"confirm": kept.tenant}):
        refused = await api.delete(f"{TENANTS}/{doomed.tenant_id}", params=params, headers=ops)
        assert refused.status_code == 409, refused.text
        error = refused.json()["error"]
        assert error["code"] == "confirmation_required"
        assert error["details"]["tenant"] == {"id": doomed.tenant_id, "name": doomed.tenant}
        would = error["details"]["would_delete"]
        assert would == {
            "users": 1,
            "api_keys": 1,
            "usage_records": 1,
            "collections": 1,
            "documents": before["intelligence.documents"],
            "chunks": before["intelligence.chunks"],
            "conversations": 1,
            "messages": 2,
            "ingestion_jobs": 1,
        }
    assert await rows(db_engine, doomed.tenant_id) == before

    deleted = await api.delete(
        f"{TENANTS}/{doomed.tenant_id}", params={"confirm": doomed.tenant}, headers=ops
    )
    assert deleted.status_code == 200, deleted.text
    assert deleted.json() == {"id": doomed.tenant_id, "name": doomed.tenant, "deleted": would}

    assert await rows(db_engine, doomed.tenant_id) == dict.fromkeys(before, 0)
    assert await rows(db_engine, kept.tenant_id) == kept_before
    # The other tenant works as before; the deleted one's key and sign-in are gone.
    assert (await api.get("/v1/collections", headers=kept.user.key_headers)).status_code == 200
    assert (await api.get("/v1/collections", headers=doomed.user.key_headers)).status_code == 401
    assert (await sign_in(chat_gateway, doomed.tenant, doomed.email)).status_code == 401
    assert (await api.get(f"{TENANTS}/{doomed.tenant_id}", headers=ops)).status_code == 404
    # The audit log keeps the deleted tenant's events, and the operator's record of the deletion.
    async with db_engine.connect() as conn:
        kept_events = await conn.scalar(
            text("SELECT count(*) FROM gateway.audit_log WHERE tenant_id = CAST(:t AS uuid)"),
            {"t": doomed.tenant_id},
        )
    assert kept_events and kept_events >= 2  # its admin's creation and sign-in at least
    [(_action, details)] = [
        (action, details)
        for action, target, details in await audit_actions(db_engine, OPERATOR)
        if action == "tenant.deleted" and target == f"tenant:{doomed.tenant_id}"
    ]
    assert details == {"name": doomed.tenant, "deleted": would}


async def test_a_deletion_the_host_could_not_finish_resumes_when_asked_again(
    chat_gateway: ChatGateway, db_engine: AsyncEngine
) -> None:
    api, ops = chat_gateway.api, await operator(chat_gateway)
    doomed = await new_tenant(chat_gateway, ops)
    await ingest_text(chat_gateway, doomed.user, LIFT, filename="lift.txt")
    confirmed = {"confirm": doomed.tenant}

    await chat_gateway.host.stop()
    # The confirmation step still answers, with what the gateway knows and why the host's part is missing.
    unconfirmed = await api.delete(f"{TENANTS}/{doomed.tenant_id}", headers=ops)
    assert unconfirmed.status_code == 409, unconfirmed.text
    details = unconfirmed.json()["error"]["details"]
    assert details["would_delete"] == {"users": 1, "api_keys": 1, "usage_records": 0}
    assert details["data_error"].startswith("host_unavailable")
    down = await api.delete(f"{TENANTS}/{doomed.tenant_id}", params=confirmed, headers=ops)
    assert down.status_code == 503 and down.json()["error"]["code"] == "host_unavailable"
    shown = await api.get(f"{TENANTS}/{doomed.tenant_id}", headers=ops)
    assert shown.json()["status"] == "deleting"
    assert shown.json()["data"] is None and shown.json()["data_error"].startswith("host_unavailable")
    # A tenant being deleted is refused like a suspended one, and cannot be resumed.
    assert (await sign_in(chat_gateway, doomed.tenant, doomed.email)).status_code == 403
    resume = await api.patch(f"{TENANTS}/{doomed.tenant_id}", json={"status": "active"}, headers=ops)
    assert resume.status_code == 400
    assert (await rows(db_engine, doomed.tenant_id))["intelligence.chunks"] > 0

    await chat_gateway.host.start()
    async with asyncio.timeout(30):
        while (
            again := await api.delete(f"{TENANTS}/{doomed.tenant_id}", params=confirmed, headers=ops)
        ).status_code == 503:
            await asyncio.sleep(0.2)
    assert again.status_code == 200, again.text
    assert again.json()["deleted"]["chunks"] > 0
    assert set((await rows(db_engine, doomed.tenant_id)).values()) == {0}


async def test_only_the_operators_admins_may_manage_tenants(chat_gateway: ChatGateway) -> None:
    api, ops = chat_gateway.api, await operator(chat_gateway)
    other = await new_tenant(chat_gateway, ops)
    member_email = f"member-{uuid.uuid4().hex[:8]}@example.org"
    made = await api.post(
        "/v1/users",
        json={"email": member_email, "password": PASSWORD, "role": "member"},
        headers=ops,
    )
    assert made.status_code == 201, made.text
    operator_member = bearer((await sign_in(chat_gateway, OPERATOR, member_email)).json()["access_token"])
    spec = (await api.client.get("/openapi.json")).json()
    operations = sorted(
        (method.upper(), path)
        for path, item in spec["paths"].items()
        if path in (TENANTS, TENANTS + "/{tenant_id}")  # the limits routes below are docs/limits.md's
        for method in item
    )
    assert len(operations) == 5  # list, create, show, suspend/resume, delete
    bodies = {"POST": {"name": "intruders"}, "PATCH": {"status": "suspended"}}
    # Another tenant's admin (its own key too), and a member of the operator tenant.
    for headers in (other.user.headers, other.user.key_headers, operator_member):
        for method, path in operations:
            response = await api.request(
                method,
                path.replace("{tenant_id}", other.tenant_id),
                json=bodies.get(method),
                params={"confirm": other.tenant} if method == "DELETE" else None,
                headers=headers,
            )
            assert response.status_code == 403, (method, path, response.text)
            assert response.json()["error"]["code"] == "permission_denied"
    shown = await api.get(f"{TENANTS}/{other.tenant_id}", headers=ops)
    assert shown.json()["status"] == "active" and shown.json()["users"] == 1


async def test_the_operator_tenant_can_be_neither_suspended_nor_deleted(chat_gateway: ChatGateway) -> None:
    api, ops = chat_gateway.api, await operator(chat_gateway)
    [operator_id] = [
        id_ for id_, tenant in (await listed(chat_gateway, ops)).items() if tenant["name"] == OPERATOR
    ]
    suspend = await api.patch(f"{TENANTS}/{operator_id}", json={"status": "suspended"}, headers=ops)
    delete = await api.delete(f"{TENANTS}/{operator_id}", params={"confirm": OPERATOR}, headers=ops)
    for response in (suspend, delete):
        assert response.status_code == 400, response.text
        assert "operator tenant" in response.json()["error"]["message"]
    assert (await listed(chat_gateway, ops))[operator_id]["status"] == "active"


async def test_suspending_a_tenant_ends_its_open_websocket_stream(chat_gateway: ChatGateway) -> None:
    api, ops = chat_gateway.api, await operator(chat_gateway)
    acme = await new_tenant(chat_gateway, ops)
    async with ws_connect(chat_gateway, key=acme.user.key) as ws:
        assert (await receive(ws))["type"] == "hello"
        await ws.send(json.dumps({"type": "start", "message": "Talk forever", "llm": "endless"}))
        while (event := await receive(ws))["type"] != "token":
            assert event["type"] in {"started", "retrieval", "heartbeat"}, event
        suspended = await api.patch(f"{TENANTS}/{acme.tenant_id}", json={"status": "suspended"}, headers=ops)
        assert suspended.status_code == 200, suspended.text
        ended = await read_turn(ws, timeout=10)
    [error] = [event for event in ended if event["type"] == "error"]
    assert error["code"] == "tenant_suspended", ended
    assert ended[-1]["type"] == "done" and ended[-1]["status"] != "complete", ended
