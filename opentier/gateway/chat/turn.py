"""One chat turn relayed from the host: :class:`ChatTurn`.

A turn opens the host's bidirectional ``Chat`` call (:meth:`opentier.gateway.host.HostClient.chat`),
sends ``start``, and yields the host's events as :class:`~opentier.gateway.chat.events.TurnEvent`
values. Its contract, which every transport relies on:

- Problems found before ``started`` (unknown conversation or component, invalid request, host down,
  token quota already used up) are raised from the first ``__anext__`` as
  :class:`~opentier.errors.OpenTierError`, so an HTTP transport can still answer with a status.
- After ``started`` nothing is raised: a failure (the host died, the deadline passed) becomes an
  ``error`` event and then a ``done`` event (status ``failed`` when the host could not say).
- :meth:`cancel` sends ``ChatCancel`` to the host; the host stops the LLM, stores the partial answer as
  ``cancelled`` and the turn still ends with ``usage`` and ``done``. Closing the iterator early
  (``aclose``, the task cancelled) cancels the gRPC call, which also stops the LLM.
- Token quota: before starting, the caller's quotas are checked (refused: ``QuotaExceededError``).
  While tokens stream, their count is estimated (:func:`opentier.gateway.limits.quotas.estimate_tokens`);
  when used + estimate reaches a limit the turn cancels itself and yields a ``quota`` event after the
  host's ``usage``, before ``done`` (the order of :mod:`~opentier.gateway.chat.events`). The host's
  ``usage`` event is what is charged (``TokenQuotas.charge``), once per turn, whatever way the turn
  ends; with no usage event (host died) the estimate is charged. Charging only records the tokens (the
  next check counts them at once; the ledger writer stores them shortly after), so ``usage`` and
  ``done`` are relayed without waiting on the database.
- Taken-away access (docs/admin-users.md): the turn checks its caller against the database
  (:func:`~opentier.gateway.identity.liveness.check_live`) before it starts, unless that was confirmed
  moments ago (by the HTTP request that made the turn, or within ``streaming.revalidate_seconds`` on
  the same WebSocket) — a credential that no longer works (a WebSocket opened before) is refused like a
  request, ``AuthenticationError`` or
  ``PermissionDeniedError``, with :attr:`ChatTurn.ending` set — and then every
  ``streaming.revalidate_seconds``, for what other gateways changed; while it runs it is also tracked in
  the app's :class:`~opentier.gateway.chat.revocation.OpenStreams`, where this gateway's admin
  operations end it at once. Either way the turn cancels itself like a client's cancel (the partial
  answer is stored as ``cancelled``) and yields an ``error`` event with the
  :class:`~opentier.gateway.chat.revocation.Ending`'s code after the host's ``usage``, before ``done``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

from quart import has_app_context, has_request_context
from sqlalchemy.ext.asyncio import AsyncEngine

from opentier.errors import DatabaseError, HostUnavailableError, OpenTierError
from opentier.gateway.chat.events import TurnEvent, error_event, from_host, quota_event
from opentier.gateway.chat.revocation import Ending, OpenStream, OpenStreams, open_streams, refusal
from opentier.gateway.chat.start import ChatStartRequest
from opentier.gateway.host import HostChat, HostClient
from opentier.gateway.identity.liveness import check_live
from opentier.gateway.limits.quotas import QuotaWindow, TokenQuotas, UsageCharge, estimate_tokens
from opentier.gateway.principal import Principal
from opentier.gateway.state import gateway_state
from opentier.generated.intelligence.v1 import common_pb2

log = logging.getLogger(__name__)

#: Reason sent to the host when the caller's token quota ends the turn.
QUOTA_CANCEL_REASON = "token quota used up"

#: Why a principal may no longer stream, or None (:func:`~opentier.gateway.identity.liveness.check_live`).
LivenessCheck = Callable[[Principal], Awaitable[Ending | None]]


class ChatTurn:
    """One turn; iterate :meth:`events` once."""

    def __init__(
        self,
        client: HostClient,
        principal: Principal,
        caller: common_pb2.Caller,
        start: ChatStartRequest,
        *,
        quotas: TokenQuotas | None = None,
        deadline_seconds: float | None = None,
        streams: OpenStreams | None = None,
        liveness: LivenessCheck | None = None,
        revalidate_seconds: float | None = None,
    ) -> None:
        self.client = client
        self.principal = principal
        self.caller = caller
        self.start = start
        self.quotas = quotas
        # Made in a request or WebSocket (every transport): the app's registry and database, by default.
        if streams is None and has_app_context():
            streams = open_streams()
        if liveness is None and has_app_context():
            liveness = _database_check(gateway_state().engine)
        #: Where this gateway's admin operations find the turn to end it (none: not tracked).
        self.streams = streams
        self.liveness = liveness
        #: How often the running turn re-checks its caller (default ``streaming.revalidate_seconds``).
        self.revalidate_seconds = (
            client.settings.streaming.revalidate_seconds if revalidate_seconds is None else revalidate_seconds
        )
        #: Why the caller's access ended this turn, once it did.
        self.ending: Ending | None = None
        # Made while serving an HTTP request (SSE, OpenAI-compatible): its credential was checked
        # against the database moments ago, so the turn need not check it again before starting.
        self._credential_fresh = has_request_context()
        #: Longest the turn may stream (default ``streaming.turn_deadline_seconds``).
        self.deadline_seconds = (
            client.settings.streaming.turn_deadline_seconds if deadline_seconds is None else deadline_seconds
        )
        #: Set from the host's ``started`` event.
        self.conversation_id: str | None = None
        self.message_id: str | None = None
        #: Output tokens estimated from the streamed text so far.
        self.estimated_output_tokens = 0
        self._chat: HostChat | None = None
        self._cancel_reason: str | None = None
        self._iterated = False
        self._charged = False
        self._llm = start.llm or ""
        self._began = time.monotonic()
        self._first_token: float | None = None
        self._quota: TurnEvent | None = None
        self._started = False
        self._stream: OpenStream | None = None

    def events(self) -> AsyncGenerator[TurnEvent, None]:
        """The turn's events, ``done`` last; see the module's docstring for what is raised."""
        if self._iterated:
            raise RuntimeError("a ChatTurn is iterated once")
        self._iterated = True
        return self._events()

    async def cancel(self, reason: str) -> None:
        """Ask the host to stop the turn; the partial answer is stored as ``cancelled`` and the turn
        still ends with ``usage`` and ``done``. Before the call is open, it is cancelled as it opens."""
        if self._cancel_reason is None:
            self._cancel_reason = reason
        if self._chat is not None:
            await self._chat.cancel(reason)

    @property
    def cancelled(self) -> bool:
        return self._cancel_reason is not None

    async def _events(self) -> AsyncGenerator[TurnEvent, None]:
        with contextlib.ExitStack() as tracked:
            self._stream = (
                tracked.enter_context(self.streams.track(self.principal))
                if self.streams is not None
                else OpenStream(self.principal)
            )
            async with contextlib.aclosing(self._tracked_events()) as events:
                async for event in events:
                    yield event

    async def _tracked_events(self) -> AsyncGenerator[TurnEvent, None]:
        ending = None if self._recently_checked() else await self._check()
        if ending is not None:
            self.ending = ending
            raise refusal(ending)
        window = await self.quotas.check(self.principal) if self.quotas is not None else None
        self._began = time.monotonic()
        chat = await self.client.chat(self.start.to_pb(), self.caller, timeout=self.deadline_seconds)
        self._chat = chat
        if self._cancel_reason is not None:
            await chat.cancel(self._cancel_reason)
        watcher = asyncio.create_task(self._watch(), name="chat-turn-access")
        try:
            failure: OpenTierError
            try:
                async with contextlib.aclosing(self._relay(chat, window)) as relayed:
                    async for event in relayed:
                        yield event
                        if event.terminal:
                            return
                failure = HostUnavailableError(
                    "the host ended the chat turn without `done`; the answer may be incomplete"
                )
            except OpenTierError as err:
                if not self.started:
                    raise
                failure = err
            # After `started`, a failure is told as events and the turn still ends with `done`.
            if self._quota is not None:
                yield self._quota
            yield self._failure_event(failure)
            yield self._synthetic_done()
        finally:
            watcher.cancel()  # it never raises: nothing to await
            chat.close()
            if not self._charged and (self.started or self.estimated_output_tokens):
                self._charge_estimate()

    async def _relay(self, chat: HostChat, window: QuotaWindow | None) -> AsyncGenerator[TurnEvent, None]:
        """The host's events as turn events, with the quota's own ``quota`` event before ``done``."""
        async with contextlib.aclosing(aiter(chat)) as host_events:
            async for message in host_events:
                try:
                    event = from_host(message)
                except ValueError as err:
                    log.warning("chat turn %s: %s; skipped", self.message_id, err)
                    continue
                if event.type == "started":
                    self._on_started(event)
                elif not self.started:
                    raise HostUnavailableError(f"the host sent {event.type!r} before `started`; try again")
                elif event.type == "token":
                    self._first_token = self._first_token or time.monotonic()
                    self.estimated_output_tokens += estimate_tokens(str(event.data.get("text", "")))
                    if self._quota is None and window is not None and self._reaches(window):
                        self._quota = self._quota_event(window)
                        yield event
                        await self.cancel(QUOTA_CANCEL_REASON)
                        continue
                elif event.type == "usage":
                    self._charge_usage(event)
                elif event.type == "done":
                    if self._quota is not None:
                        yield self._quota
                    if self.ending is not None:
                        yield error_event(self.ending.code, self.ending.message)
                yield event
                if event.terminal:
                    return

    def _recently_checked(self) -> bool:
        """Whether the caller's access was confirmed moments ago: by the HTTP request that made this
        turn, or (a WebSocket's turns in quick succession) by a check less than
        ``revalidate_seconds`` ago; this gateway's own admin operations forget such confirmations."""
        if self._credential_fresh:
            return True
        return self.streams is not None and self.streams.live_within(self.principal, self.revalidate_seconds)

    async def _check(self) -> Ending | None:
        """Why the caller may no longer stream, by the database; None when it may (or when the
        database cannot say: the next check decides)."""
        if self.liveness is None:
            return None
        try:
            found = await self.liveness(self.principal)
        except Exception:
            log.warning("chat turn %s: its caller could not be re-checked", self.message_id, exc_info=True)
            return None
        if found is None and self.streams is not None:
            self.streams.seen_live(self.principal)
        return found

    async def _watch(self) -> None:
        """End the turn when its caller's access goes: at once when this gateway's registry says so,
        else at the first failed check against the database (every ``revalidate_seconds``)."""
        stream = self._stream
        assert stream is not None
        while stream.ending is None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.revalidate_seconds):
                    await stream.ended.wait()
            if stream.ending is None and (found := await self._check()) is not None:
                stream.end(found)
        ending = stream.ending
        assert ending is not None
        self.ending = ending
        log.info("chat turn %s ended: %s", self.message_id, ending.code)
        try:
            await self.cancel(ending.message)
        except Exception:
            log.exception("chat turn %s: the host could not be told to stop", self.message_id)

    @property
    def started(self) -> bool:
        """Whether the host sent ``started`` (the user message is stored)."""
        return self._started

    # -- helpers ----------------------------------------------------------------------------------

    def _on_started(self, event: TurnEvent) -> None:
        self.conversation_id = event.data.get("conversation_id") or None
        self.message_id = event.data.get("assistant_message_id") or None
        self._started = True
        self._llm = str(event.data.get("llm") or self._llm)

    def _reaches(self, window: QuotaWindow) -> bool:
        return window.used + self.estimated_output_tokens >= window.limit

    def _quota_event(self, window: QuotaWindow) -> TurnEvent:
        used = min(window.limit, window.used + self.estimated_output_tokens)
        return quota_event(window.scope, window.period, window.limit, used, window.resets_at)

    def _failure_event(self, failure: OpenTierError) -> TurnEvent:
        message = failure.message
        if time.monotonic() - self._began >= self.deadline_seconds:
            message = f"the chat turn passed its deadline of {self.deadline_seconds:g} seconds"
        retryable = isinstance(failure, HostUnavailableError | DatabaseError)
        log.warning("chat turn %s failed after it started: %s %s", self.message_id, failure.code, message)
        return error_event(failure.code, message, retryable=retryable)

    def _synthetic_done(self) -> TurnEvent:
        """The ``done`` of a turn the host could not end itself."""
        first = self._first_token
        timings: dict[str, Any] = {
            "time_to_first_token_ms": None if first is None else round((first - self._began) * 1000),
            "total_ms": round((time.monotonic() - self._began) * 1000),
        }
        return TurnEvent(
            "done",
            {
                "message_id": self.message_id or "",
                "conversation_id": self.conversation_id or "",
                "status": "failed",
                "finish_reason": "error",
                "timings": timings,
            },
        )

    def _charge_usage(self, event: TurnEvent) -> None:
        data = event.data
        self._charge(
            UsageCharge(
                input_tokens=int(data.get("input_tokens") or 0),
                output_tokens=int(data.get("output_tokens") or 0),
                llm=str(data.get("llm") or self._llm),
                model=str(data.get("model") or ""),
                conversation_id=self.conversation_id,
                message_id=self.message_id,
            )
        )

    def _charge_estimate(self) -> None:
        self._charge(
            UsageCharge(
                input_tokens=estimate_tokens(self.start.message),
                output_tokens=self.estimated_output_tokens,
                llm=self._llm,
                model="",
                conversation_id=self.conversation_id,
                message_id=self.message_id,
                estimated=True,
            )
        )

    def _charge(self, charge: UsageCharge) -> None:
        """Charge once. Synchronous, so that a cancelled client cannot stop the charge: it is recorded
        before anything else can run, and the ledger writer owns it from then on."""
        if self._charged or self.quotas is None:
            self._charged = True
            return
        self._charged = True
        try:
            self.quotas.charge(self.principal, charge)
        except Exception:
            log.exception("chat turn %s: its tokens could not be charged", self.message_id)


def _database_check(engine: AsyncEngine | None) -> LivenessCheck | None:
    """The check of a principal against ``engine`` (None without a database: nothing to check)."""
    if engine is None:
        return None

    async def check(principal: Principal) -> Ending | None:
        return await check_live(engine, principal)

    return check
