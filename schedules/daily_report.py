"""``daily_report`` at 09:00: materializes yesterday's partition of the ``daily_report`` asset."""

import datetime as dt
from typing import TYPE_CHECKING

import dagster as dg

from offload.scheduling import ScheduledTime

if TYPE_CHECKING:  # not exported by dagster; define_asset_job returns one
    from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

CRON = "0 9 * * *"


def daily_report_schedule(job: "UnresolvedAssetJobDefinition", timezone: str) -> dg.ScheduleDefinition:
    """``timezone`` must be the one the asset's days are in (``build_daily_report``): yesterday is the
    schedule's yesterday."""

    @dg.schedule(
        name="daily_report",
        cron_schedule=CRON,
        job=job,
        execution_timezone=timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Every day at 09:00: the report of the day before (runs, failures, payments, usage).",
    )
    def daily_report(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        tick = ScheduledTime.of(context, CRON, timezone)
        day = (tick.timestamp.date() - dt.timedelta(days=1)).isoformat()
        return dg.RunRequest(run_key=day, partition_key=day, tags=tick.tags())

    return daily_report
