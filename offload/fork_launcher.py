"""``ForkServerRunLauncher``: runs start in a fraction of a second instead of several.

Dagster's ``DefaultRunLauncher`` starts every run in a new Python process that imports Dagster and the whole
code location before its first step: 4-15 s on a 2-core machine (``import definitions`` alone is 3.6 s
here), which is most of the time from a webhook to its run starting. This launcher forks each run worker
from a server process that imported them once (Python's ``forkserver``, the mechanism the multiprocess
executor already uses in ``offload/executors.py``), so a run worker starts with everything loaded and only
runs Dagster's own ``execute_run`` body.

Select it in ``dagster.yaml`` (the daemon's run queue is what calls it)::

    run_launcher:
      module: offload.fork_launcher
      class: ForkServerRunLauncher
      config:
        working_directory: /srv/app        # where definitions.py lives (default: this project's root)
        preload_modules: [dagster, definitions]

Opt-in: ``deploy/instance-common.yaml`` configures ``offload.launcher.OffloadRunLauncher`` (its pid check
guards against recycled pids with the start time, and it kills a worker over its max runtime); this
launcher has neither. Runs still go through the queue and its limits.

The fork server belongs to the process that launches (the daemon); when that process stops, the server
stops too, and runs already started go on. Workers are
tracked by pid (tag ``offload/run_worker_pid``): ``terminate`` interrupts one, and
``check_run_worker_health`` lets Dagster's run monitoring notice a worker that died (``kill -9``), which
the default launcher cannot. One machine only: the pid means nothing elsewhere.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Mapping, Sequence
from multiprocessing.context import ForkServerContext
from typing import Any

import dagster as dg
from dagster._core.launcher.base import CheckRunHealthResult, LaunchRunContext, RunLauncher, WorkerStatus
from dagster._grpc.types import ExecuteRunArgs
from dagster._serdes import ConfigurableClass, ConfigurableClassData, deserialize_value, serialize_value

from offload import paths

PID_TAG = "offload/run_worker_pid"
DEFAULT_PRELOAD = ("dagster", "definitions")


def execute_run(serialized_args: str, working_directory: str) -> None:
    """The run worker: Dagster's ``dagster api execute_run`` body, in a process forked with the code
    already imported."""
    from dagster._cli.api import _execute_run_command_body

    os.chdir(working_directory)
    from dagster._cli.utils import get_instance_for_cli
    from dagster._utils.interrupts import capture_interrupts

    args = deserialize_value(serialized_args, ExecuteRunArgs)
    with capture_interrupts(), get_instance_for_cli(instance_ref=args.instance_ref) as instance:
        code = _execute_run_command_body(
            args.run_id, instance, lambda event: None, set_exit_code_on_failure=False
        )
    sys.exit(code)


class ForkServerRunLauncher(RunLauncher, ConfigurableClass):
    def __init__(
        self,
        working_directory: str | None = None,
        preload_modules: Sequence[str] = DEFAULT_PRELOAD,
        inst_data: ConfigurableClassData | None = None,
    ):
        self._inst_data = inst_data
        self.working_directory = os.path.abspath(working_directory or paths.PROJECT_ROOT)
        self.preload_modules = list(preload_modules)
        self._context: ForkServerContext | None = None
        self._lock = threading.Lock()
        self._workers: dict[str, multiprocessing.process.BaseProcess] = {}
        super().__init__()

    @property
    def inst_data(self) -> ConfigurableClassData | None:
        return self._inst_data

    @classmethod
    def config_type(cls) -> dict[str, Any]:
        return {
            "working_directory": dg.Field(str, is_required=False),
            "preload_modules": dg.Field([str], is_required=False, default_value=list(DEFAULT_PRELOAD)),
        }

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]
    ) -> ForkServerRunLauncher:
        return cls(inst_data=inst_data, **config_value)

    def _fork_server(self) -> ForkServerContext:
        """The process's fork server, started on first use with the code location imported."""
        with self._lock:
            if self._context is None:
                context = multiprocessing.get_context("forkserver")
                context.set_forkserver_preload(self.preload_modules)
                # The server imports with the sys.path it is started with: the code location's directory
                # first, as the code server would have it.
                if self.working_directory not in sys.path:
                    sys.path.insert(0, self.working_directory)
                self._context = context
            return self._context

    def launch_run(self, context: LaunchRunContext) -> None:
        run = context.dagster_run
        args = ExecuteRunArgs(
            job_origin=run.job_code_origin,  # type: ignore[arg-type]
            run_id=run.run_id,
            instance_ref=self._instance.get_ref(),
            set_exit_code_on_failure=None,
        )
        worker = self._fork_server().Process(
            target=execute_run,
            args=(serialize_value(args), self.working_directory),
            name=f"run-{run.run_id}",
        )
        worker.start()
        with self._lock:
            self._workers = {k: p for k, p in self._workers.items() if p.is_alive()}  # reap finished ones
            self._workers[run.run_id] = worker
        self._instance.add_run_tags(run.run_id, {PID_TAG: str(worker.pid)})
        self._instance.report_engine_event(
            f"Run worker forked from the preloaded server (pid {worker.pid}).", run, cls=self.__class__
        )

    def _pid(self, run_id: str) -> int | None:
        run = self._instance.get_run_by_id(run_id)
        value = run.tags.get(PID_TAG) if run is not None else None
        return int(value) if value and value.isdigit() else None

    def terminate(self, run_id: str) -> bool:
        run = self._instance.get_run_by_id(run_id)
        pid = self._pid(run_id)
        if run is None or run.is_finished or pid is None:
            return False
        self._instance.report_run_canceling(run)
        try:
            os.kill(pid, signal.SIGINT)  # the worker's capture_interrupts turns it into a clean stop
        except ProcessLookupError:
            return False
        return True

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: dg.DagsterRun) -> CheckRunHealthResult:
        pid = self._pid(run.run_id)
        if pid is None:
            return CheckRunHealthResult(WorkerStatus.NOT_FOUND, "no run worker pid recorded")
        with self._lock:
            worker = self._workers.get(run.run_id)
        if worker is not None:  # forked by this process: its exit code is known
            if worker.is_alive():
                return CheckRunHealthResult(WorkerStatus.RUNNING)
            if worker.exitcode == 0:
                return CheckRunHealthResult(WorkerStatus.SUCCESS)
            return CheckRunHealthResult(WorkerStatus.FAILED, f"run worker exited with {worker.exitcode}")
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return CheckRunHealthResult(WorkerStatus.FAILED, f"run worker (pid {pid}) is gone")
        return CheckRunHealthResult(WorkerStatus.RUNNING)
