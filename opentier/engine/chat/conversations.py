"""Conversations and their messages in PostgreSQL, always within one tenant (and user).

An :class:`Owner` is who asks: a tenant, and a user when the caller names one. A user sees only the
conversations they own; a call on behalf of the tenant itself (no user, e.g. an API key) sees all of
the tenant's. Another tenant's conversation and one that does not exist give the same
:class:`NotFoundError`.

A chat turn writes twice: :meth:`Conversations.begin_turn` commits the user's message together with
the answer's row (``in_progress``) before anything is generated, and :meth:`Conversations.end_turn`
fills the answer in (text, sources, citations, usage, status) when its stream ends, in any way.
"""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from opentier.components import ChatMessage
from opentier.db.models.intelligence import Conversation, Message, MessageRole, MessageStatus
from opentier.engine.chat.sources import NumberedSource
from opentier.engine.collections import parse_id
from opentier.engine.pagination import Page, decode_token, encode_token
from opentier.errors import InvalidRequestError, NotFoundError

TITLE_MAX = 200
#: Error code of an answer whose host stopped before it ended.
ABANDONED_CODE = "host_stopped"
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500


@dataclass(frozen=True, slots=True)
class Owner:
    tenant_id: str
    #: ``None``: the tenant itself, which sees every conversation of the tenant.
    user_id: str | None = None

    def __post_init__(self) -> None:
        if not self.tenant_id:
            raise InvalidRequestError("the caller has no tenant")


@dataclass(frozen=True, slots=True)
class ConversationInfo:
    id: uuid.UUID
    tenant_id: str
    user_id: str | None
    title: str
    collection_ids: list[uuid.UUID]
    metadata: dict[str, Any]
    message_count: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class MessageInfo:
    id: uuid.UUID
    conversation_id: uuid.UUID
    ordinal: int
    role: str
    content: str
    status: str
    finish_reason: str | None
    sources: list[NumberedSource]
    #: Source numbers the answer cites, in order of first citation.
    citations: list[int]
    llm: str | None
    input_tokens: int | None
    output_tokens: int | None
    error_code: str | None
    error_message: str | None
    time_to_first_token_ms: int | None
    total_ms: int | None
    metadata: dict[str, Any]
    created_at: datetime
    completed_at: datetime | None

    @property
    def cited_sources(self) -> list[NumberedSource]:
        by_number = {source.number: source for source in self.sources}
        return [by_number[number] for number in self.citations if number in by_number]


@dataclass(frozen=True, slots=True)
class TurnRecord:
    """What :meth:`Conversations.begin_turn` wrote and read."""

    conversation: ConversationInfo
    created: bool
    user_message_id: uuid.UUID
    assistant_message_id: uuid.UUID
    #: Earlier messages worth showing the model (complete answers and cancelled partial ones),
    #: oldest first, at most the number asked for.
    history: list[ChatMessage]


@dataclass(frozen=True, slots=True)
class AnswerRecord:
    """How an answer ended: what :meth:`Conversations.end_turn` stores."""

    content: str
    status: MessageStatus
    finish_reason: str
    sources: Sequence[NumberedSource] = ()
    citations: Sequence[int] = ()
    input_tokens: int | None = None
    output_tokens: int | None = None
    error_code: str | None = None
    error_message: str | None = None
    time_to_first_token_ms: int | None = None
    total_ms: int | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)


