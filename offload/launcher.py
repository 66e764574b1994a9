"""The run launcher offload configures: Dagster's default launcher plus two things it lacks on one machine.

Dagster's ``DefaultRunLauncher`` asks the code server to start a run worker (a child process of the code
server) and forgets about it. Two gaps follow:

* **A run whose worker is gone stays STARTED forever.** While the code server lives, it notices its child
  died and fails the run itself (``DagsterApiServer._check_for_orphaned_runs``). But when the code server
  dies too (``kill -9`` of the whole ``dagster dev`` tree, an OOM kill of the group, a machine restart),
  nobody is left to notice: the launcher does not implement ``check_run_worker_health``, so the daemon's
  run monitoring cannot tell (``dagster/_daemon/monitoring/run_monitoring.py``).
  :class:`OffloadRunLauncher` implements it. The worker's pid is the one Dagster already records (the run
  worker's "Started process for run (pid: N)" engine event); the worker is alive while a process with that
  pid exists that started before the event was written, so a recycled pid (or a machine restart, which
  recycles them all) reads as dead. On a dead worker the monitor marks the run failed and the daemon's run
  retries re-execute it from failure: finished steps keep their stored outputs and are not run again; the
  step that was running starts again from its beginning (steps are the unit of checkpointing).
  Fail-then-retry rather than ``resume_run``: a resumed worker skips finished steps only with Dagster's
  step-delegating executors (Docker, Kubernetes), not with the in-process or multiprocess executors
  offload uses, and the code server offers no "resume" call. Mapped steps: ``offload/reexecution.py``.
* **A run over its max runtime is only asked to stop.** Dagster's monitor cancels it through the code
  server, which interrupts the worker; a step that ignores the interrupt (or a worker whose code server is
  gone) keeps running, and the failure reads "Exceeded maximum runtime of N seconds.". Here ``terminate``
  records the failure as ``exceeded max runtime of N s`` (``offload/limits.py``), marks it final (no run
  retry), interrupts the worker and kills it with its child processes if it has not exited after
  ``terminate_grace_seconds``.

The pid check needs the daemon on the machine that runs the workers. The launcher records that machine's
name on every run it launches against a local code server (unix socket or loopback address) as the tag
``offload/worker_host``; a run without it, or launched elsewhere, is reported RUNNING: it is not judged
from here (its code server still fails it if the worker dies while the server lives). Settings:
``deploy/instance-common.yaml``; guarantee and limits: README, "Crash-resume and time limits".
"""

from __future__ import annotations

import contextlib
import signal
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Self

import dagster as dg
import psutil
from dagster._core.events import DagsterEventType
from dagster._core.launcher import CheckRunHealthResult, LaunchRunContext, WorkerStatus
from dagster._core.storage.tags import MAX_RETRIES_TAG
from dagster._serdes import ConfigurableClassData

from offload import limits

WORKER_HOST_TAG = "offload/worker_host"
_LOOPBACK = {"localhost", "127.0.0.1", "::1", "0.0.0.0", "::"}
# psutil derives a process's start time from the boot time, which Linux reports in whole seconds.
_START_TIME_SLACK = 1.0


@dataclass(frozen=True)
class RunWorker:
    """A run worker process: its pid and the time it reported it (it had started by then)."""

    pid: int
    reported_at: float

    def process(self) -> psutil.Process | None:
        """The live process, or None if it is gone (exited, a zombie, or the pid now belongs to another)."""
        try:
            process = psutil.Process(self.pid)
            if process.create_time() > self.reported_at + _START_TIME_SLACK:
                return None  # the pid was recycled by a process started after our worker reported it
            if process.status() == psutil.STATUS_ZOMBIE:
                return None
            return process
        except psutil.NoSuchProcess:
            return None

    def is_alive(self) -> bool:
        return self.process() is not None

    def stop(self, grace_seconds: float) -> bool:
        """Interrupt the worker as Dagster's own cancel does, then kill it and its children after the grace.

        Returns True if it had to be killed. Dagster's run worker turns SIGINT into an interrupt of the
        running step, so a well-behaved step unwinds (its ``finally`` blocks run) well within the grace.
        """
        process = self.process()
        if process is None:
            return False
        family = [process, *_children(process)]
        _signal(process, signal.SIGINT)
        if _wait_gone(self, grace_seconds):
            return False
        for member in family:
            _signal(member, signal.SIGKILL)
        _wait_gone(self, 10)
        return True


def run_worker(instance: dg.DagsterInstance, run_id: str) -> RunWorker | None:
    """The run's worker as Dagster recorded it, or None before it has started.

    The run worker logs its pid in an engine event before it reports RUN_START (``dagster/_grpc/impl.py``);
    the executor logs it again. Step subprocesses log their own pids on events that carry a step key, so
    only run-level events are read. One read of the run's engine events per check: no cache to outgrow.
    """
    for entry in instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT):
        data = entry.dagster_event.engine_event_data if entry.dagster_event else None
        pid = data.metadata.get("pid") if data else None
        if pid is not None and entry.step_key is None:
            return RunWorker(pid=int(str(pid.value)), reported_at=entry.timestamp)
    return None


