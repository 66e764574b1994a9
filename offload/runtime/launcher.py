"""The run launcher offload configures: run workers forked from a preloaded server (no process start, no
imports), and two safeguards Dagster's default launcher lacks on one machine.

* **Fast start** (``start_method: forkserver``, the default). Dagster's ``DefaultRunLauncher`` asks the
  code server to start each run worker as a new Python process that imports Dagster and the code location
  first: 4-15 s on a 2-core machine. Here the worker is forked from a server that imported them once
  (``offload/runtime/forkserver.py``, which also explains how edited code, reloaded or not, is never run
  stale: the
  server is replaced when the code location's files change). The worker records its pid at once (an
  engine event, as a stock worker's "Started process for run (pid: N)"), and a cancel from the UI
  interrupts it directly, since no code server knows it. ``start_method: spawn`` keeps Dagster's way, for
  a code location whose import is not safe to fork (it starts threads or opens connections at import
  time: the fork would copy them half-made). Runs of a code server on another machine, or of one with a
  different Python interpreter, start Dagster's way whatever the setting: the fork server only holds this
  machine's code, imported with this interpreter.
* **A run whose worker is gone stays STARTED forever.** A code server notices its own child died and fails
  the run (``DagsterApiServer._check_for_orphaned_runs``); a forked worker has no code server, and when
  the code server dies too (``kill -9`` of the whole ``dagster dev`` tree, an OOM kill of the group, a
  machine restart) nobody is left to notice: Dagster's launcher does not implement
  ``check_run_worker_health``, so the daemon's run monitoring cannot tell
  (``dagster/_daemon/monitoring/run_monitoring.py``). :class:`OffloadRunLauncher` implements it. The
  worker's pid is the first one recorded for the run (the fork's engine event, or the stock worker's
  own); the worker is alive while a process with that pid exists that started before the event was
  written, so a recycled pid (or a machine restart, which recycles them all) reads as dead. On a dead
  worker the monitor marks the run failed and the daemon's run retries re-execute it from failure:
  finished steps keep their stored outputs and are not run again; the step that was running starts again
  from its beginning (steps are the unit of checkpointing). Fail-then-retry rather than ``resume_run``: a
  resumed worker skips finished steps only with Dagster's step-delegating executors (Docker,
  Kubernetes), not with the in-process or multiprocess executors offload uses. Mapped steps:
  ``offload/runtime/reexecution.py``.
* **A run over its max runtime is only asked to stop.** Dagster's monitor cancels it, which interrupts the
  worker; a step that ignores the interrupt keeps running, and the failure reads "Exceeded maximum
  runtime of N seconds.". Here ``terminate`` records the failure as ``exceeded max runtime of N s``
  (``offload/max_runtime.py``), marks it final (no run retry), interrupts the worker and kills it with its
  child processes if it has not exited after ``terminate_grace_seconds``.
* **A cancel is only a request.** Dagster's cancel interrupts the worker; a step that ignores the
  interrupt runs on, and child processes it started may outlive it. Here a canceled run's worker on this
  machine gets the same ``terminate_grace_seconds``, then it and its children are killed and the run is
  recorded CANCELED.

The pid check needs the daemon on the machine that runs the workers. The launcher records that machine's
name on every run whose worker it forks or starts through a local code server (unix socket or loopback
address) as the tag ``offload/worker_host``; a run without it, or launched elsewhere, is reported RUNNING:
it is not judged from here (its code server still fails it if the worker dies while the server lives).
Settings: ``deploy/instance-common.yaml``; guarantee and limits: docs/crash-resume.md.
"""

from __future__ import annotations

import contextlib
import enum
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Self

import dagster as dg
import psutil
from dagster._core.events import DagsterEventType, EngineEventData
from dagster._core.launcher import CheckRunHealthResult, LaunchRunContext, WorkerStatus
from dagster._core.storage.tags import MAX_RETRIES_TAG
from dagster._grpc.types import ExecuteRunArgs
from dagster._serdes import ConfigurableClassData

from offload import paths, process_tree
from offload.runtime import forkserver, max_runtime

WORKER_HOST_TAG = "offload/worker_host"
START_METHOD_TAG = "offload/start_method"  # forkserver (no code server knows the worker) or spawn


class StartMethod(enum.Enum):
    forkserver = "forkserver"
    spawn = "spawn"


