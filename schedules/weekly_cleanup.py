"""``weekly_cleanup`` on Mondays at 08:00: runs ``cleanup`` with the default retention ages."""

import dagster as dg

from offload.scheduling import ScheduledTime
from pipelines.cleanup import cleanup
from schedules.requests import payload_request

CRON = "0 8 * * 1"


def weekly_cleanup_schedule(timezone: str, cron: str = CRON) -> dg.ScheduleDefinition:
    """``cron`` is the seed's; a test may fire it sooner."""

    @dg.schedule(
        name="weekly_cleanup",
        cron_schedule=cron,
        job=cleanup,
        execution_timezone=timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Mondays at 08:00: remove storage objects, outbox messages, work files, old runs.",
    )
    def weekly_cleanup(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        return payload_request(ScheduledTime.of(context, cron, timezone, "weekly_cleanup"))

    return weekly_cleanup
