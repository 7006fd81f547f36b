"""Chat orchestration: one turn of a conversation, from the stored question to the stored answer.

:meth:`Chat.start` checks everything a request names (conversation, collections, retriever, filter,
LLM) and stores the user's message, so that problems surface as errors before anything streams.
:meth:`Turn.events` then runs the turn: the retrieval query (the follow-up made standalone),
retrieval, the prompt (``prompt.py``), the model's stream with its citations verified as they arrive
(``citations.py``), and the stored answer. The answer is stored however the turn ends: complete,
cancelled (:meth:`Turn.cancel`, the consumer closing the event stream, or the task being cancelled:
the write is shielded) or failed; ``Finished`` is sent after it is stored.

Time limits: the whole turn has a deadline (``chat.deadline_seconds``, or less when the caller's own
deadline is nearer), counted from the turn's arrival, so the wait for a place among the
``chat.max_concurrent_turns`` (:attr:`Chat.admission`, held by the caller around the turn) is part
of it; the model must send something every ``chat.stall_timeout_seconds``
(``LLMTimeoutError``, code ``llm_timeout``, otherwise); a cancelled model gets
``chat.close_timeout_seconds`` to stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncGenerator, Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from opentier.components import LLM, ChatMessage, ComponentKind, SearchHit, SearchQuery, TextDelta, Usage
from opentier.config import ChatSettings
from opentier.db.models.intelligence import MessageStatus
from opentier.engine.chat.admission import Admission, auto_turn_limit, pool_busy
from opentier.engine.chat.citations import CitationFilter
from opentier.engine.chat.conversations import (
    AnswerRecord,
    ConversationInfo,
    Conversations,
    Owner,
    TurnRecord,
    title_from,
)
from opentier.engine.chat.events import (
    ChatEvent,
    Citation,
    Failure,
    Finished,
    FinishReason,
    Retrieved,
    Started,
    Timings,
    Token,
    UsageReport,
)
from opentier.engine.chat.generation import Generation, Interrupted, running
from opentier.engine.chat.prompt import Prompt, build_prompt
from opentier.engine.chat.rewrite import llm_query, terms_query
from opentier.engine.collections import CollectionInfo
from opentier.engine.filters import compile_filter
from opentier.engine.search import MAX_QUERY_CHARS, Search
from opentier.errors import InvalidRequestError, LLMTimeoutError, OpenTierError
from opentier.registry import Registry

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Most earlier messages a request may ask to see in the prompt.
MAX_HISTORY_MESSAGES = 200
#: Most earlier messages a client may supply with a request (the newest ``history_messages`` are used).
MAX_SUPPLIED_HISTORY = 10_000


class LLMNotAllowedError(InvalidRequestError):
    """A request names an LLM that this host does not let requests choose (``chat.allowed_llms``)."""

    code = "llm_not_allowed"
    grpc_status = "PERMISSION_DENIED"


class ChatDeadlineError(OpenTierError):
    """The turn ran out of time before the model was called (slow retrieval)."""

    code = "deadline_exceeded"
    grpc_status = "DEADLINE_EXCEEDED"


@dataclass(frozen=True, slots=True)
class TurnRequest:
    """One chat turn as the host received it (``ChatStart``); ``None``/empty means the default."""

    tenant_id: str
    message: str
    user_id: str | None = None
    conversation_id: str | None = None
    collection_ids: Sequence[str] = ()
    retriever: str | None = None
    filters: Mapping[str, Any] | None = None
    llm: str | None = None
    top_k: int = 0
    max_output_tokens: int | None = None
    temperature: float | None = None
    history_messages: int | None = None
    llm_options: Mapping[str, Any] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict)
    #: Earlier turns kept by the client (oldest first, ``user``/``assistant``): when non-empty, the
    #: prompt's history instead of the stored conversation's. Not stored.
    history: Sequence[ChatMessage] = ()


class Chat:
    """Starts chat turns; holds what every turn uses (settings, registry, search, conversations)."""

    def __init__(
        self, settings: ChatSettings, registry: Registry, search: Search, conversations: Conversations
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.search = search
        self.conversations = conversations
        #: The places of the turns that run at once, and the queue of those waiting for one.
        self.admission = Admission(
            settings.max_concurrent_turns or auto_turn_limit(), settings.max_queued_turns
        )

    def time_limit(self, deadline_seconds: float | None = None) -> float:
        """Seconds a turn may take: ``chat.deadline_seconds``, or the caller's own limit when nearer."""
        limit = self.settings.deadline_seconds
        return limit if deadline_seconds is None else min(limit, deadline_seconds)

    def llm(self, name: str | None) -> LLM:
        """The LLM a request names (if ``chat.allowed_llms`` lets it), else ``chat.llm``."""
        chosen = name or self.settings.llm
        allowed = self.settings.allowed_llms
        if chosen != self.settings.llm and "*" not in allowed and chosen not in allowed:
            others = ", ".join(sorted(allowed)) or "none"
            raise LLMNotAllowedError(
                f"a request may not choose the LLM {chosen!r} on this host: it uses {self.settings.llm!r}"
                f" (other choices allowed by chat.allowed_llms: {others})"
            )
        component = self.registry.get(ComponentKind.LLM, chosen)
        assert isinstance(component, LLM)
        return component

    async def create_conversation(
        self,
        owner: Owner,
        *,
        title: str = "",
        collection_ids: Sequence[str] = (),
        metadata: Mapping[str, Any] | None = None,
    ) -> ConversationInfo:
        """A new, empty conversation; its collections must be the tenant's."""
        scope = await self.search.resolve(owner.tenant_id, collection_ids) if collection_ids else []
        return await self.conversations.create(
            owner, title=title, collection_ids=[c.id for c in scope], metadata=metadata
        )

    async def start(
        self, request: TurnRequest, *, deadline_seconds: float | None = None, began: float | None = None
    ) -> Turn:
        """Check the request, store the user's message, and return the turn (not yet running).

        :param deadline_seconds: the caller's own time limit, when nearer than ``chat.deadline_seconds``.
        :param began: when the turn arrived (event loop time), if before now: its deadline and timings
            count from then. Default: now.
        """
        loop = asyncio.get_running_loop()
        began = loop.time() if began is None else began
        settings = self.settings
        message = request.message.strip()
        if not message:
            raise InvalidRequestError("the message is empty")
        if len(message) > settings.max_message_chars:
            raise InvalidRequestError(
                f"the message has {len(message)} characters; this host accepts at most "
                f"{settings.max_message_chars} (chat.max_message_chars)"
            )
        llm = self.llm(request.llm)
        owner = Owner(request.tenant_id, request.user_id or None)
        conversation: ConversationInfo | None = None
        if request.conversation_id:
            conversation = await self.conversations.get(owner, request.conversation_id)
        scope: list[CollectionInfo] = []
        if request.collection_ids:
            scope = await self.search.resolve(owner.tenant_id, request.collection_ids)
        elif conversation is not None and conversation.collection_ids:
            # The conversation's collections that still exist: deleting one must not break the chat.
            kept = set(conversation.collection_ids)
            scope = [c for c in await self.search.resolve(owner.tenant_id, []) if c.id in kept]
        retriever = self.search.retriever(request.retriever or None) if scope or request.retriever else None
        if request.filters:
            compile_filter(request.filters, "c")
        options = _Options.of(request, settings, self.search)
        _check_history(request.history)
        # A message too long for the model's window is refused now, before anything is stored.
        build_prompt(
            llm, settings, message, [], None, max_output_tokens=options.max_output_tokens, temperature=0.0
        )
        record = await self.conversations.begin_turn(
            owner,
            conversation.id if conversation else None,
            message,
            collection_ids=[c.id for c in scope],
            history_messages=options.history_messages,
            title=title_from(message, settings.title_chars),
            llm=llm.name,
            metadata=request.metadata,
            supplied_history=request.history,
        )
        limit = self.time_limit(deadline_seconds)
        return Turn(
            self,
            owner=owner,
            message=message,
            llm=llm,
            record=record,
            scope=scope,
            retriever=retriever.name if retriever is not None and scope else "",
            filters=request.filters,
            options=options,
            llm_options=request.llm_options,
            began=began,
            deadline=began + limit,
        )


