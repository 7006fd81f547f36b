"""Another tenant's ids are not found on any resource route, and the answer says nothing more than for
an id that never existed; a user sees their conversations (list, read, delete) and no one else does."""

from __future__ import annotations

import asyncio
import re
import uuid
from typing import Any

import httpx
from quart import Quart

from opentier.config import Settings
from opentier.generated.intelligence.v1 import common_pb2, conversations_pb2, conversations_pb2_grpc
from tests.gateway.served import (  # noqa: F401 - fixtures
    Member,
    RunningHost,
    Served,
    ServedAPI,
    new_member,
    running_host_fixture,
    served_api_fixture,
    served_fixture,
    served_settings_fixture,
)
from tests.host.conftest import AUTH


async def finished_job(api: ServedAPI, job_id: str, headers: dict[str, str]) -> dict[str, Any]:
    for _ in range(300):
        job: dict[str, Any] = (await api.get(f"/v1/jobs/{job_id}", headers=headers)).json()
        if job["finished"]:
            return job
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish")


async def create_conversation(host: RunningHost, member: Member, title: str) -> str:
    """A conversation of ``member``, made on the host as its chat would (chat routes come later)."""
    async with host.channel() as channel:
        stub = conversations_pb2_grpc.ConversationServiceStub(channel)
        created = await stub.CreateConversation(
            conversations_pb2.CreateConversationRequest(
                caller=common_pb2.Caller(tenant_id=member.tenant_id, user_id=member.user_id), title=title
            ),
            metadata=AUTH,
            timeout=10,
        )
    return str(created.id)


def same_answer(mine: httpx.Response, mine_id: str, unknown: httpx.Response, unknown_id: str) -> bool:
    """The two 404s differ only by the id they name."""
    return mine.json()["error"]["message"].replace(mine_id, "<id>") == unknown.json()["error"][
        "message"
    ].replace(unknown_id, "<id>")


#: (kind of id, method, path with the id as {}, request options): every resource route taking an id.
ATTEMPTS: list[tuple[str, str, str, dict[str, Any]]] = [
    ("collection", "GET", "/v1/collections/{}", {}),
    ("collection", "PATCH", "/v1/collections/{}", {"json": {"name": "mine now"}}),
    ("collection", "DELETE", "/v1/collections/{}", {}),
    ("collection", "GET", "/v1/collections/{}/documents", {}),
    ("collection", "POST", "/v1/collections/{}/documents", {"files": {"file": ("x.txt", b"intruder")}}),
    (
        "collection",
        "POST",
        "/v1/collections/{}/documents/url",
        {"json": {"url": "https://example.org/x"}},
    ),
    ("collection", "GET", "/v1/jobs?collection_id={}", {}),
    ("collection", "POST", "/v1/search", {"json": {"query": "secret plan", "collection_ids": ["{}"]}}),
    ("document", "GET", "/v1/documents/{}", {}),
    ("document", "DELETE", "/v1/documents/{}", {}),
    ("job", "GET", "/v1/jobs/{}", {}),
    ("job", "POST", "/v1/jobs/{}/cancel", {}),
    ("conversation", "GET", "/v1/conversations/{}", {}),
    ("conversation", "DELETE", "/v1/conversations/{}", {}),
]


async def test_every_resource_route_hides_other_tenants(
    served: Served, served_api: ServedAPI, served_settings: Settings, running_host: RunningHost
) -> None:
    api = served_api
    owner = await new_member(served_settings, api)
    intruder = await new_member(served_settings, api)
    assert owner.tenant_id != intruder.tenant_id

    collection = (
        await api.post("/v1/collections", json={"name": "secret-plans"}, headers=owner.headers)
    ).json()
    upload = await api.post(
        f"/v1/collections/{collection['id']}/documents",
        files={"file": ("plans.txt", b"The secret plan is to fly higher. " * 20, "text/plain")},
        headers=owner.headers,
    )
    job = await finished_job(api, upload.json()["job"]["id"], owner.headers)
    assert job["status"] == "succeeded"
    [document] = (
        await api.get(f"/v1/collections/{collection['id']}/documents", headers=owner.headers)
    ).json()["documents"]
    conversation_id = await create_conversation(running_host, owner, "secret chat")

    ids = {"collection": collection["id"], "document": document["id"], "job": job["id"]}
    ids["conversation"] = conversation_id
    for kind, method, template, options in ATTEMPTS:
        never_existed = str(uuid.uuid4())
        answers = []
        for target in (ids[kind], never_existed):
            path, _, query = template.format(target).partition("?")
            params = dict([query.split("=")]) if query else None
            answers.append(
                await api.request(
                    method, path, headers=intruder.headers, params=params, **_fill(options, target)
                )
            )
        theirs, unknown = answers
        assert theirs.status_code == 404, (method, template, theirs.text)
        assert theirs.json()["error"]["code"] == "not_found"
        assert "secret" not in theirs.text
        assert same_answer(theirs, ids[kind], unknown, never_existed), (theirs.text, unknown.text)

    # Nothing of the owner changed, and the intruder's lists are empty.
    assert (await api.get(f"/v1/collections/{collection['id']}", headers=owner.headers)).json()[
        "name"
    ] == "secret-plans"
    assert (await api.get(f"/v1/documents/{document['id']}", headers=owner.headers)).json()[
        "status"
    ] == "ready"
    assert (await api.get("/v1/collections", headers=intruder.headers)).json()["collections"] == []
    assert (await api.get("/v1/jobs", headers=intruder.headers)).json()["jobs"] == []
    assert (await api.get("/v1/conversations", headers=intruder.headers)).json()["conversations"] == []
    found = await api.post("/v1/search", json={"query": "secret plan"}, headers=intruder.headers)
    assert found.status_code == 200 and found.json()["hits"] == []


