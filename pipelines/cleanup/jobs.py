"""``cleanup``: retention for storage objects, outbox messages, work files, run records and webhook inbox
rows.

One step goes through ``RETENTIONS`` in order; for each it finds what was last written before
``timestamp - days`` and removes it (or, with ``dry_run``, only counts it). A removal that fails is
reported and the others go on; the step then fails and its retry removes only what is still there.
"""

import datetime as dt
from typing import Any

import dagster as dg

from offload.log import StepLog
from offload.payload import payload_mapping
from offload.result import job_result
from offload.retry import retrying
from offload.runtime.concurrency import Queue
from offload.webhooks.inbox import InboxResource
from pipelines.cleanup.cleaners import RETENTIONS, Sources
from pipelines.cleanup.payload import CleanupPayload
from resources.database import AppDatabase
from resources.storage import Storage

# One cleanup at a time: two would race to delete the same files.
QUEUE = Queue("maintenance", limit=1)


SHOWN_ITEMS = 20  # items listed per kind in the report; the counts are complete


def _table(report: dict[str, dict[str, Any]]) -> str:
    lines = ["| kind | kept days | older than | found | removed | bytes |", "|---|---|---|---|---|---|"]
    lines += [
        f"| {name} | {r['days']} | {r['before']} | {r['found']} | {r['removed']} | {r['bytes']} |"
        for name, r in report.items()
    ]
    return "\n".join(lines)


@dg.op
@retrying()
def apply_retention(
    context: dg.OpExecutionContext,
    config: CleanupPayload,
    storage: Storage,
    database: AppDatabase,
    webhook_inbox: InboxResource,
) -> dg.Output[dict[str, Any]]:
    """Remove (or with ``dry_run`` list) what outlived its retention; the result reports each kind."""
    log = StepLog(context)
    now = config.scheduled_at
    sources = Sources(
        storage,
        database,
        webhook_inbox.inbox(),
        context.instance,
        tuple(config.storage_prefixes),
        context.run_id,
    )
    report: dict[str, dict[str, Any]] = {}
    errors: list[str] = []
    for retention in RETENTIONS:
        days = config.days(retention.name, retention.default_days)
        before = now - dt.timedelta(days=days)
        cleaner = retention.make(sources)
        found = list(cleaner.expired(before))
        removed = 0
        if not config.dry_run:
            for item in found:
                try:
                    cleaner.remove(item)
                    removed += 1
                except Exception as error:  # report it, clean the rest, fail at the end
                    errors.append(f"{retention.name} {item.id}: {error}")
        report[retention.name] = {
            "days": days,
            "before": before.isoformat(),
            "found": len(found),
            "removed": removed,
            "bytes": sum(item.size or 0 for item in found),
            "items": [item.id for item in found[:SHOWN_ITEMS]],
        }
        log.info(
            f"{retention.name}: {'would remove' if config.dry_run else 'removed'}",
            {k: v for k, v in report[retention.name].items() if k != "items"},
        )
    metadata: dict[str, Any] = {
        "dry_run": config.dry_run,
        "report": dg.MetadataValue.md(_table(report)),
        **{f"{name}_found": r["found"] for name, r in report.items()},
        **{f"{name}_removed": r["removed"] for name, r in report.items()},
    }
    if errors:
        log.error("some items could not be removed", {"errors": errors[:SHOWN_ITEMS], "count": len(errors)})
        raise RuntimeError(f"cleanup: {len(errors)} items could not be removed: {errors[0]}")
    return job_result(
        {"dry_run": config.dry_run, "as_of": now.isoformat(), "kinds": report}, metadata=metadata
    )


def _run_config(payload: CleanupPayload) -> dict[str, Any]:
    return {"ops": {"apply_retention": {"config": payload.model_dump()}}}


@dg.job(
    description="Retention: remove storage objects, outbox messages, work files, run records and finished "
    "webhook inbox rows older than their configured ages (dry_run: only report them).",
    config=payload_mapping(CleanupPayload, _run_config),
    tags={"offload/kind": "maintenance", **QUEUE.job_tags()},
)
def cleanup() -> None:
    apply_retention()
