"""The daemon's run monitor, told about run workers that die while their run is STARTING.

Dagster's run monitor (``dagster/_daemon/monitoring/run_monitoring.py``) asks the run launcher whether a
run's worker is alive only for STARTED runs. A STARTING run (the worker was launched and has not yet
stored ``RUN_START``: it is loading the job, building the plan, making its executor) is only timed: it is
failed after ``run_monitoring.start_timeout_seconds`` (180 s by default). A worker killed in that window
(an OOM kill while it imports, ``kill -9``, a crash in executor set-up) left its run STARTING for 3
minutes, where a STARTED run's crash is found within one monitor poll.

offload's launcher knows the worker's pid from the moment it forks it (``offload/runtime/launcher.py``
records it at once, before the worker runs anything; a worker started Dagster's way records it as it
starts), so :func:`monitor_starting_run` asks the launcher's health check about STARTING runs too, on every
poll (``run_monitoring.poll_interval_seconds``). A worker found gone fails the run with the same message as
a STARTED run's dead worker, and the run retries re-execute it from failure as any other crash. Otherwise
(worker alive, or its pid not recorded yet) Dagster's own start timeout applies, unchanged. Only offload's
launcher is asked: another launcher's health check may not expect a run that is still starting.

Dagster has no setting or hook for this, so :func:`install` (called by ``OffloadInstance``, so it is in
place in the daemon) puts :func:`monitor_starting_run` in the monitor module's place of Dagster's, which
it calls for everything it does not handle. tests/test_monitoring.py checks that Dagster's still ignores
a dead worker of a STARTING run: remove this module when it no longer does.
"""

from __future__ import annotations

import logging

import dagster as dg
from dagster._core.launcher import WorkerStatus
from dagster._core.storage.dagster_run import RunRecord
from dagster._daemon.monitoring import run_monitoring

dagsters_monitor_starting_run = run_monitoring.monitor_starting_run


def monitor_starting_run(instance: dg.DagsterInstance, run_record: RunRecord, logger: logging.Logger) -> None:
    """Fail a STARTING run whose worker offload's launcher finds gone; else Dagster's start timeout."""
    # The launcher module needs the instance's imports: imported here, not at the top.
    from offload.runtime.launcher import OffloadRunLauncher

    run = run_record.dagster_run
    launcher = instance.run_launcher
    if run.status == dg.DagsterRunStatus.STARTING and isinstance(launcher, OffloadRunLauncher):
        health = launcher.check_run_worker_health(run)
        if health.status not in (WorkerStatus.RUNNING, WorkerStatus.SUCCESS):
            current = instance.get_run_by_id(run.run_id)
            if current is None or current.status != run.status:
                # The worker got further (or finished) before it exited: not a crash while starting.
                logger.info(f"Run {run.run_id} moved on to {current and current.status} while checked")
                return
            message = (
                f"Detected run worker status {health} while the run was starting. "
                f"Marking run {run.run_id} as failed."
            )
            logger.info(message)
            instance.report_run_failed(current, message)  # refused if it finished meanwhile (run_status)
            return
    dagsters_monitor_starting_run(instance, run_record, logger)


def install() -> None:
    """Make the run monitor of this process use :func:`monitor_starting_run` (module docstring)."""
    run_monitoring.monitor_starting_run = monitor_starting_run