def _check_history(history: Sequence[ChatMessage]) -> None:
    if len(history) > MAX_SUPPLIED_HISTORY:
        raise InvalidRequestError(
            f"the request carries {len(history)} history messages; at most {MAX_SUPPLIED_HISTORY} are "
            "accepted"
        )
    for index, message in enumerate(history):
        if message.role not in ("user", "assistant"):
            raise InvalidRequestError(
                f"history[{index}] has the role {message.role!r}; only user and assistant messages are "
                "accepted (the host's system prompt applies)"
            )


@dataclass(frozen=True, slots=True)
class _Options:
    top_k: int
    max_output_tokens: int
    temperature: float
    history_messages: int

    @classmethod
    def of(cls, request: TurnRequest, settings: ChatSettings, search: Search) -> _Options:
        most = settings.max_output_tokens
        output = most if request.max_output_tokens is None else request.max_output_tokens
        if output < 1:
            raise InvalidRequestError("options.max_output_tokens must be 1 or more")
        temperature = settings.temperature if request.temperature is None else request.temperature
        if not 0.0 <= temperature <= 2.0:
            raise InvalidRequestError(f"options.temperature must be from 0 to 2, not {temperature}")
        history = settings.history_messages if request.history_messages is None else request.history_messages
        if not 0 <= history <= MAX_HISTORY_MESSAGES:
            raise InvalidRequestError(f"options.history_messages must be from 0 to {MAX_HISTORY_MESSAGES}")
        return cls(search.top_k(request.top_k), min(output, most), temperature, history)


