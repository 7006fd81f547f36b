"""One chat turn relayed from the host: :class:`ChatTurn` (contract; implementation pending).

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
  when used + estimate reaches a limit the turn cancels itself and yields a ``quota`` event before the
  host's ``usage`` and ``done``. The host's ``usage`` event is what is charged (``TokenQuotas.charge``),
  once per turn, whatever way the turn ends; with no usage event (host died) the estimate is charged.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from opentier.gateway.chat.events import TurnEvent
from opentier.gateway.chat.start import ChatStartRequest
from opentier.gateway.host import HostClient
from opentier.gateway.limits.quotas import TokenQuotas
from opentier.gateway.principal import Principal
from opentier.generated.intelligence.v1 import common_pb2


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
    ) -> None:
        self.client = client
        self.principal = principal
        self.caller = caller
        self.start = start
        self.quotas = quotas
        self.deadline_seconds = deadline_seconds

    def events(self) -> AsyncIterator[TurnEvent]:
        raise NotImplementedError

    async def cancel(self, reason: str) -> None:
        raise NotImplementedError
