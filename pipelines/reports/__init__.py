"""The daily report: a daily-partitioned asset of the job system's and the app's numbers."""

from offload.scheduling import schedule_timezone
from pipelines.reports.assets import build_daily_report

daily_report, daily_report_job = build_daily_report(schedule_timezone("daily_report"))

__all__ = ["build_daily_report", "daily_report", "daily_report_job"]
