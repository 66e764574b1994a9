"""Sending email: a local outbox of ``.eml`` files by default, Resend in production.

Every send carries an idempotency key, so a step that is retried after a send does not email twice: the
outbox names the file after the key, Resend receives it as its ``Idempotency-Key`` header.
"""

from __future__ import annotations

import hashlib
import os
import threading
import uuid
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path

import dagster as dg
from pydantic import Field

from offload.errors import configuration_checked, require_settings, upstream_error_kind

DEFAULT_FROM = "offload <noreply@offload.local>"
RESEND_DEFAULT_API_URL = "https://api.resend.com"


@dataclass(frozen=True)
class Email:
    to: str
    subject: str
    html: str
    text: str | None = None
    from_address: str | None = None


# Elements after which the text part starts a new line.
_BLOCKS = "p, div, li, ul, ol, tr, table, br, h1, h2, h3, h4, h5, h6, blockquote"


def text_from_html(html: str) -> str:
    """The text part of an email that has only HTML: its text, a line per block, each link and image written
    out as ``label <url>`` so a reader of the plain part still has them (inline ``data:`` images dropped).
    Parsed with selectolax's HTML5 parser, not with patterns."""
    from selectolax.lexbor import LexborHTMLParser

    tree = LexborHTMLParser(html)
    for link in tree.css("a[href]"):
        href = link.attributes.get("href") or ""
        label = link.text(strip=True)
        link.replace_with(f"{label} <{href}>" if label and label != href else f"<{href}>")
    for image in tree.css("img[src]"):
        src = image.attributes.get("src") or ""
        alt = image.attributes.get("alt") or "image"
        image.replace_with("" if src.startswith("data:") else f"{alt} <{src}>")
    for block in tree.css(_BLOCKS):
        block.insert_after("\n")
    root = tree.body or tree.root
    text = root.text() if root is not None else ""
    lines = (" ".join(line.split()) for line in text.splitlines())
    return "\n".join(line for line in lines if line) + "\n"


class EmailSendError(RuntimeError):
    """The provider refused or could not take the email. ``status`` is its HTTP status (500 when the request
    never got an answer); ``retryable`` says whether trying again with the same key could help."""

    def __init__(self, message: str, *, status: int, retryable: bool):
        self.status = status
        self.retryable = retryable
        super().__init__(message)


def _check_idempotency_key(idempotency_key: str) -> str:
    # An empty key would make every keyless send a "retry" of the first one.
    if not idempotency_key:
        raise ValueError("idempotency_key: must not be empty")
    return idempotency_key


class EmailSender(dg.ConfigurableResource):
    """Sends one email; returns the provider's message id. Implementations: ``OutboxEmail``,
    ``ResendEmail``."""

    def send(self, email: Email, idempotency_key: str) -> str:
        raise NotImplementedError


class OutboxEmail(EmailSender):
    """Writes each email to ``directory`` as an RFC 5322 ``.eml`` file any mail client opens."""

    directory: str = Field(description="Outbox directory; created on first send.")
    from_address: str = Field(default=DEFAULT_FROM, description="Sender when the email names none.")

    def send(self, email: Email, idempotency_key: str) -> str:
        outbox = Path(self.directory)
        outbox.mkdir(parents=True, exist_ok=True)
        name = hashlib.sha256(_check_idempotency_key(idempotency_key).encode()).hexdigest()[:32]
        path = outbox / f"{name}.eml"
        if path.exists():  # the same key was sent before: a retry, not a new email
            return name
        message = EmailMessage()  # policy "default": a header value holding a newline raises, no injection
        message["From"] = email.from_address or self.from_address
        message["To"] = email.to
        message["Subject"] = email.subject
        message["Date"] = formatdate(usegmt=True)
        message["Message-ID"] = make_msgid(idstring=name, domain="offload.local")
        message["X-Idempotency-Key"] = idempotency_key
        message.set_content(email.text or text_from_html(email.html))
        message.add_alternative(email.html, subtype="html")
        # Write aside and rename: a reader (or a crash) never sees half a file under the final name.
        partial = path.with_suffix(f".{uuid.uuid4().hex}.partial")
        partial.write_bytes(bytes(message))
        partial.replace(path)
        return name


# The resend SDK keeps its API key and URL in module globals, read on every request. Sends set both and
# send under this lock, so two resources with different keys in one process never mix them up.
_RESEND_LOCK = threading.Lock()


class ResendEmail(EmailSender):
    """Resend through its official SDK.

    The endpoint is ``RESEND_API_URL`` as it is when ``send`` runs (default ``https://api.resend.com``). The
    SDK itself reads that variable only once, at import, so the resource reads it again on every send and
    hands it to the SDK: a test server or a proxy set after import is honoured.
    """

    api_key: str = Field(description="Resend API key (bind with dg.EnvVar('RESEND_API_KEY')).")
    from_address: str = Field(description="Verified sender, e.g. 'Acme <noreply@acme.com>'.")

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        with configuration_checked(context):
            require_settings(self, {"api_key": "RESEND_API_KEY", "from_address": "OFFLOAD_EMAIL_FROM"})

    def send(self, email: Email, idempotency_key: str) -> str:
        import resend
        from resend.exceptions import ResendError

        params: resend.Emails.SendParams = {
            "from": email.from_address or self.from_address,
            "to": [email.to],
            "subject": email.subject,
            "html": email.html,
            "text": email.text or text_from_html(email.html),  # the links the outbox's text part has too
        }
        options: resend.Emails.SendOptions = {"idempotency_key": _check_idempotency_key(idempotency_key)}
        failure: EmailSendError | None = None
        with _RESEND_LOCK:
            resend.api_key = self.api_key
            resend.api_url = os.environ.get("RESEND_API_URL") or RESEND_DEFAULT_API_URL
            try:
                sent = resend.Emails.send(params, options)
            except ResendError as error:
                failure = self._failure(error)
        if failure is not None:
            # Raised outside the except block so the SDK's exception is not chained as its context: its
            # message and traceback come from the server and are not ours to vouch for.
            raise failure
        return str(sent["id"])

    def _failure(self, error: Exception) -> EmailSendError:
        """The SDK's error as an ``EmailSendError`` whose text never holds the API key, even if the server
        (or a proxy in between) echoes it back."""
        code = str(getattr(error, "code", ""))
        status = int(code) if code.isdigit() else 500
        # The status and the error's type only: the server's message is not ours to vouch for.
        kind = upstream_error_kind(getattr(error, "error_type", None), type(error).__name__)
        text = f"resend: send failed with HTTP {status} ({kind})"
        if self.api_key:
            text = text.replace(self.api_key, "***")
        return EmailSendError(text, status=status, retryable=status in (408, 409, 429) or status >= 500)