class OffloadRunLauncher(dg.DefaultRunLauncher):
    """``DefaultRunLauncher`` with a run-worker health check and a max-runtime stop that really stops.

    Configure it in ``dagster.yaml`` (``deploy/instance-common.yaml`` holds the block)::

        run_launcher:
          module: offload.launcher
          class: OffloadRunLauncher
          config:
            terminate_grace_seconds: 5
    """

    def __init__(self, inst_data: ConfigurableClassData | None = None, terminate_grace_seconds: int = 5):
        super().__init__(inst_data=inst_data)
        self.terminate_grace_seconds = terminate_grace_seconds

    @classmethod
    def config_type(cls) -> dict[str, Any]:
        return {
            "terminate_grace_seconds": dg.Field(
                int,
                is_required=False,
                default_value=5,
                description="Seconds a run over its max runtime gets to stop after the interrupt before "
                "its worker and the worker's children are killed.",
            )
        }

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]) -> Self:
        return cls(inst_data=inst_data, **config_value)

    def launch_run(self, context: LaunchRunContext) -> None:
        """Launch as Dagster does, after recording the worker's machine if the code server is local."""
        host = _local_worker_host(context)
        if host:
            self._instance.add_run_tags(context.dagster_run.run_id, {WORKER_HOST_TAG: host})
        super().launch_run(context)

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: dg.DagsterRun) -> CheckRunHealthResult:
        """RUNNING unless this machine launched the run and its worker process is gone."""
        if run.tags.get(WORKER_HOST_TAG) != socket.gethostname():
            return CheckRunHealthResult(WorkerStatus.RUNNING, "run worker not on this machine: not checked")
        worker = run_worker(self._instance, run.run_id)
        if worker is None:
            return CheckRunHealthResult(WorkerStatus.RUNNING, "run worker has not reported its pid yet")
        if worker.is_alive():
            return CheckRunHealthResult(WorkerStatus.RUNNING, run_worker_id=str(worker.pid))
        return CheckRunHealthResult(
            WorkerStatus.NOT_FOUND,
            f"run worker (pid {worker.pid}) is gone: killed or crashed while the run was in progress",
            run_worker_id=str(worker.pid),
        )

    def terminate(self, run_id: str) -> bool:
        """A run over its max runtime ends as failed, for good, and its worker is stopped for real.

        Dagster's monitor calls this (after marking the run CANCELING) when a run is over its limit, and
        records "Exceeded maximum runtime" only if it returns True. So the failure is recorded here first,
        with offload's wording and ``dagster/max_retries: 0`` (a timed-out run is final, not a crash to
        retry), and False is returned. Recording it before stopping the worker also makes the interrupted
        worker log "interrupted for a run that was already in a failure state" instead of a cancel.
        Any other termination (the UI's Terminate button) is Dagster's cooperative cancel, unchanged.
        """
        record = self._instance.get_run_record_by_id(run_id) if self.has_instance else None
        if record is None or record.dagster_run.is_finished:
            return super().terminate(run_id)
        run = record.dagster_run
        limit = limits.max_runtime_of(run.tags, self._instance.run_monitoring_max_runtime_seconds)
        if not limits.is_over(record.start_time, limit):
            return super().terminate(run_id)
        assert limit is not None  # is_over is False without a limit
        local = run.tags.get(WORKER_HOST_TAG) == socket.gethostname()
        worker = run_worker(self._instance, run_id) if local else None
        remote = None if worker else self._get_grpc_client_for_termination(run_id)  # needs an unfinished run
        self._instance.add_run_tags(run_id, {MAX_RETRIES_TAG: "0"})
        self._instance.report_run_failed(run, limits.max_runtime_message(limit))
        if worker is not None:
            if worker.stop(self.terminate_grace_seconds):
                self._instance.report_engine_event(
                    f"Run worker (pid {worker.pid}) ignored the interrupt for "
                    f"{self.terminate_grace_seconds} s: killed it and its child processes.",
                    run,
                    cls=self.__class__,
                )
        elif remote is not None:
            from dagster._grpc.types import CancelExecutionRequest

            remote.cancel_execution(CancelExecutionRequest(run_id=run_id))
        return False


def _local_worker_host(context: LaunchRunContext) -> str | None:
    """This machine's name when the run's code server (which forks the worker) listens on this machine."""
    origin = context.dagster_run.remote_job_origin
    if context.workspace is None or origin is None:
        return None
    location = context.workspace.get_code_location(
        origin.repository_origin.code_location_origin.location_name
    )
    client = getattr(location, "client", None)
    if client is None:
        return None
    if client.socket or client.host in _LOOPBACK or client.host == socket.gethostname():
        return socket.gethostname()
    return None


def _children(process: psutil.Process) -> list[psutil.Process]:
    try:
        return process.children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _signal(process: psutil.Process, signum: int) -> None:
    with contextlib.suppress(psutil.NoSuchProcess):
        process.send_signal(signum)


def _wait_gone(worker: RunWorker, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while worker.is_alive():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True
