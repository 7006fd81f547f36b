"""The host's server spans around streaming calls that end early: no context error in the log.

A real grpc.aio server with the host's tracing interceptor and a server-streaming method that writes
faster than its client reads, so that the handler is paused at a ``yield`` (its message waiting on
flow control) when the client cancels: the handler's generator is then closed later, from the event
loop's finalizer task, not from the call's own task.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator

import grpc
import grpc.aio
import pytest
import pytest_asyncio
from opentelemetry import trace

from opentier.host.tracing import ServerTracingInterceptor

SERVICE = "opentier.test.Streams"
PIECE = b"x" * 16 * 1024
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


async def pieces(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    for _ in range(10_000):  # far more than flow control lets through to a client that does not read
        yield PIECE


async def trace_ids(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    for _ in range(3):
        await asyncio.sleep(0.01)
        yield format(trace.get_current_span().get_span_context().trace_id, "032x").encode()


@pytest_asyncio.fixture
async def channel() -> AsyncIterator[grpc.aio.Channel]:
    server = grpc.aio.server(interceptors=[ServerTracingInterceptor()])
    handlers = {
        "Pieces": grpc.unary_stream_rpc_method_handler(pieces),
        "TraceIds": grpc.unary_stream_rpc_method_handler(trace_ids),
    }
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, handlers)])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as opened:
            yield opened
    finally:
        await server.stop(None)


async def test_a_streaming_handler_runs_in_its_callers_trace_at_every_step(channel: grpc.aio.Channel) -> None:
    call = channel.unary_stream(f"/{SERVICE}/TraceIds")(
        b"", metadata=(("traceparent", f"00-{TRACE_ID}-00f067aa0ba902b7-01"),), timeout=10
    )
    assert [message async for message in call] == [TRACE_ID.encode()] * 3
    assert not trace.get_current_span().get_span_context().is_valid  # nothing leaked into this task


async def test_a_stream_the_client_abandons_mid_write_leaves_no_context_error(
    channel: grpc.aio.Channel, caplog: pytest.LogCaptureFixture
) -> None:
    method = channel.unary_stream(f"/{SERVICE}/Pieces")
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            call = method(b"", timeout=10)
            assert await call.read() == PIECE
            await asyncio.sleep(0.2)  # the handler fills the window and waits at its yield
            call.cancel()
            assert await call.code() == grpc.StatusCode.CANCELLED
        await asyncio.sleep(0.2)
        gc.collect()
        await asyncio.sleep(0.2)
    problems = [
        r for r in caplog.records if r.name.startswith("opentelemetry") or "Context" in r.getMessage()
    ]
    assert not problems, [r.getMessage() for r in problems]
