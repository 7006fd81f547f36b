"""The ``openai-compatible`` LLM against the chat completions API's real streaming wire format.

Recorded responses are replayed through httpx's own transport hook (``httpx.MockTransport``): chunks
``data: {"object": "chat.completion.chunk", ...}``, the usage chunk that ``stream_options.include_usage``
asks for (empty ``choices``), ``data: [DONE]``, an error object in the middle of the stream, error bodies
of OpenAI's, vLLM's and Ollama's shapes. Then a real HTTP server on loopback, in a thread, proves the
real client path: streaming over a socket, and the connection closed when the chat stops reading.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

import httpx
import pytest
from opentier_llm_openai import OpenAICompatibleLLM, OpenAIOptions

from opentier.components import LLM, ChatMessage, LLMRequest, TextDelta, Usage
from opentier.config import ChatSettings, PluginSettings, Settings
from opentier.errors import ConfigError, LLMError
from opentier.plugin_manager import PluginSelection, load_plugins

MODEL = "llama3.2:3b"
REQUEST = LLMRequest(
    messages=[ChatMessage("user", "Sources:\n[1] Wings stall near 15 degrees.\n\nWhen do wings stall?")],
    system="Answer from the numbered sources and cite them like [1].",
    max_output_tokens=300,
    temperature=0.2,
    stop=["\n\nUser:"],
)


def chunk(content: str | None = None, *, role: bool = False, finish: str | None = None) -> dict[str, Any]:
    delta: dict[str, Any] = {}
    if role:
        delta["role"] = "assistant"
    if content is not None:
        delta["content"] = content
    return {
        "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
        "object": "chat.completion.chunk",
        "created": 1741570283,
        "model": MODEL,
        "system_fingerprint": "fp_ollama",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }


def usage_chunk(prompt: int, completion: int) -> dict[str, Any]:
    return {
        "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
        "object": "chat.completion.chunk",
        "created": 1741570283,
        "model": MODEL,
        "choices": [],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }


def data(payload: dict[str, Any] | str) -> bytes:
    text = payload if isinstance(payload, str) else json.dumps(payload)
    return f"data: {text}\n\n".encode()


def answer_events(pieces: Sequence[str], usage: tuple[int, int] | None = (61, 9)) -> list[bytes]:
    events = [
        data(chunk("", role=True)),
        *(data(chunk(piece)) for piece in pieces),
        data(chunk(finish="stop")),
    ]
    if usage is not None:
        events.append(data(usage_chunk(*usage)))
    return [*events, data("[DONE]")]


class Body(httpx.AsyncByteStream):
    """A response body sent event by event; with ``hold``, it does not end (a model still generating)."""

    def __init__(self, chunks: Sequence[bytes], *, hold: bool = False) -> None:
        self.chunks = list(chunks)
        self.hold = hold
        self.closed = asyncio.Event()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self.chunks:
            yield piece
            await asyncio.sleep(0)
        if self.hold:
            await asyncio.Event().wait()

    async def aclose(self) -> None:
        self.closed.set()


class Server:
    """The recorded responses, served in order through httpx's transport hook; keeps what was sent."""

    def __init__(self, *responses: Callable[[], httpx.Response]) -> None:
        self.responses = list(responses)
        self.requests: list[httpx.Request] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.responses.pop(0)()

    def sent(self, index: int = 0) -> dict[str, Any]:
        body: dict[str, Any] = json.loads(self.requests[index].content)
        return body


def streamed(body: Body) -> Callable[[], httpx.Response]:
    return lambda: httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=body)


def status(code: int, body: Any, **headers: str) -> Callable[[], httpx.Response]:
    if isinstance(body, str):
        return lambda: httpx.Response(code, text=body, headers=headers)
    return lambda: httpx.Response(code, json=body, headers=headers)


def model(server: Server | None = None, api_key: str | None = None, **options: Any) -> OpenAICompatibleLLM:
    llm = OpenAICompatibleLLM(
        OpenAIOptions.parse(
            {"base_url": "http://models.test/v1", "model": MODEL, "max_retries": 0, **options}
        ),
        api_key=api_key,
    )
    if server is not None:
        llm.use_transport(httpx.MockTransport(server.handler))
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