class _Cancelled(Exception):
    """The turn was cancelled before the model was called."""


class Turn:
    """One running chat turn: iterate :meth:`events` once; :meth:`cancel` stops it, keeping the
    partial answer."""

    def __init__(
        self,
        chat: Chat,
        *,
        owner: Owner,
        message: str,
        llm: LLM,
        record: TurnRecord,
        scope: Sequence[CollectionInfo],
        retriever: str,
        filters: Mapping[str, Any] | None,
        options: _Options,
        llm_options: Mapping[str, Any],
        began: float,
        deadline: float,
    ) -> None:
        self._chat = chat
        self._settings = chat.settings
        self._owner = owner
        self._message = message
        self._llm = llm
        self._record = record
        self._scope = list(scope)
        self._retriever = retriever
        self._filters = filters
        self._options = options
        self._llm_options = dict(llm_options)
        self._began = began
        self._deadline = deadline
        self._cancel = asyncio.Event()
        self._generation: Generation | None = None
        self._filter: CitationFilter | None = None
        self._prompt: Prompt | None = None
        self._query = ""
        self._shown: list[str] = []
        self._raw: list[str] = []
        self._reported: Usage | None = None
        self._first_token_at: float | None = None
        self._ended_at: float | None = None
        self._stored: asyncio.Future[bool] | None = None
        # The text so far, written every chat.checkpoint_seconds while the answer streams.
        self._checkpointed_at = began
        self._checkpointing: asyncio.Future[bool] | None = None
        self.started = Started(
            conversation_id=record.conversation.id,
            conversation_created=record.created,
            user_message_id=record.user_message_id,
            assistant_message_id=record.assistant_message_id,
            llm=llm.name,
            retriever=retriever,
        )

    @property
    def message_id(self) -> uuid.UUID:
        return self._record.assistant_message_id

    def cancel(self, reason: str = "") -> None:
        """Stop the turn at its next step (at once while waiting for the model or retrieval)."""
        if self._cancel.is_set():
            return
        log.info("chat turn %s cancelled%s", self.message_id, f": {reason}" if reason else "")
        self._cancel.set()
        if self._generation is not None:
            self._generation.interrupt()

    async def events(self) -> AsyncGenerator[ChatEvent, None]:
        """The turn's events; the answer is stored before ``Finished``, or when iteration stops early."""
        yield self.started
        status, error = MessageStatus.COMPLETE, None
        try:
            async with contextlib.aclosing(self._answer()) as answer:
                async for event in answer:
                    yield event
        except (_Cancelled, Interrupted):
            status = MessageStatus.CANCELLED
        except OpenTierError as err:
            status, error = MessageStatus.FAILED, err
        except Exception as err:
            busy = pool_busy(err)
            if busy is None:
                log.error("chat turn %s failed unexpectedly", self.message_id, exc_info=err)
            status, error = (
                MessageStatus.FAILED,
                busy or OpenTierError("the chat turn failed; the host log has the details"),
            )
        except BaseException:
            # The consumer closed the stream (client gone) or this task was cancelled: keep the answer.
            await self._store(MessageStatus.CANCELLED, FinishReason.CANCELLED, None)
            raise
        if self._filter is not None and self._filter.held:
            rest = self._filter.finish()
            if rest.text:
                yield self._token(rest.text)
        reason = {
            MessageStatus.CANCELLED: FinishReason.CANCELLED,
            MessageStatus.FAILED: FinishReason.ERROR,
        }.get(status, FinishReason.STOP)
        usage = self._usage()
        prompt = self._prompt
        if (
            status == MessageStatus.COMPLETE
            and prompt
            and usage.output_tokens >= prompt.request.max_output_tokens
        ):
            reason = FinishReason.LENGTH
        await self._store(status, reason, error)
        yield usage
        if error is not None:
            yield Failure(error)
        yield Finished(self.message_id, self._record.conversation.id, status, reason, self._timings())

    async def abandon(self) -> None:
        """Store the answer as cancelled if :meth:`events` did not get to store it (safe to repeat)."""
        if self._generation is not None:
            await self._generation.stop()
        await self._store(MessageStatus.CANCELLED, FinishReason.CANCELLED, None)

    # -- the steps -----------------------------------------------------------------------------

    async def _answer(self) -> AsyncGenerator[ChatEvent, None]:
        hits: list[SearchHit] | None = None
        if self._scope:
            self._query = await self._retrieval_query()
            hits = await self._within_deadline(self._search(self._query), "retrieving the sources")
            if not hits and self._settings.no_sources == "refuse":
                yield Retrieved(self._query, 0)
                yield self._token(self._settings.no_sources_answer)
                return
        if self._cancel.is_set():
            raise _Cancelled()
        self._prompt = prompt = build_prompt(
            self._llm,
            self._settings,
            self._message,
            self._record.history,
            hits,
            max_output_tokens=self._options.max_output_tokens,
            temperature=self._options.temperature,
            options=self._llm_options,
        )
        if hits is not None:
            yield Retrieved(self._query, len(prompt.sources))
        sources = {source.number: source for source in prompt.sources}
        self._filter = citations = CitationFilter(
            sources.keys(), self._settings.citation_mode, self._settings.citation_flag_format
        )
        self._generation = generation = Generation(
            self._llm, prompt.request, close_timeout=self._settings.close_timeout_seconds
        )
        async with running(generation):
            while True:
                event = await self._next(generation)
                if event is None:
                    break
                if isinstance(event, Usage):
                    self._reported = event
                    continue
                self._raw.append(event.text)
                verified = citations.feed(event.text)
                for number in verified.new_citations:
                    yield Citation(sources[number])
                if verified.text:
                    yield self._token(verified.text)
        rest = citations.finish()
        for number in rest.new_citations:
            yield Citation(sources[number])
        if rest.text:
            yield self._token(rest.text)

    async def _retrieval_query(self) -> str:
        history = self._record.history
        mode = self._settings.rewrite
        if mode == "off" or not history:
            return self._message
        terms = terms_query(self._message, history, self._settings.rewrite_terms)
        if mode == "terms":
            return terms
        budget = min(self._settings.stall_timeout_seconds, self._remaining())
        try:
            return await self._interruptible(
                llm_query(self._llm, self._settings, self._message, history), budget
            )
        except TimeoutError:
            log.warning(
                "rewriting a follow-up with %s took over %.1fs; using its key terms", self._llm.name, budget
            )
            return terms

    async def _search(self, query: str) -> list[SearchHit]:
        search = self._chat.search
        found = await search.search(
            SearchQuery(
                text=query[:MAX_QUERY_CHARS],
                tenant_id=self._owner.tenant_id,
                collection_ids=[str(c.id) for c in self._scope],
                top_k=self._options.top_k,
                filters=self._filters,
            ),
            retriever=self._retriever,
        )
        least = self._settings.min_scores.get(self._retriever)
        return [hit for hit in found if least is None or hit.score >= least]

    async def _next(self, generation: Generation) -> TextDelta | Usage | None:
        remaining = self._remaining()
        stall = self._settings.stall_timeout_seconds
        try:
            return await generation.next(max(0.0, min(stall, remaining)))
        except LLMTimeoutError:
            if remaining < stall:
                limit = self._deadline - self._began
                raise LLMTimeoutError(
                    f"the answer of {self._llm.name!r} did not finish within the turn's deadline of "
                    f"{limit:g} seconds (chat.deadline_seconds, or the caller's deadline)"
                ) from None
            raise

    async def _within_deadline(self, work: Awaitable[T], what: str) -> T:
        try:
            return await self._interruptible(work, self._remaining())
        except TimeoutError:
            limit = self._deadline - self._began
            raise ChatDeadlineError(
                f"the chat turn ran out of time ({limit:g} seconds) while {what}"
            ) from None

    async def _interruptible(self, work: Awaitable[T], seconds: float) -> T:
        """``work``'s result; :class:`_Cancelled` on :meth:`cancel`, ``TimeoutError`` after ``seconds``."""
        task = asyncio.ensure_future(work)
        cancelled = asyncio.ensure_future(self._cancel.wait())
        try:
            done, _ = await asyncio.wait(
                {task, cancelled}, timeout=max(0.0, seconds), return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            cancelled.cancel()
            if not task.done():
                task.cancel()
                await asyncio.wait({task}, timeout=self._settings.close_timeout_seconds)
        if task in done:
            return task.result()
        if self._cancel.is_set():
            raise _Cancelled()
        raise TimeoutError()

    # -- bookkeeping ---------------------------------------------------------------------------

    def _remaining(self) -> float:
        return self._deadline - asyncio.get_running_loop().time()

    def _token(self, text: str) -> Token:
        now = asyncio.get_running_loop().time()
        if self._first_token_at is None:
            self._first_token_at = now
        self._shown.append(text)
        self._checkpoint(now)
        return Token(text)

    def _checkpoint(self, now: float) -> None:
        """Write the text so far in the background, at most every ``chat.checkpoint_seconds`` and one
        write at a time; never delays the stream, and a failed write only costs the checkpoint."""
        every = self._settings.checkpoint_seconds
        if not every or now - self._checkpointed_at < every or self._stored is not None:
            return
        if self._checkpointing is not None and not self._checkpointing.done():
            return
        self._checkpointed_at = now
        self._checkpointing = asyncio.ensure_future(
            self._chat.conversations.checkpoint(self._owner.tenant_id, self.message_id, "".join(self._shown))
        )
        self._checkpointing.add_done_callback(self._checkpoint_callback)

    def _checkpoint_callback(self, future: asyncio.Future[bool]) -> None:
        if not future.cancelled() and (problem := future.exception()) is not None:
            log.warning("chat turn %s: the text so far could not be written: %s", self.message_id, problem)

    def _usage(self) -> UsageReport:
        if self._reported is not None:
            return UsageReport(
                self._reported.input_tokens, self._reported.output_tokens, self._llm.name, True
            )
        if self._prompt is None:
            return UsageReport(0, 0, self._llm.name, False)
        raw = "".join(self._raw)
        output = self._llm.count_tokens(raw) if raw else 0
        return UsageReport(self._prompt.input_tokens, output, self._llm.name, False)

    def _timings(self) -> Timings:
        end = self._ended_at if self._ended_at is not None else asyncio.get_running_loop().time()
        first = self._first_token_at
        return Timings(
            time_to_first_token_ms=None if first is None else round((first - self._began) * 1000),
            total_ms=round((end - self._began) * 1000),
        )

    async def _store(self, status: MessageStatus, reason: FinishReason, error: OpenTierError | None) -> None:
        """Write how the answer ended, once; the write finishes even if this task is cancelled."""
        if self._stored is None:
            self._ended_at = asyncio.get_running_loop().time()
            usage = self._usage()
            citations = self._filter.cited if self._filter is not None else []
            metadata: dict[str, Any] = {"usage_reported": usage.reported}
            if self._query:
                metadata["query"] = self._query
            if self._filter is not None and self._filter.unverified:
                metadata["unverified_citations"] = list(self._filter.unverified)
            timings = self._timings()
            record = AnswerRecord(
                content="".join(self._shown),
                status=status,
                finish_reason=reason.value,
                sources=self._prompt.sources if self._prompt is not None else [],
                citations=citations,
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                error_code=error.code if error is not None else None,
                error_message=error.message if error is not None else None,
                time_to_first_token_ms=timings.time_to_first_token_ms,
                total_ms=timings.total_ms,
                metadata=metadata,
            )
            self._stored = asyncio.ensure_future(
                self._chat.conversations.end_turn(self._owner.tenant_id, self.message_id, record)
            )
            self._stored.add_done_callback(self._stored_callback)
            log.info(
                "chat turn %s: %s (%s) in %d ms, first token %s ms, %d/%d tokens",
                self.message_id,
                status.value,
                reason.value,
                timings.total_ms,
                timings.time_to_first_token_ms,
                usage.input_tokens,
                usage.output_tokens,
            )
        await asyncio.shield(self._stored)

    def _stored_callback(self, future: asyncio.Future[bool]) -> None:
        if future.cancelled():
            log.error("storing the answer %s was cancelled", self.message_id)
        elif (problem := future.exception()) is not None:
            log.error("could not store the answer %s", self.message_id, exc_info=problem)
        elif not future.result():
            log.info("the conversation of answer %s was deleted during the turn", self.message_id)
