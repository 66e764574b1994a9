"""``stripe_webhook``, ``github_webhook``, ``clerk_webhook``: one run per verified event.

The run config is the ``WebhookEvent`` the gateway stored (top-level keys, like every offload payload);
the one step hands it to the provider's handler. Steps retry with the project's policy (a database or
provider hiccup); a payload that cannot be read fails for good.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from offload.payload import payload_mapping
from offload.retry import retrying
from offload.runtime.concurrency import Queue
from offload.webhooks.event import WebhookEvent
from pipelines.webhooks import clerk_events, github_events, stripe_events
from resources.database import AppDatabase
from resources.email import EmailSender
from resources.slack import SlackNotifier


def _mapping(op_name: str) -> dg.ConfigMapping:
    return payload_mapping(WebhookEvent, lambda event: {"ops": {op_name: {"config": event.model_dump()}}})


@dg.op
@retrying()
def handle_stripe(
    context: dg.OpExecutionContext, config: WebhookEvent, database: AppDatabase, email: EmailSender
) -> dg.Output[dict[str, Any]]:
    """Record the payment and email the payer (payment_intent.succeeded / payment_failed)."""
    return stripe_events.handle(context, config, database, email).output(config)


@dg.op
@retrying()
def handle_clerk(
    context: dg.OpExecutionContext, config: WebhookEvent, database: AppDatabase, email: EmailSender
) -> dg.Output[dict[str, Any]]:
    """Store the user and send the welcome email (user.created)."""
    return clerk_events.handle(context, config, database, email).output(config)


@dg.op
@retrying()
def handle_github(
    context: dg.OpExecutionContext, config: WebhookEvent, database: AppDatabase, slack: SlackNotifier
) -> dg.Output[dict[str, Any]]:
    """Record the event and post it to Slack (push / pull_request)."""
    return github_events.handle(context, config, database, slack).output(config)


# No limit of its own: a webhook's run should start as soon as a slot of its nesting level is free.
QUEUE = Queue("webhooks")
_TAGS = {"offload/kind": "webhook", **QUEUE.job_tags()}


@dg.job(
    description="A verified Stripe event: payments recorded, payers emailed.",
    config=_mapping("handle_stripe"),
    tags=_TAGS,
)
def stripe_webhook() -> None:
    handle_stripe()


@dg.job(
    description="A verified Clerk event: new users stored and welcomed.",
    config=_mapping("handle_clerk"),
    tags=_TAGS,
)
def clerk_webhook() -> None:
    handle_clerk()


@dg.job(
    description="A verified GitHub event: pushes and pull requests recorded and posted to Slack.",
    config=_mapping("handle_github"),
    tags=_TAGS,
)
def github_webhook() -> None:
    handle_github()