FORKSERVER, SPAWN = StartMethod.forkserver.value, StartMethod.spawn.value
START_METHODS = (FORKSERVER, SPAWN)
_LOOPBACK = {"localhost", "127.0.0.1", "::1", "0.0.0.0", "::"}
# psutil derives a process's start time from the boot time, which Linux reports in whole seconds.
_START_TIME_SLACK = 1.0
CHECKED_KEPT = 64  # code fingerprints kept from ready_to_launch for the launch that follows it


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

    def family(self) -> list[psutil.Process]:
        """The live worker and all its descendants (empty if the worker is gone)."""
        process = self.process()
        return [process, *_children(process)] if process is not None else []

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
        return self.end_after(grace_seconds, family)

    def end_after(self, grace_seconds: float, family: Sequence[psutil.Process]) -> bool:
        """Wait up to ``grace_seconds`` for the interrupted worker to exit, else kill its whole tree; either
        way no member of ``family`` (the worker and its descendants, listed before the interrupt) is left.

        Returns True if the worker itself had to be killed.
        """
        if _wait_gone(self, grace_seconds):
            for member in family:  # children a worker that did exit left behind
                _signal(member, signal.SIGKILL)
            return False
        process = self.process()
        if process is not None:
            # The whole tree as it is now (and the process groups its members lead), plus any child seen
            # before the interrupt that its parent left behind since.
            process_tree.kill_tree(process)
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
    """Run workers forked from a preloaded server, a run-worker health check, and a max-runtime stop
    that really stops.

    Configure it in ``dagster.yaml`` (``deploy/instance-common.yaml`` holds the block)::

        run_launcher:
          module: offload.runtime.launcher
          class: OffloadRunLauncher
          config:
            start_method: forkserver           # or spawn: Dagster's new process per run
            preload_modules: [dagster, definitions]
            working_directory: /srv/app        # where definitions.py lives (default: this project's root)
            terminate_grace_seconds: 5
    """

    def __init__(
        self,
        inst_data: ConfigurableClassData | None = None,
        terminate_grace_seconds: int = 5,
        start_method: str = FORKSERVER,
        preload_modules: Sequence[str] = forkserver.DEFAULT_PRELOAD,
        working_directory: str | None = None,
    ):
        super().__init__(inst_data=inst_data)
        if start_method not in START_METHODS:
            raise ValueError(f"start_method: must be one of {', '.join(START_METHODS)}, got {start_method!r}")
        self.terminate_grace_seconds = terminate_grace_seconds
        self.start_method = start_method
        self.fork_server = forkserver.shared(working_directory or str(paths.PROJECT_ROOT), preload_modules)
        self._checked: dict[str, str] = {}  # run id -> the code fingerprint ready_to_launch found warm

    @classmethod
    def config_type(cls) -> dict[str, Any]:
        return {
            "terminate_grace_seconds": dg.Field(
                int,
                is_required=False,
                default_value=5,
                description="Seconds a canceled run, or one over its max runtime, gets to stop after the "
                "interrupt before its worker and the worker's children are killed.",
            ),
            "start_method": dg.Field(
                dg.Enum.from_python_enum_direct_values(StartMethod),
                is_required=False,
                default_value=FORKSERVER,
                description="forkserver: fork run workers from a server with the code imported (under a "
                "second). spawn: Dagster's new process per run (seconds), for code not safe to fork.",
            ),
            "preload_modules": dg.Field(
                [str],
                is_required=False,
                default_value=list(forkserver.DEFAULT_PRELOAD),
                description="Modules the fork server imports once: Dagster and the code location.",
            ),
            "working_directory": dg.Field(
                str,
                is_required=False,
                description="The code location's directory (default: this project's root).",
            ),
        }

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]) -> Self:
        return cls(inst_data=inst_data, **config_value)

    def ready_to_launch(self, run: dg.DagsterRun, workspace: Any) -> bool:
        """Whether ``launch_run`` would start ``run``'s worker without waiting for a preload: a fork
        server that is up with the current code, or Dagster's way. When the fork server is not ready it
        is started in the background, so the run coordinator queues this run and starts the next at once
        (offload/runtime/coordinator.py)."""
        if not self._forks(run, _local_worker_host(LaunchRunContext(dagster_run=run, workspace=workspace))):
            return True
        fingerprint = self.fork_server.fingerprint()
        if self.fork_server.is_warm(fingerprint):
            self._checked[run.run_id] = fingerprint  # launch_run's fork uses it: one walk of the code
            while len(self._checked) > CHECKED_KEPT:  # runs checked here but launched elsewhere
                del self._checked[next(iter(self._checked))]
            return True
        self.fork_server.warm_in_background()
        return False

    def _forks(self, run: dg.DagsterRun, host: str | None) -> bool:
        """Whether ``run``'s worker is forked here: fork server on, code server on this machine (``host``,
        from :func:`_local_worker_host`), same Python environment."""
        return self.start_method == FORKSERVER and host is not None and _same_interpreter(run)

    def launch_run(self, context: LaunchRunContext) -> None:
        """Fork the worker when the code is this machine's, else launch as Dagster does; either way record
        the worker's machine if it is this one."""
        run = context.dagster_run
        host = _local_worker_host(context)
        fork = self._forks(run, host)
        if host:  # before the fork: a cancel arriving while the server still imports must know how to stop it
            tags = {WORKER_HOST_TAG: host, START_METHOD_TAG: FORKSERVER if fork else SPAWN}
            self._instance.add_run_tags(run.run_id, tags)
        if fork and self._fork(run):
            return
        if fork:
            self._instance.add_run_tags(run.run_id, {START_METHOD_TAG: SPAWN})
        super().launch_run(context)

    def _fork(self, run: dg.DagsterRun) -> bool:
        """Fork the run's worker; False (and an engine event saying why) if the fork server failed, so the
        run starts Dagster's way, which reports a broken code location as a stock run would."""
        args = ExecuteRunArgs(
            job_origin=run.job_code_origin,  # type: ignore[arg-type]
            run_id=run.run_id,
            instance_ref=self._instance.get_ref(),
            set_exit_code_on_failure=None,
        )
        try:
            pid = self.fork_server.start_worker(args, fingerprint=self._checked.pop(run.run_id, None))
        except Exception as error:  # the server died while starting: its preload raised (the daemon's log)
            self._instance.report_engine_event(
                f"Fork server failed ({type(error).__name__}: {error}): "
                "starting the run worker Dagster's way.",
                run,
                cls=self.__class__,
            )
            return False
        # Recorded at once (the worker logs it again when it has loaded the job): the health check can tell
        # a worker that died while starting, and a cancel can reach it.
        self._instance.report_engine_event(
            f"Run worker forked from the preloaded server (pid {pid}).",
            run,
            EngineEventData.in_process(pid),
            cls=self.__class__,
        )
        self._run_ids.add(run.run_id)
        return True

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
        Any other termination (the UI's Terminate button, ``Client.cancel``) is Dagster's cooperative
        cancel, followed (for a worker on this machine) by a kill of the worker and its child processes
        when it has not exited after ``terminate_grace_seconds``; the run is then recorded CANCELED.
        """
        record = self._instance.get_run_record_by_id(run_id) if self.has_instance else None
        if record is None or record.dagster_run.is_finished:
            return super().terminate(run_id)
        run = record.dagster_run
        limit = max_runtime.max_runtime_of(run.tags, self._instance.run_monitoring_max_runtime_seconds)
        if not max_runtime.is_over(record.start_time, limit):
            if run.tags.get(START_METHOD_TAG) == FORKSERVER:
                return self._interrupt(run)
            local = run.tags.get(WORKER_HOST_TAG) == socket.gethostname()
            worker = run_worker(self._instance, run_id) if local else None
            family = worker.family() if worker else []
            terminated = super().terminate(run_id)
            if terminated and worker is not None and family:
                self._end_after_grace(run, worker, family)
            return terminated
        assert limit is not None  # is_over is False without a limit
        local = run.tags.get(WORKER_HOST_TAG) == socket.gethostname()
        worker = run_worker(self._instance, run_id) if local else None
        remote = None if worker else self._get_grpc_client_for_termination(run_id)  # needs an unfinished run
        self._instance.add_run_tags(run_id, {MAX_RETRIES_TAG: "0"})
        self._instance.report_run_failed(run, max_runtime.max_runtime_message(limit))
        current = self._instance.get_run_by_id(run_id)
        if current is None or current.status != dg.DagsterRunStatus.FAILURE:
            return False  # it finished first: the failure was refused (runtime/run_status.py); let it exit
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

    def _interrupt(self, run: dg.DagsterRun) -> bool:
        """Dagster's cooperative cancel, for a forked worker: no code server knows it, so it is sent the
        interrupt the code server would send (the worker's ``capture_interrupts`` turns it into a stop)."""
        if run.tags.get(WORKER_HOST_TAG) != socket.gethostname():
            return False  # forked on another machine: not ours to signal
        worker = run_worker(self._instance, run.run_id)
        process = worker.process() if worker else None
        if worker is None or process is None:
            # Not forked yet (the server is still importing) or gone: marked canceled, so a worker that
            # starts later does not run it ("canceled before execution could start").
            self._instance.report_run_canceled(run, message="Run canceled before its worker ran it.")
            return True
        family = [process, *_children(process)]
        self._instance.report_run_canceling(run)
        _signal(process, signal.SIGINT)
        self._end_after_grace(run, worker, family)
        return True

    def _end_after_grace(self, run: dg.DagsterRun, worker: RunWorker, family: list[psutil.Process]) -> None:
        """A cancel really stops: in the background (the UI's request returns at once), give the interrupted
        worker ``terminate_grace_seconds``, then kill it and its child processes if it is still there, and
        record the run CANCELED (nobody else would: its worker is gone)."""

        def end() -> None:
            if not worker.end_after(self.terminate_grace_seconds, family):
                return
            self._instance.report_engine_event(
                f"Run worker (pid {worker.pid}) ignored the cancel for {self.terminate_grace_seconds} s: "
                "killed it and its child processes.",
                run,
                cls=self.__class__,
            )
            current = self._instance.get_run_by_id(run.run_id)
            if current is not None and not current.is_finished:
                self._instance.report_run_canceled(
                    current, message="Run canceled: its worker ignored the interrupt and was killed."
                )

        threading.Thread(target=end, name=f"offload-cancel-{run.run_id[:8]}", daemon=True).start()


def _same_interpreter(run: dg.DagsterRun) -> bool:
    """The code location runs with this process's Python environment (the fork server's imports are this
    one's). Compared by the executable's directory: a virtualenv's ``python`` links to the interpreter it
    was made from, so resolved paths would make every virtualenv of one Python look the same."""
    origin = run.job_code_origin
    executable = origin.repository_origin.executable_path if origin else None
    return executable is not None and os.path.dirname(os.path.abspath(executable)) == os.path.dirname(
        os.path.abspath(sys.executable)
    )


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
