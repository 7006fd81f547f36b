"""The real host under more chat turns than it runs at once: admission in arrival order within each
turn's deadline, ``host_busy`` (retryable) instead of ``internal`` when it cannot cope, and a model
held back by a client that does not read."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
import pytest_asyncio

from opentier.config import Settings
from opentier.errors import HostBusyError
from opentier.gateway.errors import status_for
from opentier.gateway.host_errors import remote_error
from opentier.generated.intelligence.v1 import chat_pb2, conversations_pb2
from tests.engine.chatting import Step

from .chat_host import ChatHost, answer_text, kinds, library, serve_chat_host
from .conftest import AUTH, trailer

COMPLETE = conversations_pb2.MESSAGE_STATUS_COMPLETE
CANCELLED = conversations_pb2.MESSAGE_STATUS_CANCELLED
FAILED = conversations_pb2.MESSAGE_STATUS_FAILED
#: A database pool of two connections that gives up waiting for one after a quarter of a second.
SMALL_POOL = {"pool_size": 1, "connect_timeout_seconds": 0.25}


@pytest_asyncio.fixture
async def chat_host(
    db_settings: Settings, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[ChatHost]:
    overrides: dict[str, Any] = dict(getattr(request, "param", {}))
    database = overrides.pop("database", None)
    async with serve_chat_host(db_settings, tmp_path, database=database, **overrides) as host:
        yield host


async def ask_within(host: ChatHost, message: str, seconds: float) -> list[chat_pb2.ChatEvent]:
    """One whole turn, by a caller whose own deadline is ``seconds`` away."""
    call = host.chat.Chat(metadata=AUTH, timeout=seconds)
    await call.write(host.start(message))
    await call.done_writing()
    return await rest(call)


async def rest(call: Any) -> list[chat_pb2.ChatEvent]:
    """The events of ``call`` still to come (read with ``read``, as the test read the first ones)."""
    events = []
    while (event := await call.read()) is not grpc.aio.EOF:
        events.append(event)
    return events


async def in_flight(host: ChatHost, stop: asyncio.Event) -> int:
    """The most model streams of ``host.scripted`` seen running at once until ``stop``."""
    most = 0
    while not stop.is_set():
        most = max(most, len(host.scripted.requests) - len(host.scripted.endings))
        await asyncio.sleep(0.002)
    return most


@pytest.mark.parametrize("chat_host", [{"max_concurrent_turns": 2, "database": SMALL_POOL}], indirect=True)
async def test_many_turns_at_once_on_a_small_pool_all_complete(chat_host: ChatHost) -> None:
    collection_id, _ = await library(chat_host)
    chat_host.scripted.script = ["Wings ", 0.02, "make lift."]
    stop = asyncio.Event()
    watcher = asyncio.ensure_future(in_flight(chat_host, stop))
    turns = [
        chat_host.ask(f"How do wings make lift? ({i})", collection_ids=[collection_id]) for i in range(100)
    ]
    results = await asyncio.gather(*turns)
    stop.set()
    most = await watcher
    for events in results:
        assert kinds(events)[-1] == "done" and "error" not in kinds(events), events[-3:]
        assert events[-1].done.status == COMPLETE and answer_text(events) == "Wings make lift."
    assert most == 2  # both places in use, never more


@pytest.mark.parametrize("chat_host", [{"max_concurrent_turns": 1, "max_queued_turns": 1}], indirect=True)
async def test_a_turn_waits_for_a_place_until_its_deadline_and_a_full_queue_refuses_at_once(
    chat_host: ChatHost,
) -> None:
    chat_host.scripted.queued = [["Long ", 3.0, "answer."]]
    first = chat_host.chat.Chat(metadata=AUTH, timeout=30)
    await first.write(chat_host.start("Hold the only place"))
    assert (await first.read()).HasField("started")

    began = time.monotonic()
    waiting = asyncio.ensure_future(ask_within(chat_host, "Wait behind it", 1.5))
    await asyncio.sleep(0.3)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await chat_host.ask("One too many")
    assert time.monotonic() - began < 1.0  # refused at once, not after a wait
    with pytest.raises(grpc.aio.AioRpcError) as late:
        await waiting
    waited = time.monotonic() - began
    assert 1.0 < waited < 1.5  # within its own deadline, which keeps a margin for the answer

    for failure in (refused.value, late.value):
        assert failure.code() == grpc.StatusCode.UNAVAILABLE and trailer(failure) == "host_busy"
        error = remote_error(failure, "ChatService/Chat", retry_after=5)
        assert isinstance(error, HostBusyError) and error.retry_after and status_for(error) == 503
    assert "chat.max_queued_turns" in (refused.value.details() or "")
    assert "chat.max_concurrent_turns" in (late.value.details() or "")

    listed = await chat_host.conversations.ListConversations(
        conversations_pb2.ListConversationsRequest(caller=chat_host.caller()), metadata=AUTH, timeout=10
    )
    assert [c.title for c in listed.conversations] == ["Hold the only place"]  # the others left nothing
    first.cancel()


@pytest.mark.parametrize("chat_host", [{"max_concurrent_turns": 1}], indirect=True)
async def test_a_turn_cancelled_while_it_waits_ends_at_once(chat_host: ChatHost) -> None:
    chat_host.scripted.queued = [["Long ", 3.0, "answer."]]
    first = chat_host.chat.Chat(metadata=AUTH, timeout=30)
    await first.write(chat_host.start("Hold the only place"))
    assert (await first.read()).HasField("started")

    second = chat_host.chat.Chat(metadata=AUTH, timeout=30)
    await second.write(chat_host.start("Never mind"))
    await asyncio.sleep(0.2)
    began = time.monotonic()
    await second.write(chat_pb2.ChatRequest(cancel=chat_pb2.ChatCancel(reason="changed my mind")))
    events = await rest(second)
    assert time.monotonic() - began < 1.0  # not after the running turn's 3 s
    assert kinds(events) == ["started", "usage", "done"] and events[-1].done.status == CANCELLED
    assert chat_host.scripted.requests[-1].messages[-1].content != "Never mind"  # no model call
    first.cancel()


class PoolWaitGaveUp(logging.Handler):
    """Sets ``event`` when the host reports that no database connection came free in time."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.event = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "no database connection came free" in record.getMessage():
            self.event.set()


