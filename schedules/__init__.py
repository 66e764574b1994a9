"""Cron triggers, one module each; every schedule targets a job from ``pipelines`` and is on by default
(it runs whenever the daemon runs). Time zones: ``offload.scheduling.schedule_timezone`` (UTC unless set)."""

import dagster as dg

from offload.scheduling import schedule_timezone
from pipelines.reports import daily_report_job
from schedules.daily_report import daily_report_schedule
from schedules.frequent_sync import frequent_sync_schedule
from schedules.monthly_invoicing import monthly_invoicing_schedule
from schedules.weekly_cleanup import weekly_cleanup_schedule

defs = dg.Definitions(
    schedules=[
        daily_report_schedule(daily_report_job, schedule_timezone("daily_report")),
        frequent_sync_schedule(schedule_timezone("frequent_sync")),
        weekly_cleanup_schedule(schedule_timezone("weekly_cleanup")),
        monthly_invoicing_schedule(schedule_timezone("monthly_invoicing")),
    ]
)
