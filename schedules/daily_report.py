"""``daily_report`` at 09:00: materializes yesterday's partition of the ``daily_report`` asset, and every day
missed since the last materialized one.

Dagster's scheduler does not catch up a partitioned schedule after an outage: a daemon down from Monday to
Friday fires one tick on its return, for Thursday. So each tick asks the instance which day was last
materialized and requests every partition after it up to yesterday, one run per day (the run key is the
day, so a day already requested is not launched twice). Before the first materialization it requests only
yesterday: older days are a backfill (README, "Running them by hand").
"""

import datetime as dt
from typing import TYPE_CHECKING

import dagster as dg

from offload.scheduling import ScheduledTime
from pipelines.reports.assets import START_DATE

if TYPE_CHECKING:  # not exported by dagster; define_asset_job returns one
    from offload.runtime.dagster_internals import UnresolvedAssetJobDefinition

CRON = "0 9 * * *"
NAME = "daily_report"
ASSET = dg.AssetKey("daily_report")


def missed_days(materialized: set[str], yesterday: dt.date) -> list[dt.date]:
    """The days to report at a tick whose yesterday is ``yesterday``, given the partitions (ISO dates)
    already materialized: every day after the newest of them, through ``yesterday``; only ``yesterday``
    when none is; none when ``yesterday`` is done."""
    done = [dt.date.fromisoformat(key) for key in materialized if key <= yesterday.isoformat()]
    if not done:
        return [yesterday]
    first = max(max(done) + dt.timedelta(days=1), dt.date.fromisoformat(START_DATE))
    return [first + dt.timedelta(days=n) for n in range((yesterday - first).days + 1)]


def daily_report_schedule(job: "UnresolvedAssetJobDefinition", timezone: str) -> dg.ScheduleDefinition:
    """``timezone`` must be the one the asset's days are in (``build_daily_report``): yesterday is the
    schedule's yesterday."""

    @dg.schedule(
        name=NAME,
        cron_schedule=CRON,
        job=job,
        execution_timezone=timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Every day at 09:00: the report of the day before (runs, failures, payments, usage), "
        "and of every day missed since the last report.",
    )
    def daily_report(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest] | dg.SkipReason:
        tick = ScheduledTime.of(context, CRON, timezone, NAME)
        yesterday = tick.timestamp.date() - dt.timedelta(days=1)
        materialized = context.instance.get_materialized_partitions(ASSET) if context.instance_ref else set()
        days = missed_days(materialized, yesterday)
        if not days:
            return dg.SkipReason(f"{yesterday.isoformat()} is already reported")
        return [
            dg.RunRequest(run_key=day.isoformat(), partition_key=day.isoformat(), tags=tick.tags())
            for day in days
        ]

    return daily_report