@contextlib.contextmanager
def watching_pool() -> Iterator[PoolWaitGaveUp]:
    handler = PoolWaitGaveUp()
    logger = logging.getLogger("opentier.engine.chat.admission")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


@pytest.mark.parametrize("chat_host", [{"database": SMALL_POOL}], indirect=True)
async def test_a_database_pool_timeout_is_host_busy_not_internal(chat_host: ChatHost) -> None:
    engine = chat_host.server.runtime.db if chat_host.server.runtime else None
    assert engine is not None
    async with contextlib.AsyncExitStack() as held:
        for _ in range(2):  # every connection of the pool
            await held.enter_async_context(engine.connect())
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await chat_host.ask("Is anyone there?")
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE and trailer(info.value) == "host_busy"
    assert "database" in (info.value.details() or "") and "internal" not in (info.value.details() or "")


@pytest.mark.parametrize("chat_host", [{"database": SMALL_POOL, "rewrite": "llm"}], indirect=True)
async def test_a_pool_timeout_during_the_turn_is_a_retryable_error_event(chat_host: ChatHost) -> None:
    collection_id, _ = await library(chat_host)
    first = await chat_host.ask("How do wings make lift?", collection_ids=[collection_id], llm="quoting")
    conversation_id = first[0].started.conversation_id
    # The follow-up's rewrite pauses, so the test can take every connection before the retrieval.
    chat_host.scripted.queued = [[0.3, "flaps lift"], ["Flaps."]]
    call = chat_host.chat.Chat(metadata=AUTH, timeout=30)
    await call.write(chat_host.start("And flaps?", conversation_id=conversation_id))
    started = await call.read()
    assert started.HasField("started")
    engine = chat_host.server.runtime.db if chat_host.server.runtime else None
    assert engine is not None
    with watching_pool() as pool:
        async with contextlib.AsyncExitStack() as held:
            for _ in range(2):
                await held.enter_async_context(engine.connect())
            await asyncio.wait_for(pool.event.wait(), 5)
        # The connections are back: the failed answer is stored, and the turn ends normally.
        events = [started, *await rest(call)]
    error = next(event.error for event in events if event.HasField("error"))
    assert (error.code, error.retryable) == ("host_busy", True)
    assert kinds(events)[-1] == "done" and events[-1].done.status == FAILED
    stored = await chat_host.conversation(conversation_id)
    assert stored.messages[-1].status == FAILED and stored.messages[-1].error.code == "host_busy"


class Counted(list[Step]):
    """A script that counts how far the model has got in it."""

    taken = 0

    def __iter__(self) -> Iterator[Step]:
        for step in super().__iter__():
            self.taken += 1
            yield step


async def test_a_client_that_does_not_read_holds_the_model_back(chat_host: ChatHost) -> None:
    script = Counted(["x" * 1024] * 20_000)  # 20 MB of answer, as fast as the host takes it
    chat_host.scripted.script = script
    call = chat_host.chat.Chat(metadata=AUTH, timeout=30)
    await call.write(chat_host.start("Write a lot"))
    assert (await call.read()).HasField("started")
    await asyncio.sleep(1.0)  # the client reads nothing
    paused_at = script.taken
    await asyncio.sleep(0.3)
    assert script.taken == paused_at  # the model waits ...
    # ... having written a bounded part of its answer: what gRPC's flow-control windows hold (a few MB
    # on loopback) and the turn's own bounded queue, not the whole answer
    assert paused_at < len(script) // 2
    call.cancel()
    assert await chat_host.scripted.wait_ended() == ["GeneratorExit"]
