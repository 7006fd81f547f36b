"""Chat on the real host: gRPC ChatService and ConversationService over PostgreSQL, real retrieval
(the ``vector`` retriever on ingested documents) and test models registered as a plugin."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
import pytest_asyncio
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from opentier.config import Settings
from opentier.errors import LLMUnavailableError
from opentier.generated.intelligence.v1 import (
    chat_pb2,
    collections_pb2,
    collections_pb2_grpc,
    common_pb2,
    conversations_pb2,
)

from .chat_host import ChatHost, answer_text, chunk_ids, kinds, library, serve_chat_host
from .conftest import AUTH, trailer

COMPLETE = conversations_pb2.MESSAGE_STATUS_COMPLETE
CANCELLED = conversations_pb2.MESSAGE_STATUS_CANCELLED
FAILED = conversations_pb2.MESSAGE_STATUS_FAILED


@pytest_asyncio.fixture
async def chat_host(
    db_settings: Settings, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[ChatHost]:
    overrides: dict[str, Any] = getattr(request, "param", {})
    async with serve_chat_host(db_settings, tmp_path, **overrides) as host:
        yield host


def assert_sequenced(events: list[chat_pb2.ChatEvent]) -> None:
    assert [event.sequence for event in events] == list(range(1, len(events) + 1))
    assert kinds(events)[0] == "started" and kinds(events)[-1] == "done"


async def read_until_tokens(call: Any, count: int) -> list[chat_pb2.ChatEvent]:
    events: list[chat_pb2.ChatEvent] = []
    while sum(1 for event in events if event.HasField("token")) < count:
        event = await call.read()
        assert event is not grpc.aio.EOF, events
        events.append(event)
    return events


async def test_a_question_about_a_document_is_answered_with_citations_of_its_chunks(
    chat_host: ChatHost, db_engine: AsyncEngine
) -> None:
    collection_id, documents = await library(chat_host)
    events = await chat_host.ask("How do wings make lift?", collection_ids=[collection_id], llm="quoting")

    assert_sequenced(events)
    assert kinds(events)[:2] == ["started", "retrieval"]
    assert kinds(events)[-2:] == ["usage", "done"]
    started, retrieval, done = events[0].started, events[1].retrieval, events[-1].done
    assert (started.llm, started.retriever, started.conversation_created) == ("quoting", "vector", True)
    assert retrieval.source_count == 3 and retrieval.query == "How do wings make lift?"
    citations = [event.citation for event in events if event.HasField("citation")]
    assert len(citations) == 1
    cited = citations[0]
    assert cited.document_id == documents["wings.txt"] and cited.source == "wings.txt"
    assert cited.chunk_id in await chunk_ids(db_engine, documents["wings.txt"])
    assert cited.text.startswith("Wings make lift.") and cited.span.char_end > cited.span.char_start
    text = answer_text(events)
    assert text.startswith("Wings make lift.") and f"[{cited.source_number}]" in text
    # the citation arrives before the text that holds its marker
    first_marker = next(i for i, e in enumerate(events) if "[" in e.token.text)
    assert kinds(events).index("citation") < first_marker
    assert (done.status, done.finish_reason) == (COMPLETE, conversations_pb2.FINISH_REASON_STOP)
    assert done.message_id == started.assistant_message_id and done.conversation_id == started.conversation_id
    assert done.timings.HasField("time_to_first_token_ms")
    assert 0 <= done.timings.time_to_first_token_ms <= done.timings.total_ms

    stored = await chat_host.conversation(started.conversation_id)
    assert stored.conversation.title == "How do wings make lift?"
    assert stored.conversation.collection_ids == [collection_id]
    user, answer = stored.messages
    assert (user.role, user.content, user.id) == (
        conversations_pb2.MESSAGE_ROLE_USER,
        "How do wings make lift?",
        started.user_message_id,
    )
    assert (answer.role, answer.status, answer.content) == (
        conversations_pb2.MESSAGE_ROLE_ASSISTANT,
        COMPLETE,
        text,
    )
    assert [c.chunk_id for c in answer.citations] == [cited.chunk_id]
    assert len(answer.sources) == 3 and {s.document_id for s in answer.sources} == set(documents.values())
    assert answer.usage.llm == "quoting" and answer.usage.output_tokens > 0
    assert answer.timings.total_ms == done.timings.total_ms


async def test_a_marker_naming_a_source_that_was_not_given_is_never_a_citation(chat_host: ChatHost) -> None:
    collection_id, _documents = await library(chat_host)
    chat_host.scripted.script = ["Lift comes from the wing [", "1] and", " thrust [7]", ". Both [2, 7]."]
    events = await chat_host.ask("What makes lift?", collection_ids=[collection_id], top_k=3)

    assert_sequenced(events)
    assert events[1].retrieval.source_count == 3
    assert [e.citation.source_number for e in events if e.HasField("citation")] == [1, 2]
    text = answer_text(events)
    assert text == "Lift comes from the wing [1] and thrust . Both [2]."
    assert "[7" not in text
    # the split marker is held back, never more: the text before it went out at once
    assert events[2].token.text == "Lift comes from the wing "
    answer = (await chat_host.conversation(events[0].started.conversation_id)).messages[1]
    assert [c.source_number for c in answer.citations] == [1, 2] and answer.content == text
    assert list(answer.metadata["unverified_citations"]) == [7, 7]


@pytest.mark.parametrize("chat_host", [{"citation_mode": "flag"}], indirect=True)
async def test_flag_mode_shows_a_marker_that_names_no_source(chat_host: ChatHost) -> None:
    collection_id, _documents = await library(chat_host)
    chat_host.scripted.script = ["See [2, 9] and [9]."]
    events = await chat_host.ask("What makes lift?", collection_ids=[collection_id])
    assert answer_text(events) == "See [2, 9?] and [9?]."
    assert [e.citation.source_number for e in events if e.HasField("citation")] == [2]


async def test_a_follow_up_uses_the_history(chat_host: ChatHost) -> None:
    collection_id, _documents = await library(chat_host)
    chat_host.scripted.script = ["Wings make lift [1]."]
    first = await chat_host.ask("How do wings make lift?", collection_ids=[collection_id])
    conversation_id = first[0].started.conversation_id
    chat_host.scripted.script = ["Flaps help [1]."]
    second = await chat_host.ask("And at low speed?", conversation_id=conversation_id)

    assert_sequenced(second)
    assert second[0].started.conversation_created is False
    # the conversation's collections are searched, with a query that carries the earlier topic
    assert second[1].retrieval.query == "wings lift And at low speed?"
    request = chat_host.scripted.requests[-1]
    assert [(m.role, m.content) for m in request.messages[:2]] == [
        ("user", "How do wings make lift?"),
        ("assistant", "Wings make lift [1]."),
    ]
    assert request.messages[-1].role == "user" and request.messages[-1].content.endswith("And at low speed?")
    assert request.sources and request.sources[0].number == 1
    stored = await chat_host.conversation(conversation_id)
    assert [m.content for m in stored.messages] == [
        "How do wings make lift?",
        "Wings make lift [1].",
        "And at low speed?",
        "Flaps help [1].",
    ]
    assert stored.conversation.message_count == 4


async def test_a_conversation_outlives_a_deleted_collection(chat_host: ChatHost) -> None:
    collection_id, _documents = await library(chat_host)
    first = await chat_host.ask("How do wings make lift?", collection_ids=[collection_id])
    stub = collections_pb2_grpc.CollectionServiceStub(chat_host.channel)
    await stub.DeleteCollection(
        collections_pb2.DeleteCollectionRequest(caller=chat_host.caller(), collection_id=collection_id),
        metadata=AUTH,
        timeout=10,
    )
    second = await chat_host.ask("And now?", conversation_id=first[0].started.conversation_id)
    assert kinds(second)[:2] == ["started", "token"] and second[0].started.retriever == ""
    assert second[-1].done.status == COMPLETE
    assert chat_host.scripted.requests[-1].sources == []


@pytest.mark.parametrize("chat_host", [{"rewrite": "llm"}], indirect=True)
async def test_the_llm_rewrite_asks_the_model_for_a_standalone_query(chat_host: ChatHost) -> None:
    collection_id, _documents = await library(chat_host)
    chat_host.scripted.script = ["Wings make lift [1]."]
    first = await chat_host.ask("How do wings make lift?", collection_ids=[collection_id])
    chat_host.scripted.queued = [["flaps and slats of a wing ", "at low speed"], ["Flaps [1]."]]
    second = await chat_host.ask("And at low speed?", conversation_id=first[0].started.conversation_id)

    assert second[1].retrieval.query == "flaps and slats of a wing at low speed"
    rewrite = chat_host.scripted.requests[-2].messages[-1].content
    assert "user: How do wings make lift?" in rewrite and "Last question: And at low speed?" in rewrite
    assert answer_text(second) == "Flaps [1]."


async def test_cancel_mid_stream_stores_the_partial_answer_and_stops_the_model(chat_host: ChatHost) -> None:
    chat_host.scripted.script = ["Part one. ", "Part two. ", 30.0, "never sent"]
    call = chat_host.chat.Chat(metadata=AUTH, timeout=30)
    await call.write(chat_host.start("Tell me a long story."))
    events = await read_until_tokens(call, 2)
    began = time.monotonic()
    await call.write(
        chat_pb2.ChatRequest(caller=chat_host.caller(), cancel=chat_pb2.ChatCancel(reason="test"))
    )
    while (event := await call.read()) is not grpc.aio.EOF:
        events.append(event)

    assert time.monotonic() - began < 3
    assert_sequenced(events)
    assert kinds(events)[-2:] == ["usage", "done"]
    done = events[-1].done
    assert (done.status, done.finish_reason) == (CANCELLED, conversations_pb2.FINISH_REASON_CANCELLED)
    assert chat_host.scripted.endings == ["CancelledError"]
    answer = (await chat_host.conversation(done.conversation_id)).messages[1]
    assert (answer.status, answer.content) == (CANCELLED, "Part one. Part two. ")
    assert answer.finish_reason == conversations_pb2.FINISH_REASON_CANCELLED


async def test_a_client_that_goes_away_stops_the_model_and_keeps_the_partial_answer(
    chat_host: ChatHost,
) -> None:
    chat_host.scripted.script = ["Part one. ", 30.0, "never sent"]
    call = chat_host.chat.Chat(metadata=AUTH, timeout=30)
    await call.write(chat_host.start("Tell me a long story."))
    events = await read_until_tokens(call, 1)
    call.cancel()

    assert await chat_host.scripted.wait_ended() == ["CancelledError"]
    conversation_id = events[0].started.conversation_id
    async with asyncio.timeout(10):
        while (answer := (await chat_host.conversation(conversation_id)).messages[1]).status != CANCELLED:
            await asyncio.sleep(0.05)
    assert answer.content == "Part one. "


async def test_a_model_error_fails_the_answer_with_a_stable_code(chat_host: ChatHost) -> None:
    chat_host.scripted.script = ["Partial ", LLMUnavailableError("the model server is overloaded")]
    events = await chat_host.ask("Hello?")

    assert_sequenced(events)
    assert kinds(events)[-3:] == ["usage", "error", "done"]
    error = events[-2].error
    assert (error.code, error.retryable) == ("llm_unavailable", True)
    assert "overloaded" in error.message
    done = events[-1].done
    assert (done.status, done.finish_reason) == (FAILED, conversations_pb2.FINISH_REASON_ERROR)
    answer = (await chat_host.conversation(done.conversation_id)).messages[1]
    assert (answer.status, answer.content, answer.error.code) == (FAILED, "Partial ", "llm_unavailable")
    assert events[-3].usage.output_tokens == 1  # counted: the model reported none


@pytest.mark.parametrize("chat_host", [{"stall_timeout_seconds": 0.3}], indirect=True)
async def test_a_stalled_model_ends_with_llm_timeout(chat_host: ChatHost) -> None:
    chat_host.scripted.script = ["Start ", 10.0, "never sent"]
    began = time.monotonic()
    events = await chat_host.ask("Hello?")

    assert time.monotonic() - began < 5
    assert_sequenced(events)
    assert events[-2].error.code == "llm_timeout" and "0.3 seconds" in events[-2].error.message
    assert events[-1].done.status == FAILED
    assert chat_host.scripted.endings == ["CancelledError"]


@pytest.mark.parametrize("chat_host", [{"deadline_seconds": 0.5}], indirect=True)
async def test_a_turn_past_its_deadline_fails_with_llm_timeout(chat_host: ChatHost) -> None:
    chat_host.scripted.script = ["tick ", 0.2, "tick ", 0.2, "tick ", 0.2, "tick ", 0.2, "tick "]
    events = await chat_host.ask("Hello?")
    assert events[-2].error.code == "llm_timeout" and "deadline" in events[-2].error.message
    assert events[-1].done.status == FAILED and answer_text(events).startswith("tick tick")


@pytest.mark.parametrize("chat_host", [{"min_scores": {"vector": 0.99}}], indirect=True)
async def test_when_no_source_is_relevant_the_answer_says_so_without_the_model(chat_host: ChatHost) -> None:
    collection_id, _documents = await library(chat_host)
    events = await chat_host.ask("Who won the 1966 world cup?", collection_ids=[collection_id])

    assert_sequenced(events)
    assert kinds(events) == ["started", "retrieval", "token", "usage", "done"]
    assert events[1].retrieval.source_count == 0
    assert answer_text(events) == chat_host.settings.chat.no_sources_answer
    assert chat_host.scripted.requests == []
    assert events[-1].done.status == COMPLETE


@pytest.mark.parametrize(
    "chat_host", [{"min_scores": {"vector": 0.99}, "no_sources": "answer"}], indirect=True
)
async def test_no_sources_answer_mode_tells_the_model(chat_host: ChatHost) -> None:
    collection_id, _documents = await library(chat_host)
    chat_host.scripted.script = ["I do not know [1]."]
    events = await chat_host.ask("Who won the 1966 world cup?", collection_ids=[collection_id])
    request = chat_host.scripted.requests[-1]
    assert request.sources == [] and "No source" in request.messages[-1].content
    assert answer_text(events) == "I do not know ." and not any(e.HasField("citation") for e in events)


async def test_another_tenant_cannot_read_or_continue_a_conversation(chat_host: ChatHost) -> None:
    events = await chat_host.ask("A private question")
    conversation_id = events[0].started.conversation_id
    stranger = "tenant-stranger"

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await chat_host.conversation(conversation_id, tenant=stranger)
    assert (info.value.code(), trailer(info.value)) == (grpc.StatusCode.NOT_FOUND, "not_found")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await chat_host.ask("Continue it", tenant=stranger, conversation_id=conversation_id)
    assert (info.value.code(), trailer(info.value)) == (grpc.StatusCode.NOT_FOUND, "not_found")
    listed = await chat_host.conversations.ListConversations(
        conversations_pb2.ListConversationsRequest(caller=chat_host.caller(stranger)),
        metadata=AUTH,
        timeout=10,
    )
    assert list(listed.conversations) == []
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await chat_host.conversations.DeleteConversation(
            conversations_pb2.DeleteConversationRequest(
                caller=chat_host.caller(stranger), conversation_id=conversation_id
            ),
            metadata=AUTH,
            timeout=10,
        )
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    # another user of the same tenant does not see it either; the tenant itself does
    with pytest.raises(grpc.aio.AioRpcError):
        await chat_host.conversations.GetConversation(
            conversations_pb2.GetConversationRequest(
                caller=common_pb2.Caller(tenant_id=chat_host.tenant, user_id="someone-else"),
                conversation_id=conversation_id,
            ),
            metadata=AUTH,
            timeout=10,
        )
    whole_tenant = common_pb2.Caller(tenant_id=chat_host.tenant)
    found = await chat_host.conversations.GetConversation(
        conversations_pb2.GetConversationRequest(caller=whole_tenant, conversation_id=conversation_id),
        metadata=AUTH,
        timeout=10,
    )
    assert len(found.messages) == 2
    stored = await chat_host.conversation(conversation_id)
    assert len(stored.messages) == 2  # the stranger's turn stored nothing


@pytest.mark.parametrize("chat_host", [{"allowed_llms": []}], indirect=True)
async def test_problems_before_the_turn_starts_end_the_call_with_a_status(chat_host: ChatHost) -> None:
    cases: list[tuple[dict[str, Any], grpc.StatusCode, str]] = [
        ({"llm": "quoting"}, grpc.StatusCode.PERMISSION_DENIED, "llm_not_allowed"),
        (
            {"collection_ids": ["7f7c0c52-0000-4000-8000-000000000000"]},
            grpc.StatusCode.NOT_FOUND,
            "not_found",
        ),
        ({"conversation_id": "not-an-id"}, grpc.StatusCode.INVALID_ARGUMENT, "invalid_request"),
        ({"retriever": "nope"}, grpc.StatusCode.INVALID_ARGUMENT, "component_unknown"),
    ]
    for fields, status, code in cases:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await chat_host.ask("Hello?", **fields)
        assert (info.value.code(), trailer(info.value)) == (status, code), fields
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await chat_host.ask("   ")
    assert trailer(info.value) == "invalid_request"
    listed = await chat_host.conversations.ListConversations(
        conversations_pb2.ListConversationsRequest(caller=chat_host.caller()), metadata=AUTH, timeout=10
    )
    assert list(listed.conversations) == []  # nothing was stored


async def test_conversations_are_listed_newest_first_renamed_and_deleted(chat_host: ChatHost) -> None:
    collection = await chat_host.collection()
    created = await chat_host.conversations.CreateConversation(
        conversations_pb2.CreateConversationRequest(
            caller=chat_host.caller(), collection_ids=[collection.id], metadata={"topic": "wings"}
        ),
        metadata=AUTH,
        timeout=10,
    )
    assert (created.title, created.message_count, list(created.collection_ids)) == ("", 0, [collection.id])
    ids = [created.id]
    for question in ("First question", "Second question", "Third question"):
        events = await chat_host.ask(question)
        ids.append(events[0].started.conversation_id)
    await chat_host.ask("Now a title", conversation_id=created.id)  # the empty title takes the message

    seen: list[conversations_pb2.Conversation] = []
    token = ""
    while True:
        page = await chat_host.conversations.ListConversations(
            conversations_pb2.ListConversationsRequest(
                caller=chat_host.caller(), page=common_pb2.PageRequest(page_size=2, page_token=token)
            ),
            metadata=AUTH,
            timeout=10,
        )
        assert len(page.conversations) <= 2
        seen.extend(page.conversations)
        token = page.page.next_page_token
        if not token:
            break
    assert [c.id for c in seen] == [ids[0], ids[3], ids[2], ids[1]]
    assert [c.title for c in seen] == ["Now a title", "Third question", "Second question", "First question"]

    renamed = await chat_host.conversations.UpdateConversation(
        conversations_pb2.UpdateConversationRequest(
            caller=chat_host.caller(), conversation_id=ids[1], title="Kept"
        ),
        metadata=AUTH,
        timeout=10,
    )
    assert renamed.title == "Kept" and renamed.message_count == 2
    deleted = await chat_host.conversations.DeleteConversation(
        conversations_pb2.DeleteConversationRequest(caller=chat_host.caller(), conversation_id=ids[2]),
        metadata=AUTH,
        timeout=10,
    )
    assert deleted.messages_deleted == 2
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await chat_host.conversation(ids[2])
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_the_offline_default_answers_from_the_document_with_its_citations(
    db_settings: Settings, tmp_path: Path, db_engine: AsyncEngine
) -> None:
    pytest.importorskip("opentier_llm_extractive", reason="the extractive LLM plugin is not installed")
    async with serve_chat_host(db_settings, tmp_path, installed=["extractive"], llm="extractive") as host:
        collection_id, documents = await library(host)
        events = await host.ask("Why are flaps used at low speed?", collection_ids=[collection_id])

        assert_sequenced(events)
        assert events[0].started.llm == "extractive" and events[-1].done.status == COMPLETE
        citations = [event.citation for event in events if event.HasField("citation")]
        assert citations and {c.document_id for c in citations} == {documents["wings.txt"]}
        wings_chunks = await chunk_ids(db_engine, documents["wings.txt"])
        assert all(c.chunk_id in wings_chunks for c in citations)
        assert "Flaps and slats raise lift at low speed" in answer_text(events)


@pytest.mark.parametrize("chat_host", [{"deadline_seconds": 1.0}], indirect=True)
async def test_a_running_host_settles_an_answer_that_a_killed_host_left_in_progress(
    chat_host: ChatHost, db_engine: AsyncEngine
) -> None:
    """A host killed mid-answer leaves the answer ``in_progress``; a host restarted at once used to
    leave it so until its next start. A running host now sweeps: past twice the deadline (here 2 s)
    the answer is ``failed`` with ``host_stopped``, its partial text kept."""
    async with db_engine.begin() as conn:
        conversation_id = await conn.scalar(
            sa.text(
                "INSERT INTO intelligence.conversations (tenant_id, user_id, title) "
                "VALUES (:tenant, 'tester', 'left behind') RETURNING id"
            ),
            {"tenant": chat_host.tenant},
        )
        message_id = await conn.scalar(
            sa.text(
                "INSERT INTO intelligence.messages (conversation_id, tenant_id, ordinal, role, content, "
                "status, created_at) VALUES (:conversation, :tenant, 2, 'assistant', 'Half an ans', "
                "'in_progress', now() - interval '10 seconds') RETURNING id"
            ),
            {"conversation": conversation_id, "tenant": chat_host.tenant},
        )
        fresh_id = await conn.scalar(
            sa.text(
                "INSERT INTO intelligence.messages (conversation_id, tenant_id, ordinal, role, content, "
                "status) VALUES (:conversation, :tenant, 4, 'assistant', '', 'in_progress') RETURNING id"
            ),
            {"conversation": conversation_id, "tenant": chat_host.tenant},
        )

    async def status(key: object) -> tuple[str, str | None, str]:
        async with db_engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.text("SELECT status, error_code, content FROM intelligence.messages WHERE id = :id"),
                    {"id": key},
                )
            ).one()
        return str(row[0]), row[1], str(row[2])

    async with asyncio.timeout(5):
        while (await status(message_id))[0] == "in_progress":
            await asyncio.sleep(0.1)
    assert await status(message_id) == ("failed", "host_stopped", "Half an ans")
    # An answer younger than twice the deadline may still be streaming somewhere: left alone.
    assert (await status(fresh_id))[0] == "in_progress"
