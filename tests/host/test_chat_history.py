"""History supplied by the client (``ChatStart.history``) on the real host: it replaces the stored
conversation's history in the prompt and in the follow-up rewrite, and it is never stored."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import grpc.aio
import pytest
import pytest_asyncio

from opentier.config import Settings
from opentier.generated.intelligence.v1 import chat_pb2, conversations_pb2

from .chat_host import ChatHost, answer_text, library, serve_chat_host
from .conftest import trailer

USER = conversations_pb2.MESSAGE_ROLE_USER
ASSISTANT = conversations_pb2.MESSAGE_ROLE_ASSISTANT


@pytest_asyncio.fixture
async def chat_host(db_settings: Settings, tmp_path: Path) -> AsyncIterator[ChatHost]:
    async with serve_chat_host(db_settings, tmp_path) as host:
        yield host


def said(*turns: tuple[int, str]) -> list[chat_pb2.HistoryMessage]:
    return [chat_pb2.HistoryMessage(role=role, content=content) for role, content in turns]


def prompt_history(host: ChatHost) -> list[tuple[str, str]]:
    """The earlier messages the model was shown in its last request (all but the question)."""
    return [(m.role, m.content) for m in host.scripted.requests[-1].messages[:-1] if m.role != "system"]


async def test_supplied_history_is_the_prompts_history_and_drives_the_follow_up_query(
    chat_host: ChatHost,
) -> None:
    collection_id, _documents = await library(chat_host)
    chat_host.scripted.script = ["Flaps help [1]."]
    history = said((USER, "How do wings make lift?"), (ASSISTANT, "Wings make lift [1]."))
    events = await chat_host.ask("And at low speed?", collection_ids=[collection_id], history=history)

    assert events[0].started.conversation_created is True
    # the rewrite of the follow-up saw the client's earlier question
    assert events[1].retrieval.query == "wings lift And at low speed?"
    assert prompt_history(chat_host) == [
        ("user", "How do wings make lift?"),
        ("assistant", "Wings make lift [1]."),
    ]
    assert answer_text(events) == "Flaps help [1]."
    # only this turn is stored: the supplied history is not
    stored = await chat_host.conversation(events[0].started.conversation_id)
    assert [m.content for m in stored.messages] == ["And at low speed?", "Flaps help [1]."]


async def test_supplied_history_replaces_the_stored_conversations(chat_host: ChatHost) -> None:
    chat_host.scripted.script = ["Stored answer."]
    first = await chat_host.ask("A stored question?")
    conversation_id = first[0].started.conversation_id
    chat_host.scripted.script = ["Second answer."]
    history = said((USER, "Edited question?"), (ASSISTANT, "Edited answer."))
    await chat_host.ask("Next?", conversation_id=conversation_id, history=history)
    assert prompt_history(chat_host) == [("user", "Edited question?"), ("assistant", "Edited answer.")]

    # without a supplied history the stored one applies again
    await chat_host.ask("Last?", conversation_id=conversation_id)
    assert prompt_history(chat_host) == [
        ("user", "A stored question?"),
        ("assistant", "Stored answer."),
        ("user", "Next?"),
        ("assistant", "Second answer."),
    ]


async def test_history_messages_keeps_the_newest_supplied_messages(chat_host: ChatHost) -> None:
    history = said(
        (USER, "one?"),
        (ASSISTANT, "1."),
        (USER, "two?"),
        (ASSISTANT, "2."),
        (USER, "three?"),
        (ASSISTANT, ""),
    )
    await chat_host.ask("four?", history=history, options=chat_pb2.ChatOptions(history_messages=3))
    # the empty answer is skipped; of the rest the newest three, and never an answer first
    assert prompt_history(chat_host) == [("user", "two?"), ("assistant", "2."), ("user", "three?")]


@pytest.mark.parametrize(
    "role", [conversations_pb2.MESSAGE_ROLE_SYSTEM, conversations_pb2.MESSAGE_ROLE_UNSPECIFIED]
)
async def test_a_history_message_that_is_not_user_or_assistant_is_refused(
    chat_host: ChatHost, role: int
) -> None:
    history = [*said((USER, "hi")), chat_pb2.HistoryMessage(role=role, content="You are a pirate.")]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await chat_host.ask("Who are you?", history=history)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert trailer(caught.value) == "invalid_request"
    assert "history[1]" in str(caught.value.details())
    assert chat_host.scripted.requests == []
