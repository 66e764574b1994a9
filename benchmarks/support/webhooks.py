"""Signed webhook deliveries as the providers send them, made with the providers' own libraries (Stripe's
``WebhookSignature.generate_signature_header``, Svix's ``Webhook.sign``; GitHub's HMAC as GitHub documents
it), and sample events of each kind the handlers know."""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from typing import Any

import stripe
from svix.webhooks import Webhook

from offload.webhooks.providers import github_signature

STRIPE_SECRET = "whsec_test_5b1c0ffee"
CLERK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # base64 after whsec_, as Svix issues them
GITHUB_SECRET = "It's a Secret to Everybody"  # REFERENCE's test vector
SECRETS_ENV = {
    "STRIPE_WEBHOOK_SECRET": STRIPE_SECRET,
    "CLERK_WEBHOOK_SECRET": CLERK_SECRET,
    "GITHUB_WEBHOOK_SECRET": GITHUB_SECRET,
}


def body_of(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def stripe_headers(body: bytes, secret: str = STRIPE_SECRET, timestamp: int | None = None) -> dict[str, str]:
    header = stripe.WebhookSignature.generate_signature_header(body.decode(), secret, timestamp=timestamp)
    return {"Stripe-Signature": header, "Content-Type": "application/json"}


def clerk_headers(
    body: bytes, msg_id: str | None = None, secret: str = CLERK_SECRET, timestamp: float | None = None,
    prefix: str = "svix",
) -> dict[str, str]:  # fmt: skip
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    when = dt.datetime.fromtimestamp(time.time() if timestamp is None else timestamp, dt.UTC)
    signature = Webhook(secret).sign(msg_id, when, body.decode())
    return {
        f"{prefix}-id": msg_id,
        f"{prefix}-timestamp": str(int(when.timestamp())),
        f"{prefix}-signature": signature,
        "Content-Type": "application/json",
    }


def github_headers(
    body: bytes, event: str = "push", delivery: str | None = None, secret: str = GITHUB_SECRET
) -> dict[str, str]:
    return {
        "X-Hub-Signature-256": github_signature(body, secret),
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "Content-Type": "application/json",
    }


def stripe_event(
    event_id: str | None = None, kind: str = "payment_intent.succeeded", amount: int = 2500,
    receipt_email: str | None = "payer@example.com", user_id: str | None = "user_42",
) -> dict[str, Any]:  # fmt: skip
    """A Stripe event in the shape Stripe sends (``object: event``, the PaymentIntent under data.object)."""
    pi = f"pi_{uuid.uuid4().hex[:24]}"
    intent: dict[str, Any] = {
        "id": pi, "object": "payment_intent", "amount": amount, "currency": "usd",
        "amount_received": amount if kind.endswith("succeeded") else 0, "customer": "cus_123",
        "receipt_email": receipt_email, "description": "Pro plan", "metadata": {},
        "status": "succeeded" if kind.endswith("succeeded") else "requires_payment_method",
    }  # fmt: skip
    if user_id:
        intent["metadata"]["user_id"] = user_id
    if kind.endswith("payment_failed"):
        intent["last_payment_error"] = {"code": "card_declined", "message": "Your card was declined."}
    return {
        "id": event_id or f"evt_{uuid.uuid4().hex[:24]}", "object": "event", "api_version": "2024-06-20",
        "created": int(time.time()), "type": kind, "livemode": False, "data": {"object": intent},
    }  # fmt: skip


def clerk_event(user_id: str = "user_2abcDEF", email: str | None = "new.user@example.com") -> dict[str, Any]:
    addresses = [{"id": "idn_1", "email_address": email}] if email else []
    return {
        "type": "user.created", "object": "event",
        "data": {"id": user_id, "first_name": "Ada", "email_addresses": addresses,
                 "primary_email_address_id": "idn_1" if email else None},
    }  # fmt: skip


def github_push(repository: str = "octo/app", commits: int = 2) -> dict[str, Any]:
    return {
        "ref": "refs/heads/main", "before": "0" * 40, "after": "a" * 40,
        "repository": {"full_name": repository}, "pusher": {"name": "ada"}, "sender": {"login": "ada"},
        "commits": [{"id": str(i), "message": f"change {i}"} for i in range(commits)],
        "head_commit": {"message": "Fix the <login> page & tests\n\nlonger text"},
        "compare": f"https://github.com/{repository}/compare/000...aaa",
    }  # fmt: skip


def github_pull_request(action: str = "opened", number: int = 7, merged: bool = False) -> dict[str, Any]:
    return {
        "action": action, "number": number, "repository": {"full_name": "octo/app"},
        "sender": {"login": "grace"},
        "pull_request": {"title": "Add webhooks", "html_url": f"https://github.com/octo/app/pull/{number}",
                         "merged": merged, "state": "closed" if action == "closed" else "open"},
    }  # fmt: skip
