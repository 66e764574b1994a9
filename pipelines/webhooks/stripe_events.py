"""Stripe: ``payment_intent.succeeded`` and ``payment_intent.payment_failed``.

Each records the payment in the app database (upserted on the PaymentIntent id, so a redelivery or a
retried step writes the same row) and emails the payer a receipt or a failure notice. The email's
idempotency key is the PaymentIntent and the outcome, so the payer hears once per outcome however often
Stripe sends it. The payer's address is the intent's ``receipt_email``, else ``metadata.email``, else the
stored address of ``metadata.user_id``; with none of them the payment is recorded and no email sent.
"""

from __future__ import annotations

import datetime as dt
from html import escape
from typing import Any

import dagster as dg

from offload.keys import is_valid_id
from offload.log import StepLog
from offload.webhooks.event import WebhookEvent
from pipelines.webhooks.outcome import Handled, field_of, ignore, mapping, payload
from resources.database import AppDatabase, Payment
from resources.email import Email, EmailSender

HANDLED = ("payment_intent.succeeded", "payment_intent.payment_failed")
# Currencies Stripe counts in whole units (docs.stripe.com/currencies#zero-decimal).
ZERO_DECIMAL = frozenset(
    ["bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga",
     "pyg", "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf"]
)  # fmt: skip


def money(amount: int, currency: str) -> str:
    """``1234, "usd"`` -> ``12.34 USD``; zero-decimal currencies as whole units."""
    if currency.lower() in ZERO_DECIMAL:
        return f"{amount} {currency.upper()}"
    return f"{amount / 100:.2f} {currency.upper()}"


def payment_from(event: WebhookEvent, data: dict[str, Any]) -> Payment:
    intent = field_of(data, "data.object", dict)
    succeeded = event.event_type == "payment_intent.succeeded"
    amount = field_of(intent, "amount_received" if succeeded else "amount", int)
    user_id = mapping(intent, "metadata").get("user_id")
    created = field_of(data, "created", int)
    failure = mapping(intent, "last_payment_error")
    return Payment(
        id=field_of(intent, "id"),
        provider="stripe",
        amount=amount,
        currency=field_of(intent, "currency").upper(),
        status="succeeded" if succeeded else "failed",
        occurred_at=dt.datetime.fromtimestamp(created, dt.UTC),
        user_id=user_id if isinstance(user_id, str) and is_valid_id(user_id) else None,
        description=intent.get("description") if isinstance(intent.get("description"), str) else None,
        data={
            "event_id": event.event_id,
            "customer": intent.get("customer"),
            "failure_code": failure.get("code"),
            "failure_message": failure.get("message"),
        },
    )


def _recipient(intent: dict[str, Any], payment: Payment, database: AppDatabase) -> str | None:
    for candidate in (intent.get("receipt_email"), mapping(intent, "metadata").get("email")):
        if isinstance(candidate, str) and "@" in candidate:
            return candidate
    return database.user_email(payment.user_id) if payment.user_id else None


def _email(payment: Payment, to: str) -> Email:
    amount = money(payment.amount, payment.currency)
    what = escape(payment.description or "your payment")
    if payment.status == "succeeded":
        return Email(
            to=to,
            subject=f"Receipt: {amount} received",
            html=f"<p>Thank you: we received {amount} for {what}.</p><p>Reference: {payment.id}</p>",
            text=f"Thank you: we received {amount} for {payment.description or 'your payment'}.\n"
            f"Reference: {payment.id}",
        )
    reason = (payment.data or {}).get("failure_message") or "the payment was declined"
    return Email(
        to=to,
        subject=f"Payment of {amount} failed",
        html=f"<p>Your payment of {amount} for {what} did not go through: {escape(reason)}.</p>"
        f"<p>Please try again or use another payment method. Reference: {payment.id}</p>",
        text=f"Your payment of {amount} did not go through: {reason}.\nReference: {payment.id}",
    )


def handle(
    context: dg.OpExecutionContext, event: WebhookEvent, database: AppDatabase, email: EmailSender
) -> Handled:
    if event.event_type not in HANDLED:
        return ignore(context, event)
    log = StepLog(context)
    data = payload(event)
    payment = payment_from(event, data)
    database.record_payment(payment)
    log.info("payment recorded", {"payment_id": payment.id, "status": payment.status,
                                  "amount": payment.amount, "currency": payment.currency})  # fmt: skip
    recipient = _recipient(field_of(data, "data.object", dict), payment, database)
    if recipient is None:
        log.warning("no email address for the payer: no email sent", {"payment_id": payment.id})
        return Handled("handled", {"payment_id": payment.id, "status": payment.status})
    email_id = email.send(_email(payment, recipient), idempotency_key=f"stripe/{payment.id}/{payment.status}")
    log.info("payer emailed", {"payment_id": payment.id, "email_id": email_id})
    return Handled("handled", {"payment_id": payment.id, "status": payment.status, "email_id": email_id})
