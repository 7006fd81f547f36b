"""The synchronous client against the real gateway, host and PostgreSQL (run in a thread, since the
served gateway shares the test's event loop): sign in, API key, upload with progress, search, chat over
SSE and over one WebSocket for two turns."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from opentier.client import (
    Answer,
    CitationEvent,
    Client,
    DoneEvent,
    Job,
    SearchResults,
    StartedEvent,
    TokenEvent,
)
from opentier.client.events import ChatEvent
from tests.client.conftest import MANUAL, Account
from tests.gateway.streaming import ChatGateway


@dataclass
class Seen:
    key_scopes: list[str] = field(default_factory=list)
    sent: list[tuple[int, int]] = field(default_factory=list)
    job: Job | None = None
    results: SearchResults | None = None
    sse_events: list[ChatEvent] = field(default_factory=list)
    sse_stream_id: str | None = None
    answers: list[Answer] = field(default_factory=list)
    conversations: list[str] = field(default_factory=list)
    titles: list[Any] = field(default_factory=list)


def scenario(url: str, account: Account) -> Seen:
    seen = Seen()
    with Client(url) as session:
        session.login(account.email, account.password, tenant=account.tenant)
        key = session.create_api_key("sync test", ["read", "ingest", "chat"])
        session.logout()
    seen.key_scopes = list(key.scopes)
    with Client(url, api_key=key.key) as client:
        collection = client.create_collection("notes")
        job = client.upload(
            collection.id,
            MANUAL.encode(),
            filename="manuals/wings.txt",
            metadata={"team": "aero"},
            on_progress=lambda done, total: seen.sent.append((done, total)),
            chunk_bytes=2048,
        )
        seen.job = client.wait_for_job(job, poll_interval=0.1, timeout=30)
        seen.results = client.search(
            "trailing edge flaps", collection_ids=[collection.id], filters={"team": "aero"}
        )
        with client.chat("How do flaps work?", collection_ids=[collection.id], transport="sse") as stream:
            seen.sse_events = list(stream)
            seen.sse_stream_id = stream.stream_id
        with client.chat_session() as chat:
            first = chat.ask("How do flaps work?", collection_ids=[collection.id])
            second = chat.ask("And slats?", conversation_id=first.conversation_id)
        seen.answers = [first, second]
        seen.conversations = [c.id for c in client.iter_conversations()]
    return seen


async def test_the_sync_client_uploads_searches_and_chats_over_both_transports(
    chat_gateway: ChatGateway, account: Account
) -> None:
    seen = await asyncio.to_thread(scenario, chat_gateway.url, account)

    assert sorted(seen.key_scopes) == ["chat", "ingest", "read"]
    size = len(MANUAL.encode())
    assert [done for done, _ in seen.sent] == sorted({done for done, _ in seen.sent})
    assert seen.sent[-1] == (size, size) and len(seen.sent) >= size // 2048
    assert seen.job is not None and seen.job.status == "succeeded"

    assert seen.results is not None and seen.results.hits
    assert {hit.source for hit in seen.results.hits} == {"manuals/wings.txt"}
    assert all(hit.metadata.get("team") == "aero" for hit in seen.results.hits)

    events = seen.sse_events
    assert isinstance(events[0], StartedEvent) and events[0].stream_id == seen.sse_stream_id
    assert seen.sse_stream_id
    assert isinstance(events[-1], DoneEvent) and events[-1].status == "complete"
    text = "".join(event.text for event in events if isinstance(event, TokenEvent))
    [citation] = [event for event in events if isinstance(event, CitationEvent)]
    assert citation.source == "manuals/wings.txt" and text.endswith(" [1]")
    assert text.removesuffix(" [1]") in citation.text

    first, second = seen.answers
    assert first.complete and second.complete
    assert first.conversation_id == second.conversation_id
    assert [c.source for c in first.citations] == ["manuals/wings.txt"]
    assert first.text.endswith(" [1]") and second.text.endswith(" [1]")
    # Two conversations: the SSE turn's and the session's.
    assert len(seen.conversations) == 2 and first.conversation_id in seen.conversations
