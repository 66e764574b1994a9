"""The Celery app offload's step workers run: ``celery -A offload.runtime.celery_worker worker``.

dagster-celery's own app (``dagster_celery.app``) reads its broker from a YAML file and listens on the
``dagster`` queue; this one is the same app and task, configured from the variables the executor reads
(``offload.runtime.executors.celery_settings``), so a worker and the code location cannot disagree on the
broker,
the backend or the queue. A worker needs what a run worker needs: this project installed, the same
environment, and the same files (``DAGSTER_HOME``'s storage for step outputs, ``OFFLOAD_DATA_DIR`` for
work files): on other machines, a shared filesystem. Each task reloads the job from ``definitions.py``
and runs one step, writing its events straight into the instance's storage.
"""

from __future__ import annotations

from dagster_celery.config import TASK_EXECUTE_PLAN_NAME
from dagster_celery.executor import CeleryExecutor
from dagster_celery.make_app import make_app_with_task_routes
from dagster_celery.tasks import create_task
from kombu import Queue

from offload.runtime.executors import celery_settings

settings = celery_settings()
executor = CeleryExecutor.for_cli(
    broker=settings.broker,
    backend=settings.backend,
    config_source=settings.executor_config()["config_source"],
)
app = make_app_with_task_routes(
    task_routes={
        TASK_EXECUTE_PLAN_NAME: {"queue": settings.queue, "routing_key": f"{settings.queue}.execute_plan"}
    },
    app_args=executor.app_args(),
)
# Listen on offload's queue (dagster-celery's app hard-codes ``dagster``); priorities as dagster-celery sets.
app.conf.task_queues = [
    Queue(settings.queue, routing_key=f"{settings.queue}.#", queue_arguments={"x-max-priority": 10})
]
execute_plan = create_task(app)
