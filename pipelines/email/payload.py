"""The ``send_email`` payload: one message to one address, checked before any run starts."""

from __future__ import annotations

import dagster as dg
from pydantic import Field, field_validator

from offload.keys import id_rule
from offload.payload import check_email, check_mailbox

MAX_SUBJECT = 998  # RFC 5322's line limit
MAX_HTML = 2_000_000  # characters; providers refuse far smaller bodies than their attachment limits


class SendEmailPayload(dg.Config):
    """Send ``html`` to ``to`` with ``subject``, from ``from`` or the deployment's sender."""

    to: str = Field(description="Recipient: name@example.com.")
    subject: str = Field(description="One line, 1-998 characters.")
    html: str = Field(description="The body, as HTML.")
    from_: str | None = Field(
        default=None,
        alias="from",
        description="Sender, e.g. 'Acme <noreply@acme.com>'; default: the deployment's.",
    )
    user_id: str | None = Field(default=None, description="Who to bill the email to (optional).")

    @field_validator("to")
    @classmethod
    def _to(cls, value: str) -> str:
        return check_email(value)

    @field_validator("from_")
    @classmethod
    def _from(cls, value: str | None) -> str | None:
        return None if value is None else check_mailbox(value)

    @field_validator("subject")
    @classmethod
    def _subject(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        if len(value) > MAX_SUBJECT:
            raise ValueError(f"must be at most {MAX_SUBJECT} characters")
        if "\r" in value or "\n" in value:
            raise ValueError("must be one line")
        return value

    @field_validator("html")
    @classmethod
    def _html(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        if len(value) > MAX_HTML:
            raise ValueError(f"must be at most {MAX_HTML:,} characters")
        return value

    @field_validator("user_id")
    @classmethod
    def _user(cls, value: str | None) -> str | None:
        return value if value is None else id_rule(value)