class Conversations:
    """Create, read, list, rename and delete conversations, and write the turns of a chat."""

    def __init__(self, db: AsyncEngine) -> None:
        self.db = db

    async def create(
        self,
        owner: Owner,
        *,
        title: str = "",
        collection_ids: Sequence[uuid.UUID] = (),
        metadata: Mapping[str, Any] | None = None,
    ) -> ConversationInfo:
        async with self.db.begin() as conn:
            key = await _insert(conn, owner, _check_title(title, allow_empty=True), collection_ids, metadata)
        return await self.get(owner, key)

    async def get(self, owner: Owner, conversation_id: uuid.UUID | str) -> ConversationInfo:
        key = parse_id(conversation_id, "conversation")
        async with self.db.connect() as conn:
            row = (await conn.execute(_select().where(_scope(owner), Conversation.id == key))).one_or_none()
        if row is None:
            raise NotFoundError(f"conversation {conversation_id} does not exist")
        return _conversation(row)

    async def list(self, owner: Owner, page_size: int = 0, page_token: str = "") -> Page[ConversationInfo]:
        """Most recently updated first."""
        size = max(1, min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE))
        query = _select().where(_scope(owner))
        if page_token:
            moment, after = decode_token(page_token, 2)
            try:
                position = (datetime.fromisoformat(moment), uuid.UUID(after))
            except ValueError:
                raise InvalidRequestError("the page token is not one this server issued") from None
            query = query.where(sa.tuple_(Conversation.updated_at, Conversation.id) < position)
        query = query.order_by(Conversation.updated_at.desc(), Conversation.id.desc()).limit(size + 1)
        async with self.db.connect() as conn:
            rows = (await conn.execute(query)).all()
        items = [_conversation(row) for row in rows[:size]]
        token = ""
        if len(rows) > size:
            token = encode_token(items[-1].updated_at.isoformat(), str(items[-1].id))
        return Page(items, token)

    async def messages(self, owner: Owner, conversation_id: uuid.UUID | str) -> builtins.list[MessageInfo]:
        """The conversation's messages, oldest first."""
        conversation = await self.get(owner, conversation_id)
        query = (
            sa.select(Message.__table__)
            .where(Message.conversation_id == conversation.id, Message.tenant_id == owner.tenant_id)
            .order_by(Message.ordinal)
        )
        async with self.db.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_message(row) for row in rows]

    async def update(
        self,
        owner: Owner,
        conversation_id: uuid.UUID | str,
        *,
        title: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> ConversationInfo:
        key = parse_id(conversation_id, "conversation")
        values: dict[str, Any] = {}
        if title is not None:
            values["title"] = _check_title(title, allow_empty=False)
        if metadata is not None:
            values["meta"] = dict(metadata)
        if values:
            async with self.db.begin() as conn:
                result = await conn.execute(
                    sa.update(Conversation).where(_scope(owner), Conversation.id == key).values(**values)
                )
                if result.rowcount == 0:
                    raise NotFoundError(f"conversation {conversation_id} does not exist")
        return await self.get(owner, key)

    async def delete(self, owner: Owner, conversation_id: uuid.UUID | str) -> int:
        """Delete the conversation with its messages; return how many messages went with it."""
        key = parse_id(conversation_id, "conversation")
        async with self.db.begin() as conn:
            found = await conn.scalar(
                sa.select(Conversation.id).where(_scope(owner), Conversation.id == key).with_for_update()
            )
            if found is None:
                raise NotFoundError(f"conversation {conversation_id} does not exist")
            messages = await conn.scalar(
                sa.select(sa.func.count()).select_from(Message).where(Message.conversation_id == key)
            )
            await conn.execute(sa.delete(Conversation).where(Conversation.id == key))
        return int(messages or 0)

    async def begin_turn(
        self,
        owner: Owner,
        conversation_id: uuid.UUID | None,
        message: str,
        *,
        collection_ids: Sequence[uuid.UUID],
        history_messages: int,
        title: str,
        llm: str,
        metadata: Mapping[str, Any] | None = None,
        supplied_history: Sequence[ChatMessage] = (),
    ) -> TurnRecord:
        """Store the user's ``message`` and the answer's row (``in_progress``), in a new conversation
        when ``conversation_id`` is ``None``; commit before returning.

        The conversation's row is locked meanwhile, so two turns of one conversation get distinct,
        ordered positions. A conversation without a title takes ``title``. The record's history is
        ``supplied_history`` when the client sent one (its newest ``history_messages``), else the
        stored conversation's.
        """
        async with self.db.begin() as conn:
            created = conversation_id is None
            if conversation_id is None:
                conversation_id = await _insert(conn, owner, title, collection_ids, None)
            else:
                found = (
                    await conn.execute(
                        sa.select(Conversation.id, Conversation.title)
                        .where(_scope(owner), Conversation.id == conversation_id)
                        .with_for_update()
                    )
                ).one_or_none()
                if found is None:
                    raise NotFoundError(f"conversation {conversation_id} does not exist")
                changes: dict[str, Any] = {"updated_at": sa.func.now()}
                if not found.title:
                    changes["title"] = title
                await conn.execute(
                    sa.update(Conversation).where(Conversation.id == conversation_id).values(**changes)
                )
            if supplied_history:
                history = _newest(supplied_history, history_messages)
            else:
                history = await _history(conn, conversation_id, history_messages)
            last = await conn.scalar(
                sa.select(sa.func.coalesce(sa.func.max(Message.ordinal), 0)).where(
                    Message.conversation_id == conversation_id
                )
            )
            rows = await conn.execute(
                sa.insert(Message)
                .values(
                    [
                        {
                            "conversation_id": conversation_id,
                            "tenant_id": owner.tenant_id,
                            "ordinal": int(last or 0) + 1,
                            "role": MessageRole.USER.value,
                            "content": message,
                            "status": MessageStatus.COMPLETE.value,
                            "llm": None,
                            "meta": dict(metadata or {}),
                            "completed_at": sa.func.now(),
                        },
                        {
                            "conversation_id": conversation_id,
                            "tenant_id": owner.tenant_id,
                            "ordinal": int(last or 0) + 2,
                            "role": MessageRole.ASSISTANT.value,
                            "content": "",
                            "status": MessageStatus.IN_PROGRESS.value,
                            "llm": llm,
                            "meta": {},
                            "completed_at": None,
                        },
                    ]
                )
                .returning(Message.id, Message.ordinal)
            )
            ids = {ordinal: key for key, ordinal in rows.all()}
            found_row = (await conn.execute(_select().where(Conversation.id == conversation_id))).one()
        conversation = _conversation(found_row)
        return TurnRecord(
            conversation=conversation,
            created=created,
            user_message_id=ids[int(last or 0) + 1],
            assistant_message_id=ids[int(last or 0) + 2],
            history=history,
        )

    async def checkpoint(self, tenant_id: str, message_id: uuid.UUID, content: str) -> bool:
        """Write the text so far of an answer still in progress (what a host that dies mid-answer
        leaves behind); ``False`` when the answer has ended (its final row is never overwritten)."""
        async with self.db.begin() as conn:
            written = await conn.scalar(
                sa.update(Message)
                .where(
                    Message.id == message_id,
                    Message.tenant_id == tenant_id,
                    Message.status == MessageStatus.IN_PROGRESS.value,
                )
                .values(content=content)
                .returning(Message.id)
            )
        return written is not None

    async def end_turn(self, tenant_id: str, message_id: uuid.UUID, answer: AnswerRecord) -> bool:
        """Store how the answer ended; ``False`` when its conversation was deleted meanwhile."""
        async with self.db.begin() as conn:
            conversation_id = await conn.scalar(
                sa.update(Message)
                .where(Message.id == message_id, Message.tenant_id == tenant_id)
                .values(
                    content=answer.content,
                    status=answer.status.value,
                    finish_reason=answer.finish_reason,
                    sources=[source.to_json() for source in answer.sources],
                    citations=list(answer.citations),
                    input_tokens=answer.input_tokens,
                    output_tokens=answer.output_tokens,
                    error_code=answer.error_code,
                    error_message=answer.error_message,
                    time_to_first_token_ms=answer.time_to_first_token_ms,
                    total_ms=answer.total_ms,
                    meta=dict(answer.metadata),
                    completed_at=sa.func.now(),
                )
                .returning(Message.conversation_id)
            )
            if conversation_id is None:
                return False
            await conn.execute(
                sa.update(Conversation)
                .where(Conversation.id == conversation_id)
                .values(updated_at=sa.func.now())
            )
        return True

    async def fail_abandoned(self, older_than_seconds: float) -> int:
        """Mark answers still ``in_progress`` after ``older_than_seconds`` as failed; return how many.

        A turn never outlives its deadline, so such an answer belonged to a host that stopped
        without finishing it (a crash, a kill); its partial text is lost, its row says why.
        """
        async with self.db.begin() as conn:
            result = await conn.execute(
                sa.update(Message)
                .where(
                    Message.status == MessageStatus.IN_PROGRESS.value,
                    Message.created_at
                    < sa.func.now() - sa.func.make_interval(0, 0, 0, 0, 0, 0, older_than_seconds),
                )
                .values(
                    status=MessageStatus.FAILED.value,
                    finish_reason="error",
                    error_code=ABANDONED_CODE,
                    error_message="the host stopped before this answer ended",
                    completed_at=sa.func.now(),
                )
            )
        return int(result.rowcount or 0)


def title_from(message: str, limit: int) -> str:
    """A conversation title from its first message: the first line, cut at a word near ``limit``."""
    line = " ".join(message.strip().splitlines()[0].split()) if message.strip() else ""
    if len(line) <= limit:
        return line
    cut = line[: limit - 1]
    if line[limit - 1] != " " and " " in cut[limit // 2 :]:
        cut = cut.rsplit(" ", 1)[0]  # not in the middle of a word
    return cut.rstrip(" ,;:.") + "…"


def _scope(owner: Owner) -> sa.ColumnElement[bool]:
    condition = Conversation.tenant_id == owner.tenant_id
    if owner.user_id:
        condition = sa.and_(condition, Conversation.user_id == owner.user_id)
    return condition


def _check_title(title: str, *, allow_empty: bool) -> str:
    title = " ".join(title.split())
    if (not title and not allow_empty) or len(title) > TITLE_MAX:
        raise InvalidRequestError(f"a conversation title must have 1 to {TITLE_MAX} characters")
    return title


async def _insert(
    conn: AsyncConnection,
    owner: Owner,
    title: str,
    collection_ids: Sequence[uuid.UUID],
    metadata: Mapping[str, Any] | None,
) -> uuid.UUID:
    key = await conn.scalar(
        sa.insert(Conversation)
        .values(
            tenant_id=owner.tenant_id,
            user_id=owner.user_id or None,
            title=title,
            collection_ids=list(dict.fromkeys(collection_ids)),
            meta=dict(metadata or {}),
        )
        .returning(Conversation.id)
    )
    assert isinstance(key, uuid.UUID)
    return key


def _newest(messages: Sequence[ChatMessage], limit: int) -> list[ChatMessage]:
    """The last ``limit`` of ``messages`` that have content, oldest first."""
    shown = [message for message in messages if message.content.strip()]
    return shown[len(shown) - limit :] if limit > 0 else []


async def _history(conn: AsyncConnection, conversation_id: uuid.UUID, limit: int) -> list[ChatMessage]:
    if limit <= 0:
        return []
    shown = [MessageStatus.COMPLETE.value, MessageStatus.CANCELLED.value]
    rows = (
        await conn.execute(
            sa.select(Message.role, Message.content)
            .where(
                Message.conversation_id == conversation_id,
                Message.status.in_(shown),
                Message.role.in_([MessageRole.USER.value, MessageRole.ASSISTANT.value]),
                Message.content != "",
            )
            .order_by(Message.ordinal.desc())
            .limit(limit)
        )
    ).all()
    return [ChatMessage(row.role, row.content) for row in reversed(rows)]


def _select() -> sa.Select[Any]:
    count = sa.select(sa.func.count()).where(Message.conversation_id == Conversation.id).scalar_subquery()
    return sa.select(Conversation.__table__, count.label("message_count"))


def _conversation(row: sa.Row[Any]) -> ConversationInfo:
    data = row._mapping
    return ConversationInfo(
        id=data["id"],
        tenant_id=data["tenant_id"],
        user_id=data["user_id"],
        title=data["title"],
        collection_ids=list(data["collection_ids"] or []),
        metadata=dict(data["metadata"] or {}),
        message_count=int(data["message_count"]),
        created_at=data["created_at"],
        updated_at=data["updated_at"],
    )


def _message(row: sa.Row[Any]) -> MessageInfo:
    data = row._mapping
    return MessageInfo(
        id=data["id"],
        conversation_id=data["conversation_id"],
        ordinal=data["ordinal"],
        role=data["role"],
        content=data["content"],
        status=data["status"],
        finish_reason=data["finish_reason"],
        sources=[NumberedSource.from_json(item) for item in data["sources"] or []],
        citations=[int(number) for number in data["citations"] or []],
        llm=data["llm"],
        input_tokens=data["input_tokens"],
        output_tokens=data["output_tokens"],
        error_code=data["error_code"],
        error_message=data["error_message"],
        time_to_first_token_ms=data["time_to_first_token_ms"],
        total_ms=data["total_ms"],
        metadata=dict(data["metadata"] or {}),
        created_at=data["created_at"],
        completed_at=data["completed_at"],
    )
