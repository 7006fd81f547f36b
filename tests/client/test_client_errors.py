"""The gateway's errors as the client's typed exceptions, against the real gateway, host and PostgreSQL:
404, 401 (REST and the WebSocket's 4401), the token refresh after a 401 (once, even for concurrent
calls), 429 with retry_after (rate limits on REST and the WebSocket's 4429, token quotas)."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest

from opentier.client import (
    AsyncClient,
    AuthenticationError,
    BadRequestError,
    NotFoundError,
    PayloadTooLargeError,
    QuotaExceededError,
    RateLimitedError,
    Tokens,
    TransportError,
)
from tests.client.conftest import Account
from tests.gateway.streaming import ChatGateway, signed_in_key

NO_RATE_LIMITS = {"per_api_key": "", "per_user": "", "per_address": ""}


class CountingTransport(httpx.AsyncBaseTransport):
    """The real HTTP transport, recording the path of every request it sends."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.paths: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_not_found_bad_request_and_unauthenticated_are_typed(
    chat_gateway: ChatGateway, account: Account
) -> None:
    async with AsyncClient(chat_gateway.url) as client:
        with pytest.raises(AuthenticationError) as anonymous:
            await client.list_collections()
        await client.login(account.email, account.password, tenant=account.tenant)
        with pytest.raises(NotFoundError) as missing:
            await client.get_collection(str(uuid.uuid4()))
        with pytest.raises(BadRequestError) as invalid:
            await client.search("flaps", top_k=100_000)
    assert (anonymous.value.code, anonymous.value.status) == ("unauthenticated", 401)
    assert (missing.value.code, missing.value.status) == ("not_found", 404)
    assert missing.value.request_id and missing.value.retry_after is None
    assert (invalid.value.code, invalid.value.status) == ("invalid_request", 400)
    assert "top_k" in invalid.value.message

    async with AsyncClient(chat_gateway.url, api_key="otk_000000000000_wrong") as wrong:
        with pytest.raises(AuthenticationError) as refused:
            await wrong.me()
        with pytest.raises(AuthenticationError) as refused_socket:
            await wrong.ask("Hello?")
    assert refused.value.status == 401 and refused.value.request_id
    assert refused_socket.value.code == "unauthenticated"  # the WebSocket's refusal and close 4401

    async with AsyncClient("http://127.0.0.1:9", timeout=2) as nowhere:
        with pytest.raises(TransportError):
            await nowhere.me()


async def test_a_401_renews_the_tokens_once_and_retries(chat_gateway: ChatGateway, account: Account) -> None:
    async with AsyncClient(chat_gateway.url) as client:
        tokens = await client.login(account.email, account.password, tenant=account.tenant)

    renewed: list[Tokens] = []
    counting = CountingTransport()
    expired = Tokens(access_token="expired.or.forged", refresh_token=tokens.refresh_token)
    async with AsyncClient(
        chat_gateway.url, tokens=expired, on_tokens=renewed.append, http_transport=counting
    ) as client:
        me, page = await asyncio.gather(client.me(), client.list_collections())
        answer = await client.ask("Hello?")  # the WebSocket uses the renewed token
    assert me.user.email == account.email and page.collections == []
    assert answer.complete
    # Both calls were refused, one refresh renewed the pair, both were sent again.
    assert sorted(counting.paths) == sorted(
        ["/v1/auth/me", "/v1/collections", "/v1/auth/refresh", "/v1/auth/me", "/v1/collections"]
    )
    [pair] = renewed
    assert pair.access_token != expired.access_token and pair.refresh_token != tokens.refresh_token

    # An upload refused for its expired token is sent again, whole, once the pair is renewed; the
    # progress it reports never goes back.
    async with AsyncClient(chat_gateway.url) as client:
        fresh = await client.login(account.email, account.password, tenant=account.tenant)
        collection = await client.create_collection("uploads")
    counting = CountingTransport()
    sent: list[int] = []
    body = b"Flaps raise lift. " * 2000
    forged = Tokens(access_token="expired.or.forged", refresh_token=fresh.refresh_token)
    async with AsyncClient(chat_gateway.url, tokens=forged, http_transport=counting) as client:
        job = await client.upload(
            collection.id,
            body,
            filename="flaps.txt",
            on_progress=lambda done, _: sent.append(done),
            chunk_bytes=4096,
        )
        assert (await client.wait_for_job(job, timeout=30)).succeeded
        with pytest.raises(PayloadTooLargeError) as too_large:  # over the host's 64 KiB
            await client.upload(collection.id, body * 2, filename="twice.txt")
    assert (too_large.value.code, too_large.value.status) == ("source_too_large", 413)
    upload = f"/v1/collections/{collection.id}/documents"
    assert counting.paths[:3] == [upload, "/v1/auth/refresh", upload]
    assert sent == sorted(set(sent)) and sent[-1] == len(body)

    # The refresh token used above was rotated away: a client holding it gets 401, after one try.
    counting = CountingTransport()
    async with AsyncClient(chat_gateway.url, tokens=expired, http_transport=counting) as stale:
        with pytest.raises(AuthenticationError) as refused:
            await stale.me()
    assert counting.paths == ["/v1/auth/me", "/v1/auth/refresh"]
    assert refused.value.status == 401


@pytest.mark.parametrize("limits_options", [NO_RATE_LIMITS | {"per_api_key": "3 per minute"}], indirect=True)
async def test_rate_limited_calls_raise_with_retry_after(chat_gateway: ChatGateway) -> None:
    user = await signed_in_key(chat_gateway)
    async with AsyncClient(chat_gateway.url, api_key=user.key) as client:
        for _ in range(3):
            await client.list_collections()
        with pytest.raises(RateLimitedError) as rest:
            await client.list_collections()
        with pytest.raises(RateLimitedError) as socket:
            await client.ask("Hello?")
    assert (rest.value.code, rest.value.status) == ("rate_limited", 429)
    assert rest.value.retry_after is not None and 1 <= rest.value.retry_after <= 60
    assert rest.value.request_id
    assert socket.value.code == "rate_limited"  # sent before the close 4429
    assert socket.value.retry_after is not None and 1 <= socket.value.retry_after <= 60


@pytest.mark.parametrize("limits_options", [NO_RATE_LIMITS | {"user_tokens_per_day": 40}], indirect=True)
async def test_a_used_up_token_quota_stops_the_turn_then_refuses_the_next(chat_gateway: ChatGateway) -> None:
    user = await signed_in_key(chat_gateway)
    async with AsyncClient(chat_gateway.url, api_key=user.key) as client:
        # `endless` streams until stopped: the gateway's estimate reaches the quota mid-answer.
        stopped = await client.ask("Tell me everything.", llm="endless")
        refusals = []
        for transport in ("websocket", "sse"):
            with pytest.raises(QuotaExceededError) as refused:
                await client.ask("Again?", transport=transport)
            refusals.append(refused.value)
    assert stopped.status == "cancelled" and stopped.text.startswith("tick tick")
    assert stopped.quota is not None
    assert (stopped.quota.scope, stopped.quota.period, stopped.quota.limit) == ("user", "day", 40)
    for refusal in refusals:  # the WebSocket's error event, then the SSE route's HTTP 429
        assert (refusal.code, refusal.status) == ("quota_exceeded", 429)
        assert refusal.retry_after is not None and refusal.retry_after > 0
