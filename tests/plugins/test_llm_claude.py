"""The ``claude`` LLM against the Messages API's real streaming wire format, replayed through the SDK's
own HTTP client (an ``httpx2`` transport): no network, no key needed, nothing of ours faked.

The recorded events follow the API's streaming reference and the SDK's own fixtures: ``message_start``
(with the prompt's ``input_tokens``), ``content_block_start``, ``ping``, ``content_block_delta`` of type
``text_delta``, ``content_block_stop``, ``message_delta`` (with the answer's ``output_tokens``),
``message_stop``; an ``event: error`` in the middle of a stream; error bodies
``{"type": "error", "error": {"type": ..., "message": ...}}`` with ``request-id`` and ``retry-after``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import httpx2
import pytest
from opentier_llm_claude import ClaudeLLM, ClaudeOptions

from opentier.components import LLM, ChatMessage, LLMRequest, TextDelta, Usage
from opentier.config import ChatSettings, PluginSettings, Settings
from opentier.errors import ConfigError, LLMError
from opentier.plugin_manager import PluginSelection, load_plugins

KEY = "sk-ant-test-0123456789"
REQUEST = LLMRequest(
    messages=[ChatMessage("user", "Sources:\n[1] Wings stall near 15 degrees.\n\nWhen do wings stall?")],
    system="Answer from the numbered sources and cite them like [1].",
    max_output_tokens=300,
)


def sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def message_start(input_tokens: int, cache_read: int = 0) -> bytes:
    usage = {"input_tokens": input_tokens, "output_tokens": 1, "cache_read_input_tokens": cache_read}
    message = {
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
        "type": "message",
        "role": "assistant",
        "content": [],
        "model": "claude-sonnet-5-5",
        "stop_reason": None,
        "stop_sequence": None,
        "usage": usage,
    }
    return sse("message_start", {"type": "message_start", "message": message})


def text_delta(text: str) -> bytes:
    delta = {"type": "text_delta", "text": text}
    return sse("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta})


BLOCK_START = sse(
    "content_block_start",
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
)
PING = sse("ping", {"type": "ping"})
BLOCK_STOP = sse("content_block_stop", {"type": "content_block_stop", "index": 0})
MESSAGE_STOP = sse("message_stop", {"type": "message_stop"})


def message_delta(output_tokens: int) -> bytes:
    return sse(
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": output_tokens},
        },
    )


def answer_events(pieces: Sequence[str], input_tokens: int = 57, output_tokens: int = 12) -> list[bytes]:
    return [
        message_start(input_tokens),
        BLOCK_START,
        PING,
        *(text_delta(piece) for piece in pieces),
        BLOCK_STOP,
        message_delta(output_tokens),
        MESSAGE_STOP,
    ]


def error_body(kind: str, message: str) -> dict[str, Any]:
    return {
        "type": "error",
        "error": {"type": kind, "message": message},
        "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy",
    }


class Body(httpx2.AsyncByteStream):
    """A response body sent event by event, as the API streams it; records that it was closed.

    With ``hold`` set, it stops after its events without ending, like a model still generating.
    """

    def __init__(self, chunks: Sequence[bytes], *, hold: bool = False, fail: Exception | None = None) -> None:
        self.chunks = list(chunks)
        self.hold = hold
        self.fail = fail
        self.sent = 0
        self.closed = asyncio.Event()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            self.sent += 1
            yield chunk
            await asyncio.sleep(0)
        if self.fail is not None:
            raise self.fail
        if self.hold:
            await asyncio.Event().wait()

    async def aclose(self) -> None:
        self.closed.set()


class API:
    """The recorded responses, served in order to the SDK's HTTP client; keeps what was sent."""

    def __init__(self, *responses: Callable[[], httpx2.Response]) -> None:
        self.responses = list(responses)
        self.requests: list[httpx2.Request] = []

    def handler(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        return self.responses.pop(0)()

    def client(self) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(transport=httpx2.MockTransport(self.handler))

    def sent(self, index: int = 0) -> dict[str, Any]:
        body: dict[str, Any] = json.loads(self.requests[index].content)
        return body


def streamed(body: Body) -> Callable[[], httpx2.Response]:
    return lambda: httpx2.Response(200, headers={"content-type": "text/event-stream"}, stream=body)


def status(code: int, body: dict[str, Any], **headers: str) -> Callable[[], httpx2.Response]:
    return lambda: httpx2.Response(
        code, json=body, headers={"request-id": "req_011CSHoEeqs5C35K2UUqR7Fy", **headers}
    )


def claude(api: API, **options: Any) -> ClaudeLLM:
    llm = ClaudeLLM(ClaudeOptions.parse({"max_retries": 0, **options}), api_key=KEY)
    llm.use_http_client(api.client())
    return llm


async def run(llm: LLM, request: LLMRequest = REQUEST) -> tuple[list[str], list[Usage]]:
    texts: list[str] = []
    usages: list[Usage] = []
    async for event in llm.stream(request):
        if isinstance(event, TextDelta):
            texts.append(event.text)
        else:
            usages.append(event)
    return texts, usages


async def failure(llm: LLM, request: LLMRequest = REQUEST) -> tuple[list[str], LLMError]:
    texts: list[str] = []
    with pytest.raises(LLMError) as caught:
        async for event in llm.stream(request):
            if isinstance(event, TextDelta):
                texts.append(event.text)
    return texts, caught.value


async def test_plugin_streams_text_in_order_with_the_apis_usage() -> None:
    system = load_plugins(selection=PluginSelection(allow=["claude"]))
    assert not system.failures, system.failures
    settings = Settings(
        chat=ChatSettings(anthropic_api_key=KEY),  # type: ignore[arg-type]
        plugins=PluginSettings(options={"claude": {"model": "claude-haiku-4-5", "max_tokens": 200}}),
    )
    system.pm.hook.opentier_startup(settings=settings)
    llm = system.registry.get_typed(LLM, "claude")
    assert isinstance(llm, ClaudeLLM) and llm.context_window == 200_000
    body = Body(
        answer_events(["Wings stall", " near 15 degrees", " [1]."], input_tokens=57, output_tokens=12)
    )
    api = API(streamed(body))
    llm.use_http_client(api.client())

    texts, usages = await run(llm)

    assert texts == ["Wings stall", " near 15 degrees", " [1]."]
    assert usages == [Usage(input_tokens=57, output_tokens=12)]
    assert body.closed.is_set()
    [request] = api.requests
    assert request.url.path == "/v1/messages" and request.headers["authorization"] == f"Bearer {KEY}"
    # No temperature: API version 2026-10-21 refuses sampling parameters with HTTP 400.
    assert api.sent() == {
        "model": "claude-haiku-4-5",
        "max_tokens": 200,  # the plugin's cap, below the request's 300
        "messages": [{"role": "user", "content": REQUEST.messages[0].content}],
        "system": REQUEST.system,
        "stream": True,
    }
    assert llm.connected
    system.pm.hook.opentier_shutdown()  # closes the HTTP client on the running loop
    await asyncio.sleep(0.01)
    assert not llm.connected


async def test_usage_counts_cached_prompt_tokens_too() -> None:
    events = answer_events(["Yes."], output_tokens=2)
    events[0] = message_start(input_tokens=10, cache_read=900)
    texts, usages = await run(claude(API(streamed(Body(events)))))
    assert texts == ["Yes."] and usages == [Usage(input_tokens=910, output_tokens=2)]


async def test_conversation_is_turned_into_alternating_turns() -> None:
    api = API(streamed(Body(answer_events(["Ok."]))))
    request = LLMRequest(
        messages=[
            ChatMessage("assistant", "an answer whose question was trimmed away"),
            ChatMessage("system", "Be brief."),
            ChatMessage("user", "first"),
            ChatMessage("user", "second"),
            ChatMessage("assistant", "reply"),
            ChatMessage("user", "third"),
        ],
        system="Cite sources.",
        stop=["\n\nHuman:"],
        temperature=0.7,
    )
    await run(claude(api), request)
    sent = api.sent()
    assert sent["system"] == "Cite sources.\n\nBe brief."
    assert sent["messages"] == [
        {"role": "user", "content": "first\n\nsecond"},
        {"role": "assistant", "content": "reply"},
        {"role": "user", "content": "third"},
    ]
    assert sent["stop_sequences"] == ["\n\nHuman:"] and "temperature" not in sent


async def test_error_event_mid_stream_is_unavailable_after_the_text_so_far() -> None:
    overloaded = sse(
        "error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    )
    body = Body([message_start(20), BLOCK_START, text_delta("Wings stall"), overloaded])
    texts, error = await failure(claude(API(streamed(body))))
    assert texts == ["Wings stall"]
    assert error.code == "llm_unavailable" and "overloaded_error" in error.message
    assert body.closed.is_set()


async def test_rate_limited_names_the_wait() -> None:
    api = API(
        status(
            429,
            error_body(
                "rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit"
            ),
            **{"retry-after": "17"},
        )
    )
    texts, error = await failure(claude(api))
    assert texts == [] and error.code == "llm_rate_limited"
    assert "retry after 17 s" in error.message and "req_011CSHoEeqs5C35K2UUqR7Fy" in error.message
    assert len(api.requests) == 1


async def test_rate_limited_then_answered_when_retries_allow() -> None:
    api = API(
        status(
            429, error_body("rate_limit_error", "slow down"), **{"retry-after-ms": "20", "retry-after": "1"}
        ),
        streamed(Body(answer_events(["Fine."], output_tokens=3))),
    )
    texts, usages = await run(claude(api, max_retries=1))
    assert texts == ["Fine."] and usages == [Usage(input_tokens=57, output_tokens=3)]
    assert len(api.requests) == 2


@pytest.mark.parametrize(
    ("code", "kind", "expected"),
    [
        (529, "overloaded_error", "llm_unavailable"),
        (500, "api_error", "llm_unavailable"),
        (401, "authentication_error", "llm_misconfigured"),
        (403, "permission_error", "llm_misconfigured"),
        (404, "not_found_error", "llm_misconfigured"),
        (400, "invalid_request_error", "llm_request_invalid"),
        (413, "request_too_large", "llm_request_invalid"),
    ],
)
async def test_http_errors_get_stable_codes(code: int, kind: str, expected: str) -> None:
    api = API(status(code, error_body(kind, f"{kind} happened")))
    texts, error = await failure(claude(api))
    assert texts == [] and error.code == expected
    assert f"HTTP {code}" in error.message and f"{kind} happened" in error.message


async def test_overloaded_is_retried_by_the_sdk() -> None:
    api = API(
        status(529, error_body("overloaded_error", "Overloaded"), **{"retry-after-ms": "10"}),
        status(529, error_body("overloaded_error", "Overloaded"), **{"retry-after-ms": "10"}),
    )
    _, error = await failure(claude(api, max_retries=1))
    assert error.code == "llm_unavailable" and len(api.requests) == 2


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (httpx2.ReadTimeout("The read operation timed out"), "llm_timeout"),
        (
            httpx2.RemoteProtocolError("peer closed connection without sending complete message body"),
            "llm_unavailable",
        ),
    ],
)
async def test_transport_failure_mid_stream(raised: Exception, expected: str) -> None:
    body = Body([message_start(20), BLOCK_START, text_delta("Wings")], fail=raised)
    texts, error = await failure(claude(API(streamed(body)), timeout_seconds=5))
    assert texts == ["Wings"] and error.code == expected


