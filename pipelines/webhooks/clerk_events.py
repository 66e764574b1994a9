"""Clerk: ``user.created`` stores the user (id and primary email) and sends a welcome email, once per user
(the email's idempotency key is the user id)."""

from __future__ import annotations

from html import escape
from typing import Any

import dagster as dg

from offload.errors import AbortTaskRunError
from offload.keys import ID_RULE, is_valid_id
from offload.log import StepLog
from offload.webhooks.event import WebhookEvent
from pipelines.webhooks.outcome import Handled, field_of, ignore, payload
from resources.database import AppDatabase
from resources.email import Email, EmailSender


def primary_email(user: dict[str, Any]) -> str | None:
    """The address Clerk marks primary, else the first one."""
    addresses = [a for a in user.get("email_addresses") or [] if isinstance(a, dict)]
    primary = user.get("primary_email_address_id")
    for address in addresses:
        if address.get("id") == primary and isinstance(address.get("email_address"), str):
            return str(address["email_address"])
    first = addresses[0].get("email_address") if addresses else None
    return first if isinstance(first, str) else None


def handle(
    context: dg.OpExecutionContext, event: WebhookEvent, database: AppDatabase, email: EmailSender
) -> Handled:
    if event.event_type != "user.created":
        return ignore(context, event)
    log = StepLog(context)
    user = field_of(payload(event), "data", dict)
    user_id = field_of(user, "id")
    if not is_valid_id(user_id):
        raise AbortTaskRunError(f"data.id = {user_id[:80]!r}: {ID_RULE}")
    address = primary_email(user)
    database.ensure_user(user_id, address)
    log.info("user stored", {"user_id": user_id, "has_email": address is not None})
    if address is None:
        log.warning("the user has no email address: no welcome email", {"user_id": user_id})
        return Handled("handled", {"user_id": user_id})
    name = user.get("first_name") if isinstance(user.get("first_name"), str) else None
    hello = f"Hi {name}," if name else "Hi,"
    message = Email(
        to=address,
        subject="Welcome!",
        html=f"<p>{escape(hello)}</p><p>welcome aboard: your account is ready.</p>",
        text=f"{hello}\n\nwelcome aboard: your account is ready.",
    )
    email_id = email.send(message, idempotency_key=f"clerk/{user_id}/welcome")
    log.info("welcome email sent", {"user_id": user_id, "email_id": email_id})
    return Handled("handled", {"user_id": user_id, "email_id": email_id})
