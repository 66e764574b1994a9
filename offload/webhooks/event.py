"""A stored webhook event as its handler run receives it, and the names that tie the run to the event.

The run config of ``stripe_webhook``, ``github_webhook`` and ``clerk_webhook`` *is* a ``WebhookEvent``
(top-level keys, like every offload payload), so the UI shows which event a run handles and the Launchpad
can replay one by hand. Every run made for an event carries the tag ``offload/webhook_event =
<provider>:<event_id>``; runs the gateway makes also get a run id derived from that key, so run storage
itself refuses a second one.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

import dagster as dg
from pydantic import Field

EVENT_TAG = "offload/webhook_event"
PROVIDER_TAG = "offload/webhook_provider"
OUTCOME_TAG = "offload/webhook_outcome"  # set by a handler that ignored its event
IGNORED = "ignored"

# Run ids of gateway launches: uuid5 of the event key in this namespace (any fixed UUID).
_RUN_ID_NAMESPACE = uuid.UUID("6f0ad5e0-4d1b-5c8e-9a57-0ff10ad0e4b7")


class WebhookEvent(dg.Config):
    """A verified webhook event, as stored in the inbox."""

    provider: str = Field(description="stripe, github or clerk.")
    event_id: str = Field(description="The provider's id: Stripe's evt_..., svix-id, X-GitHub-Delivery.")
    event_type: str = Field(description="payment_intent.succeeded, user.created, push, ...")
    received_at: str = Field(description="When the gateway received it (ISO 8601, UTC).")
    body: str = Field(description="The request body exactly as signed (JSON).")

    def payload(self) -> dict[str, Any]:
        data = json.loads(self.body)
        if not isinstance(data, dict):
            raise ValueError("body: must be a JSON object")
        return data

    def received(self) -> dt.datetime:
        return dt.datetime.fromisoformat(self.received_at)


def event_key(provider: str, event_id: str) -> str:
    """The one name of an event across inbox, tags and run keys."""
    return f"{provider}:{event_id}"


def run_id_for(provider: str, event_id: str) -> str:
    """The run id the gateway gives the event's run: the same for every attempt, so a second create fails."""
    return str(uuid.uuid5(_RUN_ID_NAMESPACE, event_key(provider, event_id)))


def run_tags(provider: str, event_id: str) -> dict[str, str]:
    return {EVENT_TAG: event_key(provider, event_id), PROVIDER_TAG: provider}
