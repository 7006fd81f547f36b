"""The ``openai-compatible`` LLM: a streamed ``POST {base_url}/chat/completions`` with httpx."""

from __future__ import annotations

import asyncio
import email.utils
import json
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import httpx

from opentier.components import LLM, LLMEvent, LLMRequest, TextDelta, Usage
from opentier.errors import LLMConfigError, LLMError, LLMRequestError, LLMTimeoutError, LLMUnavailableError
from opentier_llm_openai import errors, sse
from opentier_llm_openai.options import OpenAIOptions

#: What a request's ``llm_options`` may set, and the types each accepts.
REQUEST_OPTIONS: Mapping[str, tuple[type, ...]] = {
    "top_p": (int, float),
    "seed": (int,),
    "presence_penalty": (int, float),
    "frequency_penalty": (int, float),
}
#: Most bytes of an error response read to describe the error.
ERROR_BODY_LIMIT = 64 * 1024
#: Back-off between retries when the server does not say how long to wait: 0.5 s, 1 s, 2 s... at most 8 s.
FIRST_BACKOFF_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 8.0


class OpenAICompatibleLLM(LLM):
    """A model behind any server that speaks the OpenAI chat completions API, streamed over SSE.

    Usage is the server's own count when it sends one (``stream_options.include_usage``), else counted
    here (about four characters a token). Closing the stream early closes the HTTP response, and so
    the connection: servers stop generating when their client goes away.
    """

    name = "openai-compatible"
    description = "Any OpenAI-compatible chat server (Ollama, vLLM, llama.cpp, LM Studio), streamed."

    def __init__(self, options: OpenAIOptions | None = None, api_key: str | None = None) -> None:
        self._transport: httpx.AsyncBaseTransport | None = None
        self._client: httpx.AsyncClient | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self.configure(options or OpenAIOptions(), api_key)

    def configure(self, options: OpenAIOptions, api_key: str | None) -> None:
        """Apply options and key (at start-up); the HTTP client is made again at the next call."""
        self.options = options
        self.context_window = options.context_window
        self._api_key = api_key
        self._client = None

    def use_transport(self, transport: httpx.AsyncBaseTransport | None) -> None:
        """Send the calls through ``transport`` (a proxy's, or a test's recorded responses)."""
        self._transport = transport
        self._client = None

    @property
    def connected(self) -> bool:
        """Whether a client (and so, perhaps, open connections) exists."""
        return self._client is not None

    async def aclose(self) -> None:
        """Close the HTTP client and its connections (the host's shutdown schedules it)."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def client(self) -> httpx.AsyncClient:
        """The HTTP client of the running event loop, made on first use (connections are per loop)."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            options = self.options
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(options.timeout_seconds, connect=options.connect_timeout_seconds),
                transport=self._transport,
                follow_redirects=False,
            )
            self._client_loop = loop
        return self._client

    def body(self, request: LLMRequest) -> dict[str, Any]:
        """The JSON body of the chat completions call for ``request``."""
        options = self.options
        if options.model is None:
            raise LLMConfigError(
                "the openai-compatible model needs a model name: "
                "set model in [plugins.options.openai-compatible]"
            )
        messages = [{"role": "system", "content": request.system}] if request.system else []
        messages += [{"role": message.role, "content": message.content} for message in request.messages]
        if not any(message["role"] == "user" for message in messages):
            raise LLMRequestError("the request to openai-compatible has no user message")
        max_tokens = request.max_output_tokens
        if options.max_tokens is not None:
            max_tokens = min(max_tokens, options.max_tokens)
        body: dict[str, Any] = {
            **options.extra_body,
            "model": options.model,
            "messages": messages,
            "stream": True,
            "max_tokens": max_tokens,
            "temperature": options.temperature if options.temperature is not None else request.temperature,
        }
        if options.include_usage:
            body["stream_options"] = {"include_usage": True}
        stop = [sequence for sequence in request.stop if sequence]
        if stop:
            body["stop"] = stop
        for key, value in request.options.items():
            accepted = REQUEST_OPTIONS.get(key)
            if accepted is None:
                raise LLMRequestError(
                    f"llm_options has unknown option {key!r} for openai-compatible; "
                    f"known: {', '.join(REQUEST_OPTIONS)}"
                )
            if isinstance(value, bool) or not isinstance(value, accepted):
                raise LLMRequestError(f"llm_options {key} must be a number, not {value!r}")
            body[key] = value
        return body

    async def stream(self, request: LLMRequest) -> AsyncIterator[LLMEvent]:
        body = self.body(request)
        answer: list[str] = []
        reported: Mapping[str, Any] | None = None
        async with self._response(body) as response:
            try:
                if response.headers.get("content-type", "").startswith("application/json"):
                    # A server that ignored "stream": the whole completion at once.
                    chunks: AsyncIterator[Mapping[str, Any]] = _whole(await response.aread())
                else:
                    chunks = _chunks(response)
                async for chunk in chunks:
                    usage = chunk.get("usage")
                    if isinstance(usage, Mapping) and usage:
                        reported = usage
                    for choice in chunk.get("choices") or ():
                        if choice.get("index", 0) != 0:
                            continue
                        part = choice.get("delta") or choice.get("message") or {}
                        content = part.get("content")
                        if isinstance(content, str) and content:
                            answer.append(content)
                            yield TextDelta(content)
            except httpx.TimeoutException as err:
                raise LLMTimeoutError(
                    f"the model server stalled for {self.options.timeout_seconds:g} s mid-answer "
                    "(plugin option timeout_seconds)"
                ) from err
            except httpx.TransportError as err:
                raise LLMUnavailableError(
                    f"the connection to the model server broke mid-answer: {err!r}"
                ) from err
        yield self._usage(request, "".join(answer), reported)

    def _usage(self, request: LLMRequest, answer: str, reported: Mapping[str, Any] | None) -> Usage:
        prompt = reported.get("prompt_tokens") if reported else None
        completion = reported.get("completion_tokens") if reported else None
        if not isinstance(prompt, int):
            parts = [request.system or "", *(message.content for message in request.messages)]
            prompt = sum(self.count_tokens(part) for part in parts if part)
        if not isinstance(completion, int):
            completion = self.count_tokens(answer) if answer else 0
        return Usage(input_tokens=prompt, output_tokens=completion)

    @asynccontextmanager
    async def _response(self, body: Mapping[str, Any]) -> AsyncIterator[httpx.Response]:
        """The streaming response, after retrying what may pass on a second try; closed on exit."""
        options = self.options
        client = self.client()
        url = f"{options.base_url}/chat/completions"
        headers = {"Accept": "text/event-stream"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        attempt = 0
        while True:
            wait = min(FIRST_BACKOFF_SECONDS * 2**attempt, MAX_BACKOFF_SECONDS)
            try:
                response = await client.send(
                    client.build_request("POST", url, json=body, headers=headers), stream=True
                )
            except httpx.ConnectTimeout as err:
                failure: LLMError = LLMTimeoutError(
                    f"no connection to the model server at {options.base_url} within "
                    f"{options.connect_timeout_seconds:g} s"
                )
                cause: BaseException = err
            except httpx.TimeoutException as err:
                raise LLMTimeoutError(
                    f"the model server did not start answering within {options.timeout_seconds:g} s "
                    "(plugin option timeout_seconds)"
                ) from err
            except httpx.TransportError as err:
                failure, cause = (
                    LLMUnavailableError(f"cannot reach the model server at {options.base_url}: {err!r}"),
                    err,
                )
            else:
                if response.is_success:
                    try:
                        yield response
                    finally:
                        await response.aclose()
                    return
                content = await _read_capped(response)
                await response.aclose()
                retry_after = response.headers.get("retry-after")
                failure = errors.for_status(
                    response.status_code, _json_or_text(content), retry_after=retry_after
                )
                cause = failure
                if response.status_code not in errors.RETRYABLE:
                    raise failure
                asked = _seconds(retry_after)
                if asked is not None:
                    if asked > options.max_retry_wait_seconds:
                        raise failure
                    wait = asked
            if attempt >= options.max_retries:
                raise failure from cause
            attempt += 1
            await asyncio.sleep(wait)


async def _chunks(response: httpx.Response) -> AsyncIterator[Mapping[str, Any]]:
    """The JSON chunks of an SSE stream, up to ``data: [DONE]``; an error event raises."""
    async for event in sse.events(response.aiter_lines()):
        if event.data.strip() == "[DONE]":
            return
        chunk = _json_or_text(event.data.encode())
        if not isinstance(chunk, dict):
            raise LLMError(f"the model server sent something that is not a JSON object: {event.data[:200]!r}")
        if chunk.get("error") or event.event == "error":
            raise errors.in_stream(chunk)
        yield chunk


async def _whole(content: bytes) -> AsyncIterator[Mapping[str, Any]]:
    completion = _json_or_text(content)
    if not isinstance(completion, dict):
        raise LLMError(
            f"the model server answered with something that is not a completion: {content[:200]!r}"
        )
    if completion.get("error"):
        raise errors.in_stream(completion)
    yield completion


async def _read_capped(response: httpx.Response) -> bytes:
    content = b""
    async for piece in response.aiter_bytes():
        content += piece
        if len(content) >= ERROR_BODY_LIMIT:
            break
    return content[:ERROR_BODY_LIMIT]


def _json_or_text(content: bytes) -> Any:
    text = content.decode("utf-8", errors="replace")
    try:
        return json.loads(text)
    except ValueError:
        return text.strip()


def _seconds(retry_after: str | None) -> float | None:
    """``Retry-After`` in seconds: a number, or an HTTP date."""
    if not retry_after:
        return None
    try:
        return max(0.0, float(retry_after))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(retry_after)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