async def test_plugin_streams_text_in_order_with_the_servers_usage() -> None:
    system = load_plugins(selection=PluginSelection(allow=["openai-compatible"]))
    assert not system.failures, system.failures
    settings = Settings(
        chat=ChatSettings(openai_api_key="sk-local-0123456789"),  # type: ignore[arg-type]
        plugins=PluginSettings(
            options={
                "openai-compatible": {
                    "base_url": "http://models.test/v1/",
                    "model": MODEL,
                    "context_window": 32768,
                    "extra_body": {"top_k": 20},
                }
            }
        ),
    )
    system.pm.hook.opentier_startup(settings=settings)
    llm = system.registry.get_typed(LLM, "openai-compatible")
    assert isinstance(llm, OpenAICompatibleLLM) and llm.context_window == 32768
    body = Body(answer_events(["Wings stall", " near 15 degrees", " [1]."], usage=(61, 9)))
    server = Server(streamed(body))
    llm.use_transport(httpx.MockTransport(server.handler))

    texts, usages = await run(llm)

    assert texts == ["Wings stall", " near 15 degrees", " [1]."]
    assert usages == [Usage(input_tokens=61, output_tokens=9)]
    assert body.closed.is_set()
    [request] = server.requests
    assert str(request.url) == "http://models.test/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer sk-local-0123456789"
    assert server.sent() == {
        "top_k": 20,
        "model": MODEL,
        "messages": [
            {"role": "system", "content": REQUEST.system},
            {"role": "user", "content": REQUEST.messages[0].content},
        ],
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": 300,
        "temperature": 0.2,
        "stop": ["\n\nUser:"],
    }
    assert llm.connected
    system.pm.hook.opentier_shutdown()  # closes the HTTP client on the running loop
    await asyncio.sleep(0.01)
    assert not llm.connected


async def test_without_usage_from_the_server_it_is_counted() -> None:
    server = Server(streamed(Body(answer_events(["Twelve chars"], usage=None))))
    texts, usages = await run(model(server, include_usage=False))
    assert texts == ["Twelve chars"]
    prompt = len(REQUEST.system or "") // 4 + len(REQUEST.messages[0].content) // 4
    assert usages == [Usage(input_tokens=prompt, output_tokens=3)]
    assert "stream_options" not in server.sent() and "authorization" not in server.requests[0].headers


async def test_sse_details_comments_multiline_data_and_crlf() -> None:
    raw = (
        b": keep-alive\r\n\r\n"
        + b'data: {"object":"chat.completion.chunk","choices":[{"index":0,\r\ndata: "delta":{"content":"Hi"}}]}\r\n\r\n'
        + b'data: {"object":"chat.completion.chunk","choices":[{"index":1,"delta":{"content":"other choice"}}]}\r\n\r\n'
        + b"data: [DONE]\r\n\r\n"
        + b'data: {"choices":[{"index":0,"delta":{"content":"after DONE"}}]}\r\n\r\n'
    )
    texts, _ = await run(model(Server(streamed(Body([raw])))))
    assert texts == ["Hi"]


async def test_a_server_that_ignores_stream_answers_whole() -> None:
    completion = {
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "All at once [1]."}}],
        "usage": {"prompt_tokens": 40, "completion_tokens": 6},
    }
    texts, usages = await run(model(Server(status(200, completion))))
    assert texts == ["All at once [1]."] and usages == [Usage(input_tokens=40, output_tokens=6)]


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            {"message": "The server had an error while processing your request.", "type": "server_error"},
            "llm_unavailable",
        ),
        (
            {
                "object": "error",
                "message": "maximum context length is 4096 tokens",
                "type": "BadRequestError",
                "code": 400,
            },
            "llm_request_invalid",
        ),
        ("model runner has unexpectedly stopped", "llm_failed"),
    ],
)
async def test_error_mid_stream_after_the_text_so_far(error: Any, expected: str) -> None:
    body = Body([data(chunk("", role=True)), data(chunk("Wings stall")), data({"error": error})])
    texts, failed = await failure(model(Server(streamed(body))))
    assert texts == ["Wings stall"] and failed.code == expected
    assert body.closed.is_set()


async def test_rate_limited_names_the_wait() -> None:
    error = {
        "error": {
            "message": "Rate limit reached for requests",
            "type": "requests",
            "code": "rate_limit_exceeded",
        }
    }
    server = Server(status(429, error, **{"retry-after": "20"}))
    _, failed = await failure(model(server))
    assert failed.code == "llm_rate_limited" and "retry after 20 s" in failed.message
    assert "Rate limit reached" in failed.message


async def test_rate_limited_then_answered_after_retry_after() -> None:
    server = Server(
        status(429, {"error": {"message": "slow down", "type": "rate_limit_error"}}, **{"retry-after": "0"}),
        streamed(Body(answer_events(["Fine."], usage=(5, 2)))),
    )
    texts, usages = await run(model(server, max_retries=2))
    assert texts == ["Fine."] and usages == [Usage(input_tokens=5, output_tokens=2)]
    assert len(server.requests) == 2


async def test_a_wait_longer_than_allowed_is_not_waited_for() -> None:
    server = Server(status(429, {"error": "too many requests"}, **{"retry-after": "3600"}))
    started = time.monotonic()
    _, failed = await failure(model(server, max_retries=3, max_retry_wait_seconds=5))
    assert failed.code == "llm_rate_limited" and len(server.requests) == 1
    assert time.monotonic() - started < 2


