"""Usage accounting shared by every pipeline: what a run family consumed for a user, in the app database.

A pipeline records its usage in the step that delivers the result, so a run that fails bills nothing,
and under the run family's id (the root run's id), so a retried step or a re-execution from failure
bills once. The monthly invoice reads the rows back with ``AppDatabase.usage_for``.
"""

from __future__ import annotations

import dagster as dg

from offload.log import StepLog
from resources.ai import TokenUsage
from resources.database import AppDatabase, UsageItem


def run_family_id(context: dg.OpExecutionContext) -> str:
    """The id shared by a run and all its re-executions: the key for anything done once per request."""
    return context.run.root_run_id or context.run_id


def token_items(usage: TokenUsage) -> list[UsageItem]:
    """What AI calls consumed, as usage items (the models are kept in the detail, for pricing)."""
    detail = {"model": usage.model}
    return [
        UsageItem("ai_input_tokens", usage.input_tokens, detail),
        UsageItem("ai_output_tokens", usage.output_tokens, detail),
        UsageItem("ai_images", usage.images, detail),
    ]


def record_usage(
    context: dg.OpExecutionContext,
    database: AppDatabase,
    user_id: str | None,
    items: list[UsageItem],
    email: str | None = None,
) -> None:
    """Record ``items`` for ``user_id`` (nothing without a user: there is nobody to bill), log them, and show
    them in the step's output metadata."""
    log = StepLog(context)
    counts = {item.kind: item.quantity for item in items if item.quantity > 0}
    if user_id is None:
        log.info("usage not recorded: the payload names no user_id", counts)
        return
    added = database.record_usage(user_id, run_family_id(context), context.job_name, items, email=email)
    log.info("usage recorded", {"user_id": user_id, "rows_added": added, **counts})
    context.add_output_metadata({f"usage_{kind}": quantity for kind, quantity in counts.items()})
