"""Email through a real SMTP server (aiosmtplib)."""
from __future__ import annotations

import asyncio
from email.message import EmailMessage
from email.utils import make_msgid

import aiosmtplib

from services.notifications.channels.base import OutboundMessage, SendReport


class EmailChannel:
    name = "email"

    def __init__(self, host: str, port: int, sender: str, *, username: str | None = None,
                 password: str | None = None, start_tls: bool = False, use_tls: bool = False,
                 timeout_s: float = 10.0) -> None:
        self.host, self.port, self.sender = host, port, sender
        self.username, self.password = username, password
        self.start_tls, self.use_tls = start_tls, use_tls
        self.timeout_s = timeout_s

    def build(self, message: OutboundMessage) -> EmailMessage:
        email = EmailMessage()
        email["From"] = self.sender
        email["To"] = message.address
        email["Subject"] = message.subject
        email["Message-ID"] = make_msgid(idstring=message.delivery_id, domain="o2o.example")
        email["X-O2O-Delivery-Id"] = message.delivery_id
        email["X-O2O-Event-Type"] = message.event_type
        email["Content-Language"] = message.locale
        # base64 keeps Chinese text intact through any relay, 8BITMIME advertised or not.
        email.set_content(message.body, charset="utf-8", cte="base64" if not message.body.isascii() else "7bit")
        return email

    async def send(self, message: OutboundMessage) -> SendReport:
        try:
            errors, reply = await aiosmtplib.send(
                self.build(message), hostname=self.host, port=self.port, username=self.username,
                password=self.password, start_tls=self.start_tls, use_tls=self.use_tls, timeout=self.timeout_s)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            return SendReport.permanent_failure(f"recipient refused: {exc}")
        except aiosmtplib.SMTPResponseException as exc:
            # 5xx replies are final (bad mailbox, policy); 4xx are "try again later".
            if 500 <= exc.code < 600:
                return SendReport.permanent_failure(f"SMTP {exc.code}: {exc.message}", exc.code)
            return SendReport.transient(f"SMTP {exc.code}: {exc.message}", exc.code)
        except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError) as exc:
            return SendReport.transient(f"SMTP unavailable: {type(exc).__name__}: {exc}")
        if errors:
            return SendReport.permanent_failure(f"recipient refused: {errors}")
        return SendReport.sent(provider_id=reply[:120] if isinstance(reply, str) else None, status_code=250)