def _fill(options: dict[str, Any], target: str) -> dict[str, Any]:
    if "json" in options:
        body = {
            key: [item.format(target) for item in value] if isinstance(value, list) else value
            for key, value in options["json"].items()
        }
        return {"json": body}
    return dict(options)


async def test_conversations_list_read_delete(
    served: Served, served_api: ServedAPI, served_settings: Settings, running_host: RunningHost
) -> None:
    member = await new_member(served_settings, served_api)
    first = await create_conversation(running_host, member, "first")
    second = await create_conversation(running_host, member, "second")

    listed = await served_api.get("/v1/conversations", headers=member.headers)
    assert listed.status_code == 200, listed.text
    assert {item["id"] for item in listed.json()["conversations"]} == {first, second}
    page = await served_api.get("/v1/conversations", params={"page_size": 1}, headers=member.headers)
    assert len(page.json()["conversations"]) == 1 and page.json()["next_page_token"]

    read = await served_api.get(f"/v1/conversations/{first}", headers=member.headers)
    assert read.status_code == 200, read.text
    assert read.json()["conversation"]["title"] == "first" and read.json()["messages"] == []
    assert read.json()["conversation"]["user_id"] == member.user_id

    deleted = await served_api.delete(f"/v1/conversations/{first}", headers=member.headers)
    assert deleted.status_code == 200 and deleted.json()["messages_deleted"] == 0
    assert (await served_api.get(f"/v1/conversations/{first}", headers=member.headers)).status_code == 404
    remaining = await served_api.get("/v1/conversations", headers=member.headers)
    assert [item["id"] for item in remaining.json()["conversations"]] == [second]


#: Id-bearing routes whose other-tenant refusal is proven elsewhere (or that take no tenant's id), with
#: the test that proves it. A route added later is in neither list, and the test below names it.
COVERED_ELSEWHERE: dict[tuple[str, str], str] = {
    **{
        (method, rule): "tests/gateway/test_users_admin.py::test_another_tenants_users_and_keys_are_not_found"
        for method, rule in (
            ("GET", "/v1/users/<user_id>"),
            ("PATCH", "/v1/users/<user_id>"),
            ("DELETE", "/v1/users/<user_id>"),
            ("POST", "/v1/users/<user_id>/logout"),
            ("GET", "/v1/admin/users/<user_id>/limits"),
            ("PUT", "/v1/admin/users/<user_id>/limits"),
            ("DELETE", "/v1/admin/users/<user_id>/limits"),
            ("GET", "/v1/users/<user_id>/keys"),
            ("POST", "/v1/users/<user_id>/keys"),
            ("DELETE", "/v1/users/<user_id>/keys/<key_id>"),
        )
    },
    (
        "DELETE",
        "/v1/keys/<key_id>",
    ): "tests/gateway/test_users_admin.py::test_another_tenants_users_and_keys_are_not_found",
    (
        "DELETE",
        "/v1/admin/keys/<key_id>",
    ): "tests/gateway/test_admin_keys.py::test_keys_of_another_tenant_are_not_found",
    **{
        (
            method,
            rule,
        ): "tests/gateway/test_admin_tenants.py (operator only: another tenant's admin is refused)"
        for method, rule in (
            ("GET", "/v1/admin/tenants/<tenant_id>"),
            ("PATCH", "/v1/admin/tenants/<tenant_id>"),
            ("DELETE", "/v1/admin/tenants/<tenant_id>"),
            ("GET", "/v1/admin/tenants/<tenant_id>/limits"),
            ("PUT", "/v1/admin/tenants/<tenant_id>/limits"),
            ("DELETE", "/v1/admin/tenants/<tenant_id>/limits"),
        )
    },
    (
        "GET",
        "/v1/chat/stream/<stream_id>",
    ): "tests/gateway/test_chat_sse.py::test_another_users_stream_does_not_exist_for_them",
    (
        "POST",
        "/v1/chat/stream/<stream_id>/cancel",
    ): "tests/gateway/test_chat_sse.py::test_another_users_stream_does_not_exist_for_them",
    ("GET", "/v1/models/<path:model>"): "a model's name, shared by every tenant (no tenant's data)",
    ("GET", "/static/<path:filename>"): "the web interface's files (no tenant's data)",
    ("GET", "/web/<string:name>"): "the web interface's pages (no tenant's data)",
    ("GET", "/web/pages/<string:name>"): "the web interface's pages (no tenant's data)",
}


def id_bearing_routes(app: Quart) -> set[tuple[str, str]]:
    """(method, rule) of every HTTP route with a path parameter, from the app's own url_map."""
    return {
        (method, rule.rule)
        for rule in app.url_map.iter_rules()
        if not rule.websocket and rule.arguments
        for method in rule.methods or ()
        if method not in {"HEAD", "OPTIONS"}
    }


async def test_every_id_bearing_route_is_tried_with_another_tenants_ids(app: Quart) -> None:
    tried = {
        (method, re.sub(r"<[^>]+>", "{}", template.partition("?")[0])) for _, method, template, _ in ATTEMPTS
    }
    routes = id_bearing_routes(app)
    assert ("GET", "/v1/documents/<document_id>") in routes  # precondition: the enumeration finds routes
    untried = {
        (method, rule)
        for method, rule in routes
        if (method, re.sub(r"<[^>]+>", "{}", rule)) not in tried and (method, rule) not in COVERED_ELSEWHERE
    }
    assert not untried, (
        f"add these routes to ATTEMPTS (or to COVERED_ELSEWHERE with the test that proves it): {untried}"
    )
    stale = set(COVERED_ELSEWHERE) - routes
    assert not stale, f"routes that no longer exist: {stale}"
