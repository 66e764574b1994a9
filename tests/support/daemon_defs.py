"""A code location for the scheduler daemon test: the real ``cleanup`` job under its real schedule factory,
with a cron of every minute so the daemon fires it within the test."""

import dagster as dg

from offload import paths
from pipelines.cleanup import cleanup
from resources import resources_for
from schedules.weekly_cleanup import weekly_cleanup_schedule

defs = dg.Definitions(
    jobs=[cleanup],
    schedules=[weekly_cleanup_schedule("UTC", cron="* * * * *")],
    resources=resources_for(paths.environment()),
    executor=dg.in_process_executor,
)