async def test_connection_failures_before_any_answer() -> None:
    def refuse(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectError("[Errno 111] Connection refused", request=request)

    def slow(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectTimeout("timed out", request=request)

    for handler, expected in ((refuse, "llm_unavailable"), (slow, "llm_timeout")):
        llm = ClaudeLLM(ClaudeOptions.parse({"max_retries": 0}), api_key=KEY)
        llm.use_http_client(httpx2.AsyncClient(transport=httpx2.MockTransport(handler)))
        _, error = await failure(llm)
        assert error.code == expected


async def test_closing_the_generator_closes_the_http_response() -> None:
    body = Body([message_start(20), BLOCK_START, text_delta("Wings"), text_delta(" stall")], hold=True)
    stream = claude(API(streamed(body))).stream(REQUEST)
    first = await anext(stream)
    assert first == TextDelta("Wings")
    await stream.aclose()  # what the chat does when the user cancels
    assert body.closed.is_set()
    assert body.sent < len(body.chunks) + 1  # nothing more was read


async def test_missing_key_is_a_configuration_error_before_any_call() -> None:
    api = API()
    llm = ClaudeLLM(ClaudeOptions())
    llm.use_http_client(api.client())
    _, error = await failure(llm)
    assert error.code == "llm_misconfigured" and "OPENTIER_CHAT__ANTHROPIC_API_KEY" in error.message
    assert api.requests == []


async def test_request_options_are_refused_before_any_call() -> None:
    api = API()
    request = LLMRequest(messages=[ChatMessage("user", "hi")], options={"top_p": 0.9})
    _, error = await failure(claude(api), request)
    assert error.code == "llm_request_invalid" and "top_p" in error.message
    assert api.requests == []


@pytest.mark.parametrize(
    "options",
    [{"modle": "x"}, {"max_tokens": 0}, {"temperature": 2}, {"timeout_seconds": "soon"}, {"max_retries": -1}],
)
def test_bad_options_stop_start_up(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as caught:
        ClaudeOptions.parse(options)
    assert "[plugins.options.claude]" in str(caught.value)
