"""The ``claude`` LLM: the anthropic SDK's streaming Messages API, errors mapped to OpenTier's codes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import httpx2
from anthropic.types import MessageParam

from opentier.components import LLM, ChatMessage, LLMEvent, LLMRequest, TextDelta, Usage
from opentier.errors import LLMConfigError, LLMRequestError
from opentier_llm_claude.errors import map_error
from opentier_llm_claude.options import ClaudeOptions

API_KEY_VARIABLE = "OPENTIER_CHAT__ANTHROPIC_API_KEY"


class ClaudeLLM(LLM):
    """Claude, streamed. Usage is the API's own count; closing the stream early closes the HTTP response."""

    name = "claude"
    description = (
        "Anthropic's Claude, streamed through the Messages API (key: OPENTIER_CHAT__ANTHROPIC_API_KEY)."
    )

    def __init__(self, options: ClaudeOptions | None = None, api_key: str | None = None) -> None:
        self._http_client: httpx2.AsyncClient | None = None
        self._client: anthropic.AsyncAnthropic | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self.configure(options or ClaudeOptions(), api_key)

    def configure(self, options: ClaudeOptions, api_key: str | None) -> None:
        """Apply options and key (at start-up); the SDK client is made again at the next call."""
        self.options = options
        self.context_window = options.context_window
        self._api_key = api_key
        self._client = None

    def use_http_client(self, client: httpx2.AsyncClient | None) -> None:
        """Send the calls through ``client`` (a proxy's transport, or a test's recorded responses)."""
        self._http_client = client
        self._client = None

    @property
    def connected(self) -> bool:
        """Whether a client (and so, perhaps, open connections) exists."""
        return self._client is not None

    async def aclose(self) -> None:
        """Close the SDK client and its connections (the host's shutdown schedules it)."""
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    def client(self) -> anthropic.AsyncAnthropic:
        """The SDK client of the running event loop, made on first use (connections are per loop)."""
        if not self._api_key:
            raise LLMConfigError(f"the claude model needs an Anthropic API key: set {API_KEY_VARIABLE}")
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            options = self.options
            self._client = anthropic.AsyncAnthropic(
                api_key=self._api_key,
                base_url=options.base_url,
                timeout=httpx2.Timeout(options.timeout_seconds, connect=options.connect_timeout_seconds),
                max_retries=options.max_retries,
                http_client=self._http_client,
            )
            self._client_loop = loop
        return self._client

    def parameters(self, request: LLMRequest) -> dict[str, Any]:
        """The Messages API parameters for ``request`` (without ``stream``).

        No ``temperature``: the API version the SDK speaks (2026-10-21) refuses every sampling
        parameter (temperature, top_p, top_k) with HTTP 400, on every model, so ``request.temperature``
        is not sent. A request's ``llm_options`` are refused for the same reason: there is nothing
        left to tune per request.
        """
        if request.options:
            raise LLMRequestError(
                f"the claude model takes no llm_options (given: {', '.join(sorted(request.options))})"
            )
        system, messages = _conversation(request)
        max_tokens = request.max_output_tokens
        if self.options.max_tokens is not None:
            max_tokens = min(max_tokens, self.options.max_tokens)
        parameters: dict[str, Any] = {
            "model": self.options.model,
            "max_tokens": max_tokens,
            "messages": messages,
        }
        if system:
            parameters["system"] = system
        stop = [sequence for sequence in request.stop if sequence.strip()]
        if stop:
            parameters["stop_sequences"] = stop
        return parameters

    async def stream(self, request: LLMRequest) -> AsyncIterator[LLMEvent]:
        parameters = self.parameters(request)
        timeout = self.options.timeout_seconds
        try:
            stream = await self.client().messages.create(**parameters, stream=True)
        except (anthropic.AnthropicError, httpx2.HTTPError) as err:
            raise map_error(err, timeout_seconds=timeout) from err
        input_tokens = output_tokens = 0
        try:
            async for event in stream:
                if event.type == "content_block_delta":
                    if event.delta.type == "text_delta" and event.delta.text:
                        yield TextDelta(event.delta.text)
                elif event.type == "message_start":
                    usage = event.message.usage
                    input_tokens = _prompt_tokens(
                        usage.input_tokens, usage.cache_creation_input_tokens, usage.cache_read_input_tokens
                    )
                    output_tokens = usage.output_tokens
                elif event.type == "message_delta":
                    delta_usage = event.usage
                    output_tokens = delta_usage.output_tokens
                    if delta_usage.input_tokens is not None:
                        input_tokens = _prompt_tokens(
                            delta_usage.input_tokens,
                            delta_usage.cache_creation_input_tokens,
                            delta_usage.cache_read_input_tokens,
                        )
        except (anthropic.AnthropicError, httpx2.HTTPError) as err:
            raise map_error(err, timeout_seconds=timeout) from err
        finally:
            # Also on aclose() from a cancelled chat: the HTTP response is closed, the API stops.
            await stream.close()
        yield Usage(input_tokens=input_tokens, output_tokens=output_tokens)


def _prompt_tokens(fresh: int, cache_written: int | None, cache_read: int | None) -> int:
    """Every token of the prompt: the API counts cached ones apart from ``input_tokens``."""
    return fresh + (cache_written or 0) + (cache_read or 0)


def _conversation(request: LLMRequest) -> tuple[str, list[MessageParam]]:
    """The system text and the alternating user/assistant turns the Messages API requires.

    ``system`` messages join the system text; consecutive turns of one role are joined; assistant turns
    before the first user turn (left over when history was trimmed) are dropped.
    """
    system = [request.system] if request.system else []
    turns: list[ChatMessage] = []
    for message in request.messages:
        if message.role == "system":
            system.append(message.content)
        elif not turns and message.role == "assistant":
            continue
        elif turns and turns[-1].role == message.role:
            turns[-1] = ChatMessage(message.role, f"{turns[-1].content}\n\n{message.content}")
        else:
            turns.append(message)
    if not turns:
        raise LLMRequestError("the request to claude has no user message")
    return "\n\n".join(system), [_message(turn) for turn in turns]


def _message(turn: ChatMessage) -> MessageParam:
    if turn.role == "assistant":
        return {"role": "assistant", "content": turn.content}
    return {"role": "user", "content": turn.content}
