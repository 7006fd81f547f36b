"""The conversation store on the real PostgreSQL: turns, the history a model sees, abandoned answers."""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from opentier.db.models.intelligence import MessageStatus
from opentier.engine.chat.conversations import ABANDONED_CODE, AnswerRecord, Conversations, Owner, title_from


def owner() -> Owner:
    return Owner(f"tenant-{uuid.uuid4().hex[:10]}", "someone")


async def turn(store: Conversations, who: Owner, conversation_id: uuid.UUID | None, text: str) -> uuid.UUID:
    record = await store.begin_turn(
        who, conversation_id, text, collection_ids=[], history_messages=10, title=text, llm="m"
    )
    return record.conversation.id if conversation_id is None else conversation_id


async def test_the_history_holds_complete_and_cancelled_answers_not_failed_ones(
    db_engine: AsyncEngine,
) -> None:
    store, who = Conversations(db_engine), owner()
    first = await store.begin_turn(
        who, None, "one", collection_ids=[], history_messages=10, title="one", llm="m"
    )
    key = first.conversation.id
    assert first.created and first.history == []
    await store.end_turn(
        who.tenant_id, first.assistant_message_id, AnswerRecord("answer one", MessageStatus.COMPLETE, "stop")
    )
    second = await store.begin_turn(
        who, key, "two", collection_ids=[], history_messages=10, title="x", llm="m"
    )
    await store.end_turn(
        who.tenant_id, second.assistant_message_id, AnswerRecord("half", MessageStatus.CANCELLED, "cancelled")
    )
    third = await store.begin_turn(
        who, key, "three", collection_ids=[], history_messages=10, title="x", llm="m"
    )
    await store.end_turn(
        who.tenant_id, third.assistant_message_id, AnswerRecord("broken", MessageStatus.FAILED, "error")
    )
    fourth = await store.begin_turn(
        who, key, "four", collection_ids=[], history_messages=4, title="x", llm="m"
    )

    assert [(m.role, m.content) for m in fourth.history] == [
        ("assistant", "answer one"),
        ("user", "two"),
        ("assistant", "half"),
        ("user", "three"),
    ]
    messages = await store.messages(who, key)
    assert [m.ordinal for m in messages] == list(range(1, 9))
    assert (await store.get(who, key)).title == "one"  # a title is set once


async def test_answers_left_in_progress_by_a_stopped_host_are_failed(db_engine: AsyncEngine) -> None:
    store, who = Conversations(db_engine), owner()
    old = await store.begin_turn(
        who, None, "old", collection_ids=[], history_messages=0, title="old", llm="m"
    )
    fresh = await store.begin_turn(
        who, None, "new", collection_ids=[], history_messages=0, title="new", llm="m"
    )
    async with db_engine.begin() as conn:
        await conn.execute(
            sa.text("UPDATE intelligence.messages SET created_at = now() - interval '1 hour' WHERE id = :id"),
            {"id": old.assistant_message_id},
        )
    assert await store.fail_abandoned(600) >= 1
    [_question, answer] = await store.messages(who, old.conversation.id)
    assert (answer.status, answer.error_code) == ("failed", ABANDONED_CODE)
    [_question, waiting] = await store.messages(who, fresh.conversation.id)
    assert waiting.status == "in_progress"


def test_titles_are_the_first_line_cut_at_a_word() -> None:
    assert title_from("  How do wings\nmake lift?", 80) == "How do wings"
    assert title_from("word " * 40, 30) == "word word word word word word…"
    assert len(title_from("x" * 200, 30)) == 30
