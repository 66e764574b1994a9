"""``monthly_invoicing`` at midnight on the 1st: runs ``invoicing`` for the month that just ended."""

import dagster as dg

from offload.scheduling import ScheduledTime
from pipelines.invoicing import invoicing
from schedules.requests import payload_request

CRON = "0 0 1 * *"


def monthly_invoicing_schedule(timezone: str, cron: str = CRON) -> dg.ScheduleDefinition:
    """``cron`` is the seed's; a test may fire it sooner."""

    @dg.schedule(
        name="monthly_invoicing",
        cron_schedule=cron,
        job=invoicing,
        execution_timezone=timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="On the 1st at 00:00: invoice every user's usage of the previous calendar month.",
    )
    def monthly_invoicing(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        return payload_request(ScheduledTime.of(context, cron, timezone, "monthly_invoicing"))

    return monthly_invoicing
