"""Request rate limits (per API key, per user, per client address) and body limits, against the real
gateway under Hypercorn, the real host and the real PostgreSQL."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine
from websockets.exceptions import ConnectionClosed

from opentier.config import LimitsSettings, Settings
from tests.gateway.helpers import scalar
from tests.gateway.served import (  # noqa: F401 - fixtures
    Served,
    ServedAPI,
    new_member,
    running_host_fixture,
    served_api_fixture,
    served_fixture,
    served_settings_fixture,
)
from tests.gateway.streaming import (  # noqa: F401 - fixtures
    ChatGateway,
    chat_gateway_fixture,
    chat_settings_fixture,
    host_chat_options_fixture,
    limits_options_fixture,
    receive,
    signed_in_key,
    streaming_host_fixture,
    streaming_options_fixture,
    ws_connect,
)

ME = "/v1/auth/me"
NO_RATE_LIMITS = {"per_api_key": "", "per_user": "", "per_address": ""}


def limits(**options: str) -> Any:
    return pytest.mark.parametrize("limits_options", [NO_RATE_LIMITS | options], indirect=True)


def remaining(response: httpx.Response) -> int:
    return int(response.headers["RateLimit-Remaining"])


def assert_refused(response: httpx.Response, limit: int, window: int = 60) -> None:
    assert response.status_code == 429, response.text
    assert response.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(response.headers["Retry-After"]) <= window
    assert response.headers["RateLimit-Limit"] == str(limit)
    assert response.headers["RateLimit-Remaining"] == "0"
    assert 1 <= int(response.headers["RateLimit-Reset"]) <= window


@limits(per_api_key="5 per minute", per_user="50 per minute", per_address="1000 per minute")
async def test_a_burst_over_the_per_key_limit_is_refused_with_rate_limit_headers(
    chat_gateway: ChatGateway,
) -> None:
    user = await signed_in_key(chat_gateway, scopes=("read",))
    other = await signed_in_key(chat_gateway, scopes=("read",))
    api = chat_gateway.api

    allowed = [await api.get(ME, headers=user.key_headers) for _ in range(5)]
    assert [r.status_code for r in allowed] == [200] * 5
    # The key's limit is the tightest of the three: its headers are the ones sent.
    assert [r.headers["RateLimit-Limit"] for r in allowed] == ["5"] * 5
    assert [remaining(r) for r in allowed] == [4, 3, 2, 1, 0]
    policy = allowed[0].headers["RateLimit-Policy"].split(", ")
    assert sorted(policy) == sorted(["5;w=60", "50;w=60", "1000;w=60"])
    assert all(1 <= int(r.headers["RateLimit-Reset"]) <= 60 for r in allowed)

    refused = await api.get(ME, headers=user.key_headers)  # checked against /openapi.json: 429 documented
    assert_refused(refused, 5)
    assert "API key" in refused.json()["error"]["message"]
    assert refused.json()["error"]["request_id"] == refused.headers["X-Request-ID"]

    # The same user through its access token, a second key of it, another user's key: not limited.
    by_token = await api.get(ME, headers=user.headers)
    assert by_token.status_code == 200 and by_token.headers["RateLimit-Limit"] == "50"
    second = await api.post("/v1/keys", json={"name": "second", "scopes": ["read"]}, headers=user.headers)
    assert second.status_code == 201, second.text
    by_second_key = await api.get(ME, headers={"Authorization": f"Bearer {second.json()['key']}"})
    assert by_second_key.status_code == 200 and remaining(by_second_key) == 4
    by_other = await api.get(ME, headers=other.key_headers)
    assert by_other.status_code == 200 and remaining(by_other) == 4

    # The refused key stays refused; a wrong key is still answered 401 by the route, not 429.
    assert (await api.get(ME, headers=user.key_headers)).status_code == 429
    wrong = await api.get(ME, headers={"Authorization": "Bearer otk_not_a_real_key_0123456789"})
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "unauthenticated"

    for _ in range(20):
        probe = await api.get("/healthz")
        assert probe.status_code == 200 and "RateLimit-Limit" not in probe.headers


@limits(per_user="8 per minute")
async def test_the_per_user_limit_counts_every_credential_of_the_user(chat_gateway: ChatGateway) -> None:
    user = await signed_in_key(chat_gateway, scopes=("read",))
    neighbour = await signed_in_key(chat_gateway, scopes=("read",))
    api = chat_gateway.api

    first = await api.get(ME, headers=user.headers)
    assert first.status_code == 200 and first.headers["RateLimit-Limit"] == "8"
    left = remaining(first)
    assert 0 < left < 8  # signing in and creating the key counted too
    credentials = [user.key_headers, user.headers]
    for index in range(left):
        response = await api.get(ME, headers=credentials[index % 2])
        assert response.status_code == 200, response.text
    assert_refused(await api.get(ME, headers=user.key_headers), 8)
    token_refused = await api.get(ME, headers=user.headers)
    assert_refused(token_refused, 8)
    assert "this user" in token_refused.json()["error"]["message"]

    unaffected = await api.get(ME, headers=neighbour.headers)
    assert unaffected.status_code == 200 and remaining(unaffected) > 0


@limits(per_address="3 per minute")
@pytest.mark.auth(trusted_proxies=1)
async def test_the_per_address_limit_holds_for_anonymous_requests_and_websockets(
    chat_gateway: ChatGateway,
) -> None:
    limited = {"X-Forwarded-For": "203.0.113.7"}
    elsewhere = {"X-Forwarded-For": "198.51.100.20, 203.0.113.8"}  # the proxy saw 203.0.113.8
    api = chat_gateway.api

    answers = [await api.get(ME, headers=limited) for _ in range(3)]
    assert [r.status_code for r in answers] == [401] * 3  # counted, then refused by the route itself
    assert [remaining(r) for r in answers] == [2, 1, 0]
    refused = await api.get(ME, headers=limited)
    assert_refused(refused, 3)
    assert "client address" in refused.json()["error"]["message"]

    other = await api.get(ME, headers=elsewhere)
    assert other.status_code == 401 and remaining(other) == 2
    assert (await api.get("/healthz", headers=limited)).status_code == 200
    assert (await api.get("/readyz", headers=limited)).status_code != 429

    # A WebSocket from the limited address is accepted, told why, and closed with 4429.
    async with ws_connect(chat_gateway, headers=limited) as ws:
        message = await receive(ws)
        assert message["type"] == "error" and message["code"] == "rate_limited"
        assert 1 <= message["retry_after"] <= 60
        with pytest.raises(ConnectionClosed) as closed:
            await receive(ws)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4429

    # From another address the same WebSocket reaches the route (which wants a credential).
    async with ws_connect(chat_gateway, headers={"X-Forwarded-For": "192.0.2.44"}) as ws:
        message = await receive(ws)
        assert message["code"] == "unauthenticated"
        with pytest.raises(ConnectionClosed) as closed:
            await receive(ws)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


@pytest.mark.parametrize(
    "limits_options",
    [{"storage": "redis://127.0.0.1:1", "per_address": "1 per minute"}],
    indirect=True,
)
async def test_an_unreachable_shared_storage_lets_requests_through_and_says_so(
    chat_gateway: ChatGateway, caplog: pytest.LogCaptureFixture
) -> None:
    for _ in range(3):
        response = await chat_gateway.api.get(ME)
        assert response.status_code == 401  # not 429: nothing could be counted
        assert "RateLimit-Limit" not in response.headers
    logged = caplog.get_records("setup") + caplog.get_records("call")  # the first request came at set-up
    warnings = [r for r in logged if "rate limits are not applied" in r.getMessage()]
    assert len(warnings) == 1  # once a minute, not once per request
    assert warnings[0].levelno == logging.WARNING and "127.0.0.1:1" in warnings[0].getMessage()


def test_rate_limit_settings_are_checked_at_start_up() -> None:
    with pytest.raises(ValidationError, match=r"limits\.per_user"):
        LimitsSettings(per_user="a lot per minute")
    assert LimitsSettings(per_api_key="", per_address="10/second; 100 per hour").per_api_key == ""


# -- body limits -----------------------------------------------------------------------------------


async def _chunks(data: bytes, size: int = 8192) -> Any:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def test_an_oversized_upload_is_413_and_nothing_is_stored(
    served: Served, served_api: ServedAPI, served_settings: Settings, db_engine: AsyncEngine
) -> None:
    member = await new_member(served_settings, served_api)
    created = await served_api.post("/v1/collections", json={"name": "docs"}, headers=member.headers)
    collection_id = created.json()["id"]
    limit = served_settings.gateway.max_upload_bytes
    path = f"/v1/collections/{collection_id}/documents"

    declared = await served_api.post(
        path, files={"file": ("big.txt", b"a" * (limit + 1), "text/plain")}, headers=member.headers
    )
    assert declared.status_code == 413, declared.text
    assert declared.json()["error"]["code"] == "upload_too_large"
    assert "gateway.max_upload_bytes" in declared.json()["error"]["message"]

    boundary = b"limit-test"
    body = (
        b"--" + boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="chunked.txt"\r\n'
        b"Content-Type: text/plain\r\n\r\n" + b"b" * (limit + 16384) + b"\r\n--" + boundary + b"--\r\n"
    )
    async with httpx.AsyncClient(base_url=served.url, timeout=30) as client:
        chunked = await client.post(
            path,
            content=_chunks(body),
            headers=member.headers | {"Content-Type": "multipart/form-data; boundary=limit-test"},
        )
    assert chunked.status_code == 413 and chunked.json()["error"]["code"] == "upload_too_large"

    documents = await served_api.get(path, headers=member.headers)
    assert documents.status_code == 200 and documents.json()["documents"] == []
    jobs = await served_api.get("/v1/jobs", params={"collection_id": collection_id}, headers=member.headers)
    assert jobs.json()["jobs"] == []
    for table in ("documents", "ingestion_jobs"):
        stored = await scalar(
            db_engine,
            f"SELECT count(*) FROM intelligence.{table} WHERE collection_id = CAST(:id AS uuid)",
            id=collection_id,
        )
        assert stored == 0, table


async def test_every_other_body_is_held_to_the_json_limit_even_without_a_length(
    served: Served, served_api: ServedAPI, served_settings: Settings, db_engine: AsyncEngine
) -> None:
    member = await new_member(served_settings, served_api)
    limit = served_settings.gateway.max_json_bytes
    name = "x" * (limit + 8192)
    oversized = ('{"name": "' + name + '"}').encode()

    declared = await served_api.post(
        "/v1/collections", content=oversized, headers=member.headers | {"Content-Type": "application/json"}
    )
    assert declared.status_code == 413, declared.text
    assert declared.json()["error"]["code"] == "request_too_large"

    # Sent chunked, with no Content-Length: refused once what arrived passes the limit (before this
    # limit applied per route, such a body could be as large as an upload).
    async with httpx.AsyncClient(base_url=served.url, timeout=30) as client:
        chunked = await client.post(
            "/v1/collections",
            content=_chunks(oversized),
            headers=member.headers | {"Content-Type": "application/json"},
        )
    assert chunked.status_code == 413, chunked.text
    assert chunked.json()["error"]["code"] == "request_too_large"
    assert "gateway.max_json_bytes" in chunked.json()["error"]["message"]
    stored = await scalar(
        db_engine,
        "SELECT count(*) FROM intelligence.collections WHERE length(name) > :limit",
        limit=limit,
    )
    assert stored == 0

    # A body within the limit, chunked too, is read as usual.
    async with httpx.AsyncClient(base_url=served.url, timeout=30) as client:
        fits = await client.post(
            "/v1/collections",
            content=_chunks(b'{"name": "small"}', size=4),
            headers=member.headers | {"Content-Type": "application/json"},
        )
    assert fits.status_code == 201, fits.text


async def test_the_openapi_document_lists_the_limits_answers(served_api: ServedAPI) -> None:
    document = (await served_api.client.get("/openapi.json")).json()
    operations = [
        (path, method, operation)
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
    ]
    assert operations
    for path, method, operation in operations:
        responses = operation["responses"]
        if path in {"/healthz", "/readyz", "/metrics"}:
            assert "429" not in responses, path
        else:
            assert "429" in responses, (method, path)
            assert "RateLimit-Remaining" in responses["429"]["headers"]
        if method in {"post", "put", "patch"}:
            assert "413" in responses, (method, path)
