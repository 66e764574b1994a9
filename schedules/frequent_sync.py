"""``frequent_sync`` every 15 minutes: runs ``data_pipeline`` when a source table is configured."""

import dagster as dg

from offload.scheduling import ScheduledTime
from pipelines.sync import data_pipeline
from resources.sync_table import SqlTable
from schedules.requests import payload_request

CRON = "*/15 * * * *"


def frequent_sync_schedule(timezone: str, cron: str = CRON) -> dg.ScheduleDefinition:
    """``cron`` is the seed's; a test may fire it sooner."""

    @dg.schedule(
        name="frequent_sync",
        cron_schedule=cron,
        job=data_pipeline,
        execution_timezone=timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Every 15 minutes: new and changed rows of the source table into the destination.",
    )
    def frequent_sync(
        context: dg.ScheduleEvaluationContext, sync_source: SqlTable
    ) -> dg.RunRequest | dg.SkipReason:
        if not sync_source.configured:
            # Not an error: a deployment without a source simply has nothing to sync (the tick says why).
            return dg.SkipReason("no source table: set OFFLOAD_SYNC_SOURCE_URL and OFFLOAD_SYNC_SOURCE_TABLE")
        return payload_request(ScheduledTime.of(context, cron, timezone, "frequent_sync"))

    return frequent_sync
