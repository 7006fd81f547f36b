"""Where a mail goes: an SMTP server (aiosmtplib) or, in development, the gateway log."""

from __future__ import annotations

import logging
from email.message import EmailMessage
from typing import Protocol

import aiosmtplib

from opentier.config import MailSettings

log = logging.getLogger("opentier.gateway.mail")


class Transport(Protocol):
    """Delivers one message; raises when it could not (the outbox retries)."""

    async def deliver(self, message: EmailMessage) -> None: ...


class LogTransport:
    """Writes the whole mail (headers and plain-text part) to the log: links included, so never in
    production."""

    async def deliver(self, message: EmailMessage) -> None:
        body = message.get_body(preferencelist=("plain",))
        text = body.get_content() if body is not None else ""
        log.info(
            "mail (mode=log, not sent)\nFrom: %s\nTo: %s\nSubject: %s\n\n%s",
            message["From"],
            message["To"],
            message["Subject"],
            text,
        )


class SmtpTransport:
    """Sends through the SMTP server of ``mail``: a connection per message, STARTTLS or TLS, login."""

    def __init__(self, mail: MailSettings) -> None:
        self._mail = mail

    async def deliver(self, message: EmailMessage) -> None:
        mail = self._mail
        await aiosmtplib.send(
            message,
            hostname=mail.host,
            port=mail.port,
            use_tls=mail.tls,
            start_tls=mail.starttls,
            username=mail.username or None,
            password=mail.password.get_secret_value() if mail.password and mail.username else None,
            timeout=mail.timeout_seconds,
        )


def transport_for(mail: MailSettings) -> Transport:
    return LogTransport() if mail.mode == "log" else SmtpTransport(mail)
