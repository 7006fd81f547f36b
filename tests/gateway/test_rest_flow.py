"""The must-show flow, over HTTP against Hypercorn, the real host and the real PostgreSQL: an admin
creates a user; the user signs in, makes an API key, creates a collection, uploads a document, watches
its ingestion finish, searches, lists and deletes; every response matches the served /openapi.json."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from opentier.config import Settings
from tests.gateway.served import (  # noqa: F401 - fixtures
    Served,
    ServedAPI,
    new_member,
    running_host_fixture,
    served_api_fixture,
    served_fixture,
    served_settings_fixture,
)

TEXT = (
    "Boundary layers.\n\n"
    + " ".join(
        f"The boundary layer over the wing thickens near the trailing edge, sentence {i}." for i in range(30)
    )
    + "\n\nShock waves.\n\n"
    + " ".join(f"A normal shock wave raises the pressure behind it, sentence {i}." for i in range(30))
)


async def wait_for_job(api: ServedAPI, job_id: str, headers: dict[str, str]) -> dict[str, Any]:
    """Poll the job as a client would until it is finished; every answer is checked against the spec."""
    for _ in range(300):
        response = await api.get(f"/v1/jobs/{job_id}", headers=headers)
        assert response.status_code == 200, response.text
        job: dict[str, Any] = response.json()
        if job["finished"]:
            return job
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish: {job}")


async def create_collection(api: ServedAPI, key: dict[str, str]) -> str:
    collection = await api.post(
        "/v1/collections",
        json={"name": "aero", "description": "wings", "metadata": {"team": "a"}},
        headers=key,
    )
    assert collection.status_code == 201, collection.text
    assert collection.json()["name"] == "aero" and collection.json()["document_count"] == 0
    duplicate = await api.post("/v1/collections", json={"name": "aero"}, headers=key)
    assert duplicate.status_code == 409 and duplicate.json()["error"]["code"] == "already_exists"
    collection_id: str = collection.json()["id"]
    renamed = await api.patch(
        f"/v1/collections/{collection_id}", json={"description": "wings and shocks"}, headers=key
    )
    assert renamed.status_code == 200 and renamed.json()["description"] == "wings and shocks"
    assert renamed.json()["metadata"] == {"team": "a"}
    return collection_id


async def upload_until_ready(api: ServedAPI, collection_id: str, key: dict[str, str]) -> dict[str, Any]:
    """Upload TEXT, follow its job to the end, and return the document as listed with status ready."""
    upload = await api.post(
        f"/v1/collections/{collection_id}/documents",
        files={"file": ("notes/aero.txt", TEXT.encode(), "text/plain")},
        data={"metadata": '{"year": 2024}'},
        headers=key,
    )
    assert upload.status_code == 202, upload.text
    job = upload.json()["job"]
    assert job["collection_id"] == collection_id and job["source"] == "notes/aero.txt"

    done = await wait_for_job(api, job["id"], key)
    assert done["status"] == "succeeded", done
    assert done["counts"]["created"] == 1 and done["counts"]["failed"] == 0
    assert done["progress"] == 1.0 and done["counts"]["chunks_written"] > 0
    jobs = await api.get("/v1/jobs", params={"collection_id": collection_id}, headers=key)
    assert [item["id"] for item in jobs.json()["jobs"]] == [job["id"]]

    listed = await api.get(
        f"/v1/collections/{collection_id}/documents", params={"status": "ready"}, headers=key
    )
    assert listed.status_code == 200, listed.text
    [document] = listed.json()["documents"]
    assert document["source"] == "notes/aero.txt" and document["status"] == "ready"
    assert document["metadata"]["year"] == 2024 and document["chunk_count"] > 0
    assert listed.json()["next_page_token"] is None
    failed = await api.get(
        f"/v1/collections/{collection_id}/documents", params={"status": "failed"}, headers=key
    )
    assert failed.json()["documents"] == []
    fetched = await api.get(f"/v1/documents/{document['id']}", headers=key)
    assert fetched.status_code == 200 and fetched.json()["indexed_at"] is not None
    return dict(document)


async def test_admin_user_key_collection_upload_search_list_delete(
    served: Served, served_api: ServedAPI, served_settings: Settings
) -> None:
    api = served_api
    member = await new_member(served_settings, api)

    # The user makes an API key for a script: it may read and ingest, not chat.
    created = await api.post(
        "/v1/keys", json={"name": "ingest script", "scopes": ["read", "ingest"]}, headers=member.headers
    )
    assert created.status_code == 201, created.text
    key = {"Authorization": f"Bearer {created.json()['key']}"}

    collection_id = await create_collection(api, key)
    document = await upload_until_ready(api, collection_id, key)

    found = await api.post(
        "/v1/search",
        json={"query": "normal shock wave pressure", "collection_ids": [collection_id], "top_k": 3},
        headers=key,
    )
    assert found.status_code == 200, found.text
    hits = found.json()["hits"]
    assert hits and found.json()["retriever"] == "vector"
    assert all(hit["document_id"] == document["id"] and hit["source"] == "notes/aero.txt" for hit in hits)
    start, end = hits[0]["span"]["char_start"], hits[0]["span"]["char_end"]
    assert end > start and TEXT[start:end].split()[:3] == hits[0]["text"].split()[:3]

    # The key holds no `chat` scope: conversations are refused, not shown.
    refused = await api.get("/v1/conversations", headers=key)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "permission_denied"

    deleted = await api.delete(f"/v1/documents/{document['id']}", headers=key)
    assert deleted.status_code == 200 and deleted.json()["chunks_deleted"] == document["chunk_count"]
    gone = await api.get(f"/v1/documents/{document['id']}", headers=key)
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "not_found"
    after = await api.post(
        "/v1/search", json={"query": "normal shock wave", "collection_ids": [collection_id]}, headers=key
    )
    assert after.json()["hits"] == []

    removed = await api.delete(f"/v1/collections/{collection_id}", headers=key)
    assert removed.status_code == 200, removed.text
    assert (await api.get(f"/v1/collections/{collection_id}", headers=key)).status_code == 404
    assert api.checked >= 20


async def test_pagination_walks_every_collection_once(
    served: Served, served_api: ServedAPI, served_settings: Settings
) -> None:
    member = await new_member(served_settings, served_api)
    names = [f"c{i:02d}" for i in range(5)]
    for name in names:
        assert (
            await served_api.post("/v1/collections", json={"name": name}, headers=member.headers)
        ).status_code == 201
    seen: list[str] = []
    token: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"page_size": 2} | ({"page_token": token} if token else {})
        page = await served_api.get("/v1/collections", params=params, headers=member.headers)
        assert page.status_code == 200, page.text
        assert len(page.json()["collections"]) <= 2
        seen += [item["name"] for item in page.json()["collections"]]
        pages += 1
        token = page.json()["next_page_token"]
        if token is None:
            break
    assert seen == names and pages == 3
    too_big = await served_api.get("/v1/collections", params={"page_size": 10_000}, headers=member.headers)
    assert too_big.status_code == 400 and too_big.json()["error"]["code"] == "invalid_request"


async def test_scopes_guard_each_route(
    served: Served, served_api: ServedAPI, served_settings: Settings
) -> None:
    member = await new_member(served_settings, served_api)
    created = await served_api.post(
        "/v1/keys", json={"name": "reader", "scopes": ["read"]}, headers=member.headers
    )
    reader = {"Authorization": f"Bearer {created.json()['key']}"}
    collection = await served_api.post("/v1/collections", json={"name": "docs"}, headers=member.headers)
    collection_id = collection.json()["id"]

    assert (await served_api.get(f"/v1/collections/{collection_id}", headers=reader)).status_code == 200
    for method, path, options in [
        ("POST", "/v1/collections", {"json": {"name": "other"}}),
        ("PATCH", f"/v1/collections/{collection_id}", {"json": {"name": "renamed"}}),
        ("DELETE", f"/v1/collections/{collection_id}", {}),
        ("POST", f"/v1/collections/{collection_id}/documents", {"files": {"file": ("a.txt", b"hello")}}),
        (
            "POST",
            f"/v1/collections/{collection_id}/documents/url",
            {"json": {"url": "https://example.org/a"}},
        ),
        ("GET", "/v1/conversations", {}),
    ]:
        response = await served_api.request(method, path, headers=reader, **options)
        assert response.status_code == 403, (method, path, response.text)
        assert response.json()["error"]["code"] == "permission_denied"
    anonymous = await served_api.get("/v1/collections")
    assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "unauthenticated"
    assert (await served_api.get(f"/v1/collections/{collection_id}", headers=reader)).json()["name"] == "docs"


async def test_host_errors_keep_their_codes(
    served: Served, served_api: ServedAPI, served_settings: Settings
) -> None:
    member = await new_member(served_settings, served_api)
    collection_id = (
        await served_api.post("/v1/collections", json={"name": "docs"}, headers=member.headers)
    ).json()["id"]

    not_an_id = await served_api.get("/v1/collections/not-an-id", headers=member.headers)
    assert not_an_id.status_code == 400 and not_an_id.json()["error"]["code"] == "invalid_request"
    unknown = await served_api.post(
        "/v1/search", json={"query": "wing", "retriever": "no-such-retriever"}, headers=member.headers
    )
    assert unknown.status_code == 400 and unknown.json()["error"]["code"] == "component_unknown"
    assert "vector" in unknown.json()["error"]["message"]
    not_http = await served_api.post(
        f"/v1/collections/{collection_id}/documents/url",
        json={"url": "ftp://example.org/x"},
        headers=member.headers,
    )
    assert not_http.status_code == 400 and not_http.json()["error"]["code"] == "invalid_request"
    # A private address is refused when the host fetches it: the job says so, per document.
    private = await served_api.post(
        f"/v1/collections/{collection_id}/documents/url",
        json={"url": "http://127.0.0.1:9/x"},
        headers=member.headers,
    )
    assert private.status_code == 202, private.text
    job = await wait_for_job(served_api, private.json()["job"]["id"], member.headers)
    assert job["counts"]["failed"] == 1 and job["counts"]["created"] == 0
    invalid = await served_api.post("/v1/collections", json={"name": ""}, headers=member.headers)
    assert invalid.status_code == 400 and invalid.json()["error"]["code"] == "invalid_request"
    for response in (not_an_id, unknown, not_http, invalid):
        assert response.json()["error"]["request_id"] == response.headers["x-request-id"]


async def test_upload_over_the_limit_is_413_and_nothing_is_ingested(
    served: Served, served_api: ServedAPI, served_settings: Settings
) -> None:
    member = await new_member(served_settings, served_api)
    collection_id = (
        await served_api.post("/v1/collections", json={"name": "docs"}, headers=member.headers)
    ).json()["id"]
    limit = served_settings.gateway.max_upload_bytes

    big = await served_api.post(
        f"/v1/collections/{collection_id}/documents",
        files={"file": ("big.txt", b"a" * (limit + 1), "text/plain")},
        headers=member.headers,
    )
    assert big.status_code == 413, big.text
    assert big.json()["error"]["code"] == "upload_too_large"
    assert "gateway.max_upload_bytes" in big.json()["error"]["message"]

    # Without a Content-Length the limit holds while the body streams in.
    async def chunks() -> Any:
        boundary = b"xyzzy"
        yield b"--" + boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="s.txt"\r\n\r\n'
        for _ in range(limit // 8192 + 2):
            yield b"b" * 8192
        yield b"\r\n--" + boundary + b"--\r\n"

    async with httpx.AsyncClient(base_url=served.url) as client:
        streamed = await client.post(
            f"/v1/collections/{collection_id}/documents",
            content=chunks(),
            headers=member.headers | {"Content-Type": "multipart/form-data; boundary=xyzzy"},
        )
    assert streamed.status_code == 413 and streamed.json()["error"]["code"] == "upload_too_large"

    exactly = await served_api.post(
        f"/v1/collections/{collection_id}/documents",
        files={"file": ("fits.txt", b"word " * (limit // 5), "text/plain")},
        headers=member.headers,
    )
    assert exactly.status_code == 202, exactly.text
    jobs = await served_api.get("/v1/jobs", params={"collection_id": collection_id}, headers=member.headers)
    assert [job["source"] for job in jobs.json()["jobs"]] == ["fits.txt"]

    no_file = await served_api.post(
        f"/v1/collections/{collection_id}/documents", data={"force": "true"}, files={}, headers=member.headers
    )
    assert no_file.status_code == 400 and no_file.json()["error"]["code"] == "invalid_request"
    big_json = await served_api.post(
        "/v1/search",
        content=b'{"query": "' + b"q" * 70_000 + b'"}',
        headers=member.headers | {"Content-Type": "application/json"},
    )
    assert big_json.status_code == 413 and big_json.json()["error"]["code"] == "request_too_large"
