"""Cron triggers. Each schedule targets a job from ``pipelines``; none are defined yet."""

import dagster as dg

defs = dg.Definitions(schedules=[])
