"""Sending email: a local outbox of ``.eml`` files by default, Resend in production.

Every send carries an idempotency key, so a step that is retried after a send does not email twice: the
outbox names the file after the key, Resend receives it as its ``Idempotency-Key`` header.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path

import dagster as dg
from pydantic import Field

DEFAULT_FROM = "offload <noreply@offload.local>"


@dataclass(frozen=True)
class Email:
    to: str
    subject: str
    html: str
    text: str | None = None
    from_address: str | None = None


class EmailSender(dg.ConfigurableResource):
    """Sends one email; returns the provider's message id. Implementations: ``OutboxEmail``, ``ResendEmail``."""

    def send(self, email: Email, idempotency_key: str) -> str:
        raise NotImplementedError


class OutboxEmail(EmailSender):
    """Writes each email to ``directory`` as an RFC 5322 ``.eml`` file any mail client opens."""

    directory: str = Field(description="Outbox directory; created on first send.")
    from_address: str = Field(default=DEFAULT_FROM, description="Sender when the email names none.")

    def send(self, email: Email, idempotency_key: str) -> str:
        outbox = Path(self.directory)
        outbox.mkdir(parents=True, exist_ok=True)
        name = hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]
        path = outbox / f"{name}.eml"
        if path.exists():  # the same key was sent before: a retry, not a new email
            return name
        message = EmailMessage()
        message["From"] = email.from_address or self.from_address
        message["To"] = email.to
        message["Subject"] = email.subject
        message["Date"] = formatdate(localtime=False)
        message["Message-ID"] = make_msgid(idstring=name, domain="offload.local")
        message["X-Idempotency-Key"] = idempotency_key
        message.set_content(email.text or "This message is HTML; open it in a mail client.")
        message.add_alternative(email.html, subtype="html")
        partial = path.with_suffix(f".{uuid.uuid4().hex}.partial")
        partial.write_bytes(bytes(message))
        partial.replace(path)
        return name


class ResendEmail(EmailSender):
    """Resend through its official SDK. The SDK reads ``RESEND_API_URL`` for a non-default endpoint."""

    api_key: str = Field(description="Resend API key (bind with dg.EnvVar('RESEND_API_KEY')).")
    from_address: str = Field(description="Verified sender, e.g. 'Acme <noreply@acme.com>'.")

    def send(self, email: Email, idempotency_key: str) -> str:
        import resend

        resend.api_key = self.api_key
        params: resend.Emails.SendParams = {
            "from": email.from_address or self.from_address,
            "to": [email.to],
            "subject": email.subject,
            "html": email.html,
        }
        if email.text:
            params["text"] = email.text
        sent = resend.Emails.send(params, {"idempotency_key": idempotency_key})
        return str(sent["id"])
