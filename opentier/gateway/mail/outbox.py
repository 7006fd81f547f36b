"""The outbox: mails (and the work that leads to them) run in background tasks, never in the request.

A failed send is retried ``mail.send_attempts`` times, waiting ``backoff_seconds`` then twice as long each
time (at most ``backoff_max_seconds``); each failure is logged, and so is a mail given up. On close, the
outbox waits up to a grace period for what is pending, then cancels it (logged).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any

from opentier.config import MailSettings
from opentier.gateway.mail.templates import Rendered, Templates
from opentier.gateway.mail.transport import Transport, transport_for

log = logging.getLogger("opentier.gateway.mail")

#: Key of the app's :class:`Outbox` in ``gateway_state().extras`` while the app serves.
EXTRAS_KEY = "mail_outbox"


class Outbox:
    """Composes mails from templates and delivers them in the background through ``transport``."""

    def __init__(self, mail: MailSettings, transport: Transport | None = None) -> None:
        self.settings = mail
        self.templates = Templates(mail.templates_dir)
        self._transport = transport or transport_for(mail)
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        #: Delivered and given-up counts (for tests and metrics).
        self.delivered = 0
        self.failed = 0

    def compose(self, to: str, rendered: Rendered) -> EmailMessage:
        message = EmailMessage()
        message["From"] = self.settings.sender
        message["To"] = to
        message["Subject"] = rendered.subject
        message["Message-ID"] = make_msgid(domain=self.settings.sender.rpartition("@")[2].strip("> ") or None)
        message.set_content(rendered.text)
        if rendered.html is not None:
            message.add_alternative(rendered.html, subtype="html")
        return message

    def send(self, to: str, template: str, values: dict[str, str]) -> None:
        """Render ``template`` for ``to`` now (a template error raises here) and deliver it later."""
        self.enqueue(self.compose(to, self.templates.render(template, values)))

    def enqueue(self, message: EmailMessage) -> None:
        """Deliver ``message`` in the background, with retries."""
        self.spawn(self._deliver(message), name="mail")

    def spawn(self, work: Coroutine[Any, Any, None], *, name: str) -> None:
        """Run ``work`` in a tracked background task; its error is logged, never raised to anyone."""
        if self._closed:
            work.close()
            log.error("the mail outbox is closed; %s dropped", name)
            return
        task = asyncio.create_task(self._guarded(work, name), name=f"opentier-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _guarded(work: Coroutine[Any, Any, None], name: str) -> None:
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("background %s failed", name)

    async def _deliver(self, message: EmailMessage) -> None:
        mail = self.settings
        wait = mail.backoff_seconds
        for attempt in range(1, mail.send_attempts + 1):
            try:
                await self._transport.deliver(message)
            except Exception as err:  # aiosmtplib's errors, refused connections, timeouts: all retried
                failure = err
            else:
                self.delivered += 1
                return
            if attempt == mail.send_attempts:
                self.failed += 1
                log.error(
                    "mail %r to %s given up after %d attempts: %s",
                    message["Subject"],
                    message["To"],
                    attempt,
                    failure,
                )
                return
            log.warning(
                "mail %r to %s: attempt %d of %d failed (%s); retrying in %.1f s",
                message["Subject"],
                message["To"],
                attempt,
                mail.send_attempts,
                failure,
                wait,
            )
            await asyncio.sleep(wait)
            wait = min(wait * 2, mail.backoff_max_seconds)

    @property
    def pending(self) -> int:
        return len(self._tasks)

    async def close(self, grace_seconds: float) -> None:
        """Stop taking work; wait up to ``grace_seconds`` for what is pending, then cancel it."""
        self._closed = True
        if not self._tasks:
            return
        _, late = await asyncio.wait(set(self._tasks), timeout=grace_seconds)
        for task in late:
            task.cancel()
        if late:
            log.error("mail outbox closed with %d mails or jobs unfinished; they are dropped", len(late))
            await asyncio.wait(late)


def serving_outbox() -> Outbox:
    """The outbox of the app serving the current request; an error when mail is not installed."""
    from opentier.gateway.state import gateway_state

    state = gateway_state()
    found = state.extras.get(EXTRAS_KEY)
    if not isinstance(found, Outbox):
        state.require_identity()  # the not-serving error, when that is the reason
        raise RuntimeError("the mail outbox is not installed on this app")
    return found
