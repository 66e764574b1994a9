"""How a run's steps are executed, chosen once by ``OFFLOAD_EXECUTOR``.

``in_process`` (default): every step in the run worker, one after another. On a small machine this is the
fastest choice for FFmpeg work, because each encoder already uses every core: measured on 2 cores, the
video pipeline on a 30 s 720p clip took 24 s in process and 35 s with parallel step processes (47 s with
the default spawn start method), against 23 s for bare ffmpeg (benchmarks/pipeline_vs_ffmpeg.py).
``multiprocess``: one process per step, parallel branches run at once (thumbnail and each format), forked
from a server that has already imported the code so a step starts in a fraction of a second. Use it on
machines with more cores than one encoder can use.
``celery``: each step is a Celery task (dagster-celery), run by whichever worker takes it from the broker
(``offload/runtime/celery_worker.py``): parallel branches spread over as many machines as run workers. The
broker
and result backend come from the environment (:func:`celery_settings`), the same variables the workers read.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

import dagster as dg

from offload import paths
from offload.errors import ConfigurationError

EXECUTORS = ("in_process", "multiprocess", "celery")

BROKER_VAR = "OFFLOAD_CELERY_BROKER_URL"
BACKEND_VAR = "OFFLOAD_CELERY_BACKEND_URL"
QUEUE_VAR = "OFFLOAD_CELERY_QUEUE"
# The embedded default's broker: the Redis a development machine runs anyway. Production names its own.
LOCAL_BROKER = "redis://127.0.0.1:6379/0"
DEFAULT_QUEUE = "dagster"  # dagster-celery's own queue name
QUEUE_RULE = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")
VISIBILITY_VAR = "OFFLOAD_CELERY_VISIBILITY_TIMEOUT"
# Seconds a step taken from a Redis (or SQS) broker may stay unacknowledged before the broker hands it to
# another worker: the dead worker's steps come back after this long, so it must exceed the longest step
# (a step still running then is not run twice: offload/runtime/celery_worker.py waits for it). Celery's
# default.
DEFAULT_VISIBILITY_TIMEOUT = 3600


@dataclass(frozen=True)
class CelerySettings:
    """Where steps are sent and their results kept. ``broker_var`` / ``backend_var`` name the variable a
    URL came from (``None``: a default), so the executor can pass the variable instead of its value."""

    broker: str
    backend: str
    queue: str
    broker_var: str | None
    backend_var: str | None
    visibility_timeout: int = DEFAULT_VISIBILITY_TIMEOUT

    def executor_config(self) -> dict[str, Any]:
        """dagster-celery's executor config. URLs that came from a variable are given as ``{"env": name}``:
        Dagster reads them when the run starts, so a password in a broker URL never shows in the UI."""
        return {
            "broker": {"env": self.broker_var} if self.broker_var else self.broker,
            "backend": {"env": self.backend_var} if self.backend_var else self.backend,
            "config_source": {
                "task_default_queue": self.queue,
                # A step is acknowledged when it has finished, not when a worker takes it: a worker that
                # dies mid-step (its pool process killed, or the whole machine) leaves the step on the
                # broker, which delivers it again (at once for a lost pool process, after the visibility
                # timeout for a lost worker) instead of losing it.
                "task_acks_late": True,
                "task_reject_on_worker_lost": True,
                "worker_prefetch_multiplier": 1,  # a worker holds no step it has not started
                # dagster-celery's transport options, with the visibility timeout (replaced as a whole).
                "broker_transport_options": {
                    "max_retries": 3,
                    "interval_start": 0,
                    "interval_step": 0.2,
                    "interval_max": 0.5,
                    "visibility_timeout": self.visibility_timeout,
                },
            },
        }


def celery_settings() -> CelerySettings:
    """The broker (``OFFLOAD_CELERY_BROKER_URL``; the local Redis in the embedded default, required in
    production), the result backend (``OFFLOAD_CELERY_BACKEND_URL``; default: the broker when it is Redis,
    else Celery's ``rpc://``, which answers over an AMQP broker) and the queue (``OFFLOAD_CELERY_QUEUE``)."""
    broker = os.environ.get(BROKER_VAR, "").strip()
    broker_var: str | None = BROKER_VAR if broker else None
    if not broker:
        if paths.environment() == paths.PRODUCTION:
            raise ConfigurationError(f"{BROKER_VAR} is not set: OFFLOAD_EXECUTOR=celery needs the broker URL")
        broker = LOCAL_BROKER
    backend = os.environ.get(BACKEND_VAR, "").strip()
    backend_var: str | None = BACKEND_VAR if backend else None
    if not backend:
        redis = broker.startswith(("redis://", "rediss://"))
        backend, backend_var = (broker, broker_var) if redis else ("rpc://", None)
    queue = os.environ.get(QUEUE_VAR, "").strip() or DEFAULT_QUEUE
    if not QUEUE_RULE.match(queue):
        raise ConfigurationError(f"{QUEUE_VAR} = {queue!r}: must be 1-100 characters of A-Z, a-z, 0-9, _ . -")
    raw = os.environ.get(VISIBILITY_VAR, "").strip()
    visibility = DEFAULT_VISIBILITY_TIMEOUT
    if raw:
        if not raw.isdigit() or int(raw) < 1:
            raise ConfigurationError(
                f"{VISIBILITY_VAR} = {raw!r}: must be a whole number of seconds, at least 1"
            )
        visibility = int(raw)
    return CelerySettings(broker, backend, queue, broker_var, backend_var, visibility)


def executor_from_env() -> dg.ExecutorDefinition:
    name = os.environ.get("OFFLOAD_EXECUTOR", "in_process").strip() or "in_process"
    if name == "in_process":
        return dg.in_process_executor
    if name == "multiprocess":
        return dg.multiprocess_executor.configured(
            {"start_method": {"forkserver": {"preload_modules": ["dagster", "definitions"]}}}
        )
    if name == "celery":
        from dagster_celery import celery_executor  # imports Celery: only when chosen

        return celery_executor.configured(celery_settings().executor_config())
    raise ValueError(f"OFFLOAD_EXECUTOR: must be one of {', '.join(EXECUTORS)}, got {name!r}")
