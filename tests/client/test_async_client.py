"""The async client against the real gateway, host and PostgreSQL: sign in, a collection, an upload with
progress, the job, search; a streamed chat over the WebSocket, ask() over SSE, the conversation."""

from __future__ import annotations

from pathlib import Path

import pytest

from opentier.client import (
    AsyncClient,
    AuthenticationError,
    CitationEvent,
    DoneEvent,
    Job,
    NotFoundError,
    RetrievalEvent,
    StartedEvent,
    TokenEvent,
    Tokens,
    UsageEvent,
)
from tests.client.conftest import MANUAL, Account
from tests.gateway.streaming import ChatGateway


def assert_cited_answer(text: str, cited_text: str) -> None:
    """``citing`` answers with the first sentence of source [1], then the marker."""
    assert text.endswith(" [1]"), text
    assert text.removesuffix(" [1]") in cited_text


async def test_sign_in_upload_with_progress_wait_search_and_sign_out(
    chat_gateway: ChatGateway, account: Account, manual: Path
) -> None:
    renewed: list[Tokens] = []
    async with AsyncClient(chat_gateway.url, on_tokens=renewed.append) as client:
        tokens = await client.login(account.email, account.password, tenant=account.tenant)
        assert renewed == [tokens]
        me = await client.me()
        assert (me.user.email, me.tenant.name) == (account.email, account.tenant)
        assert set(me.scopes) == {"read", "ingest", "chat"}

        collection = await client.create_collection("manuals", description="wing manuals")
        assert [c.id async for c in client.iter_collections()] == [collection.id]

        sent: list[tuple[int, int]] = []
        job = await client.upload(
            collection.id,
            manual,
            on_progress=lambda done, total: sent.append((done, total)),
            chunk_bytes=1024,
        )
        size = len(MANUAL.encode())
        assert len(sent) >= size // 1024
        assert [done for done, _ in sent] == sorted({done for done, _ in sent})  # strictly increasing
        assert sent[-1] == (size, size)
        assert {total for _, total in sent} == {size}

        seen: list[Job] = []
        finished = await client.wait_for_job(job, on_progress=seen.append, poll_interval=0.1, timeout=30)
        assert finished.status == "succeeded" and finished.finished
        assert finished.counts.chunks_written > 1
        assert finished.progress == 1.0
        assert seen[-1] == finished and {j.id for j in seen} == {job.id}

        [document] = (await client.list_documents(collection.id)).documents
        assert (document.source, document.status, document.size_bytes) == ("wings.txt", "ready", size)

        results = await client.search("trailing edge flaps", collection_ids=[collection.id], top_k=3)
        assert 1 <= len(results.hits) <= 3
        assert {hit.document_id for hit in results.hits} == {document.id}
        assert "flaps" in results.hits[0].text

        assert (await client.delete_document(document.id)).chunks_deleted == finished.counts.chunks_written
        await client.delete_collection(collection.id)
        with pytest.raises(NotFoundError) as missing:
            await client.get_collection(collection.id)
        assert (missing.value.code, missing.value.status) == ("not_found", 404)
        assert missing.value.request_id

        await client.logout()
        with pytest.raises(AuthenticationError) as signed_out:
            await client.me()
        assert signed_out.value.status == 401
    # The ended session's refresh token is dead too.
    async with AsyncClient(chat_gateway.url, tokens=renewed[-1]) as stale:
        with pytest.raises(AuthenticationError):
            await stale.me()


async def test_chat_streams_typed_events_and_ask_returns_the_cited_answer(
    chat_gateway: ChatGateway, account: Account, manual: Path
) -> None:
    async with AsyncClient(chat_gateway.url) as client:
        await client.login(account.email, account.password, tenant=account.tenant)
        collection = await client.create_collection("manuals")
        job = await client.wait_for_job(await client.upload(collection.id, manual), timeout=30)
        assert job.succeeded

        async with client.chat("How do flaps work?", collection_ids=[collection.id]) as stream:
            events = [event async for event in stream]
        assert isinstance(events[0], StartedEvent) and events[0].conversation_created
        assert isinstance(events[1], RetrievalEvent) and events[1].source_count >= 1
        assert isinstance(events[-1], DoneEvent) and events[-1].status == "complete"
        assert isinstance(events[-2], UsageEvent) and events[-2].output_tokens > 0
        assert [event.seq for event in events] == list(range(1, len(events) + 1))
        text = "".join(event.text for event in events if isinstance(event, TokenEvent))
        [citation] = [event for event in events if isinstance(event, CitationEvent)]
        assert (citation.source_number, citation.source, citation.collection_id) == (
            1,
            "wings.txt",
            collection.id,
        )
        assert_cited_answer(text, citation.text)
        assert stream.answer.text == text and stream.answer.complete
        assert stream.answer.citations == [citation.citation()]

        conversation_id = stream.answer.conversation_id
        answer = await client.ask("And slats?", conversation_id=conversation_id, transport="sse")
        assert answer.complete and answer.conversation_id == conversation_id
        assert [c.source for c in answer.citations] == ["wings.txt"]
        assert_cited_answer(answer.text, answer.citations[0].text)
        assert answer.usage is not None and answer.usage.llm == "citing"

        assert [c.id async for c in client.iter_conversations()] == [conversation_id]
        stored = await client.get_conversation(conversation_id)
        assert [m.role for m in stored.messages] == ["user", "assistant", "user", "assistant"]
        assert stored.messages[1].content == text
        assert [c.source for c in stored.messages[1].citations] == ["wings.txt"]
        assert stored.messages[3].id == answer.message_id

        assert (await client.delete_conversation(conversation_id)).messages_deleted == 4
        with pytest.raises(NotFoundError):
            await client.get_conversation(conversation_id)
