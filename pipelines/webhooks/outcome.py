"""What every webhook handler shares: reading the payload, and marking an event it does not handle.

A handler returns a ``Handled`` for the run's output; an event type nobody handles is logged and the run
tagged ``offload/webhook_outcome=ignored`` (it succeeds: an unknown type is not a failure), which the
``webhook_inbox`` sensor copies to the inbox row as ``ignored``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from offload.errors import AbortTaskRunError
from offload.log import StepLog
from offload.result import job_result
from offload.webhooks.event import IGNORED, OUTCOME_TAG, WebhookEvent


@dataclass(frozen=True)
class Handled:
    outcome: str  # "handled" or "ignored"
    detail: dict[str, Any] = field(default_factory=dict)

    def output(self, event: WebhookEvent) -> dg.Output[dict[str, Any]]:
        value = {"outcome": self.outcome, "provider": event.provider, "event_id": event.event_id,
                 "event_type": event.event_type, **self.detail}  # fmt: skip
        shown = {k: v for k, v in value.items() if isinstance(v, str | int | float)}
        return job_result(value, metadata=shown)


def ignore(context: dg.OpExecutionContext, event: WebhookEvent) -> Handled:
    StepLog(context).info(
        "event type not handled: ignored", {"event_type": event.event_type, "event_id": event.event_id}
    )
    context.instance.add_run_tags(context.run_id, {OUTCOME_TAG: IGNORED})
    return Handled(IGNORED)


def field_of(data: Any, path: str, kind: type | tuple[type, ...] = str, required: bool = True) -> Any:
    """``data`` at the dotted ``path`` (``data.object.id``), checked to be ``kind``; a required field that
    is missing or of another type fails the run for good (the same payload would fail again)."""
    value = data
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if value is None and not required:
        return None
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise AbortTaskRunError(f"payload {path}: missing or not a {getattr(kind, '__name__', kind)}")
    return value


def mapping(data: dict[str, Any], key: str) -> dict[str, Any]:
    """``data[key]`` if it is an object, else an empty one (for optional parts of a payload)."""
    value = data.get(key)
    return value if isinstance(value, dict) else {}


def payload(event: WebhookEvent) -> dict[str, Any]:
    try:
        return event.payload()
    except ValueError as error:
        raise AbortTaskRunError(f"body: {error}") from None