async def test_unavailable_after_the_retries() -> None:
    server = Server(
        status(503, "Service Unavailable", **{"retry-after": "0"}),
        status(503, "Service Unavailable", **{"retry-after": "0"}),
    )
    _, failed = await failure(model(server, max_retries=1))
    assert failed.code == "llm_unavailable" and "HTTP 503" in failed.message
    assert len(server.requests) == 2


@pytest.mark.parametrize(
    ("code", "body", "expected", "hint"),
    [
        (
            401,
            {
                "error": {
                    "message": "Incorrect API key provided",
                    "type": "invalid_request_error",
                    "code": "invalid_api_key",
                }
            },
            "llm_misconfigured",
            "OPENTIER_CHAT__OPENAI_API_KEY",
        ),
        (
            404,
            {"error": 'model "llama9" not found, try pulling it first'},
            "llm_misconfigured",
            "base_url and model",
        ),
        (
            400,
            {
                "error": {
                    "message": "This model's maximum context length is 8192 tokens",
                    "type": "invalid_request_error",
                    "code": "context_length_exceeded",
                }
            },
            "llm_request_invalid",
            "maximum context length",
        ),
        (500, {"detail": "Internal Server Error"}, "llm_unavailable", "Internal Server Error"),
    ],
)
async def test_http_errors_get_stable_codes(code: int, body: Any, expected: str, hint: str) -> None:
    _, failed = await failure(model(Server(status(code, body))))
    assert failed.code == expected and f"HTTP {code}" in failed.message and hint in failed.message


async def test_closing_the_generator_closes_the_response() -> None:
    body = Body([data(chunk("", role=True)), data(chunk("Wings")), data(chunk(" stall"))], hold=True)
    stream = model(Server(streamed(body))).stream(REQUEST)
    assert await anext(stream) == TextDelta("Wings")
    await stream.aclose()  # what the chat does when the user cancels
    assert body.closed.is_set()


async def test_missing_model_and_bad_request_options_fail_before_any_call() -> None:
    server = Server()
    llm = OpenAICompatibleLLM(OpenAIOptions())
    llm.use_transport(httpx.MockTransport(server.handler))
    _, failed = await failure(llm)
    assert failed.code == "llm_misconfigured" and "model" in failed.message
    request = LLMRequest(messages=[ChatMessage("user", "hi")], options={"logit_bias": {}})
    _, failed = await failure(model(server), request)
    assert failed.code == "llm_request_invalid" and "top_p" in failed.message
    assert server.requests == []


@pytest.mark.parametrize(
    "options",
    [
        {"base_url": "localhost:11434"},
        {"model": ""},
        {"max_retries": -1},
        {"extra_body": "x"},
        {"url": "http://a"},
    ],
)
def test_bad_options_stop_start_up(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as caught:
        OpenAIOptions.parse(options)
    assert "[plugins.options.openai-compatible]" in str(caught.value)


# --- a real server on loopback -----------------------------------------------------------------


class Streaming(http.server.BaseHTTPRequestHandler):
    """Streams SSE chunks every 10 ms, as a local model server does, and notes when the client left."""

    pieces: int = 8
    left = threading.Event()
    received: list[dict[str, Any]] = []  # noqa: RUF012

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        type(self).received.append(json.loads(self.rfile.read(length)))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        try:
            for number in range(self.pieces):
                self.wfile.write(data(chunk(f"word{number} ")))
                self.wfile.flush()
                time.sleep(0.01)
            self.wfile.write(data(usage_chunk(17, self.pieces)) + data("[DONE]"))
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            type(self).left.set()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def loopback() -> Iterator[tuple[str, type[Streaming]]]:
    handler = type("Handler", (Streaming,), {"left": threading.Event(), "received": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


async def test_real_server_streams_over_a_socket(loopback: tuple[str, type[Streaming]]) -> None:
    url, handler = loopback
    llm = model(base_url=url)
    texts, usages = await run(llm)
    assert "".join(texts) == "".join(f"word{n} " for n in range(8))
    assert usages == [Usage(input_tokens=17, output_tokens=8)]
    assert handler.received[0]["model"] == MODEL and handler.received[0]["stream"] is True
    await llm.aclose()


async def test_real_server_sees_the_client_leave_when_the_chat_stops(
    loopback: tuple[str, type[Streaming]],
) -> None:
    url, handler = loopback
    handler.pieces = 2000  # 20 s of answer: far longer than the test
    llm = model(base_url=url)
    stream = llm.stream(REQUEST)
    assert await anext(stream) == TextDelta("word0 ")
    await stream.aclose()
    left = await asyncio.to_thread(handler.left.wait, 5)
    assert left, "the server kept streaming to a client that had stopped"
    await llm.aclose()


async def test_nothing_listening_is_unavailable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    _, failed = await failure(model(base_url=f"http://127.0.0.1:{port}/v1"))
    assert failed.code == "llm_unavailable" and f"127.0.0.1:{port}" in failed.message
