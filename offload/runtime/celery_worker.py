"""The Celery app offload's step workers run: ``celery -A offload.runtime.celery_worker worker``.

dagster-celery's own app (``dagster_celery.app``) reads its broker from a YAML file and listens on the
``dagster`` queue; this one is the same app and task, configured from the variables the executor reads
(``offload.runtime.executors.celery_settings``), so a worker and the code location cannot disagree on the
broker,
the backend or the queue. A worker needs what a run worker needs: this project installed, the same
environment, and the same files (``DAGSTER_HOME``'s storage for step outputs, ``OFFLOAD_DATA_DIR`` for
work files): on other machines, a shared filesystem. Each task reloads the job from ``definitions.py``
and runs one step, writing its events straight into the instance's storage.

A worker that dies mid-step does not lose the step: steps are acknowledged once finished (the settings in
``offload.runtime.executors.CelerySettings.executor_config``), so the broker delivers the step again. A
delivery can
then meet an earlier one of the same task that is still running (a worker cut off from the broker for
longer than the visibility timeout) or that finished without being acknowledged (the worker died after
storing the result): :class:`StepTask` holds a lease on the task id while it runs, so the later delivery
waits for the earlier one, and returns a result already stored instead of running the step again. What a
step does outside Dagster stays once even when a step does run twice (a pool process killed half-way):
storage keys are fixed by the payload (``offload/keys.py``) and emails carry idempotency keys.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import celery
from celery.backends.base import BaseKeyValueStoreBackend
from dagster_celery.config import TASK_EXECUTE_PLAN_NAME
from dagster_celery.executor import CeleryExecutor
from dagster_celery.make_app import make_app_with_task_routes
from dagster_celery.tasks import create_task
from kombu import Queue

from offload.client.idempotency import IdempotencyStore
from offload.runtime.executors import celery_settings

LEASE_JOB = "celery-step"  # the leases' rows in the idempotency table: job = this, key = the task id
LEASE_RENEW_SECONDS = 2.0  # a running delivery renews its lease this often ...
LEASE_STALE_SECONDS = 10.0  # ... and a lease not renewed for this long belonged to a dead process
LEASE_TTL_SECONDS = 86400.0  # a finished delivery's mark outlives any redelivery (visibility timeout)
FINISHED = "finished"  # the lease row's run_id once its delivery has returned
STORED_RESULT_WAIT_SECONDS = 30.0  # a finished delivery's result reaches the backend just after it returns

_store: IdempotencyStore | None = None


def _leases() -> IdempotencyStore:
    """The process's idempotency store (opened in the pool process, after the fork)."""
    global _store
    if _store is None:
        _store = IdempotencyStore()
    return _store


class StepTask(celery.Task):
    """dagster-celery's step task, run at most once at a time per task id, and not again once finished."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        task_id = self.request.id
        if not task_id:  # called in process (no delivery): nothing to guard
            return super().__call__(*args, **kwargs)
        leases = _leases()
        # Waits for as long as an earlier delivery of the step keeps its lease alive.
        claim = leases.claim(
            LEASE_JOB, task_id, LEASE_TTL_SECONDS, wait=LEASE_TTL_SECONDS, stale_after=LEASE_STALE_SECONDS
        )
        if claim.run_id == FINISHED:
            stored = self._stored_result(task_id)
            if stored is not None:
                return stored[0]
            # No result to give back (a backend that keeps none for other consumers): run it again; its
            # effects are idempotent (module docstring).
            return super().__call__(*args, **kwargs)
        stop = threading.Event()
        renewer = threading.Thread(
            target=self._renew, args=(leases, task_id, claim.token, stop), name="step-lease", daemon=True
        )
        renewer.start()
        try:
            result = super().__call__(*args, **kwargs)
        except BaseException:
            stop.set()
            leases.release(LEASE_JOB, task_id, claim.token)  # a retry of the task may run it afresh
            raise
        stop.set()
        leases.record(LEASE_JOB, task_id, claim.token, FINISHED)
        leases.delete_expired(LEASE_JOB)  # the marks of steps finished over a day ago
        return result

    @staticmethod
    def _renew(leases: IdempotencyStore, task_id: str, token: str, stop: threading.Event) -> None:
        while not stop.wait(LEASE_RENEW_SECONDS):
            leases.renew(LEASE_JOB, task_id, token)

    def _stored_result(self, task_id: str) -> tuple[Any] | None:
        """The result an earlier delivery stored, as a 1-tuple; None when the backend has none."""
        if not isinstance(self.backend, BaseKeyValueStoreBackend):
            return None
        deadline = time.monotonic() + STORED_RESULT_WAIT_SECONDS
        while True:
            meta = self.backend.get_task_meta(task_id)
            if meta.get("status") == celery.states.SUCCESS:
                return (meta["result"],)
            if time.monotonic() > deadline:
                return None
            time.sleep(0.2)


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
execute_plan = create_task(app, base=StepTask)
