"""offload/runtime/launcher.py against real processes: a run worker is alive while a process with its pid
exists that
started before it reported the pid (a recycled pid or a zombie reads as dead), the health check reads the
pid Dagster recorded for the run and judges only runs launched on this machine, and ``stop`` interrupts a
worker, then kills it and its children when it ignores the interrupt."""

import socket
import subprocess
import sys
import time

import dagster as dg
import psutil
import pytest
from dagster._core.events import EngineEventData
from dagster._core.launcher import WorkerStatus

from benchmarks.support.waiting import wait_for
from offload import paths
from offload.runtime import instance as offload_instance
from offload.runtime.launcher import WORKER_HOST_TAG, OffloadRunLauncher, RunWorker, run_worker

SLEEPER = "import time\nwhile True: time.sleep(0.1)"
# Ignores SIGINT and has a child of its own: what a step that swallows Dagster's interrupt looks like.
STUBBORN = (
    "import signal, subprocess, sys, time\n"
    "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
    "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
    "print(child.pid, flush=True)\n"
    "while True: time.sleep(0.1)"
)


@pytest.fixture
def spawn():
    started: list[subprocess.Popen] = []

    def start(code: str, **kwargs) -> subprocess.Popen:
        process = subprocess.Popen([sys.executable, "-c", code], **kwargs)
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()
        process.wait(timeout=10)


def test_worker_is_alive_until_killed_and_a_zombie_counts_as_dead(spawn):
    process = spawn(SLEEPER)
    worker = RunWorker(process.pid, reported_at=time.time())
    assert worker.is_alive()
    process.kill()  # not reaped yet: a zombie
    wait_for(lambda: psutil.Process(process.pid).status() == psutil.STATUS_ZOMBIE, 10, "the zombie")
    assert not worker.is_alive()


def test_a_recycled_pid_is_not_the_worker(spawn):
    process = spawn(SLEEPER)
    started = psutil.Process(process.pid).create_time()
    assert not RunWorker(
        process.pid, reported_at=started - 60
    ).is_alive()  # our worker reported a minute earlier


def test_stop_interrupts_a_worker_that_listens(spawn):
    process = spawn(SLEEPER)
    worker = RunWorker(process.pid, reported_at=time.time())
    assert worker.stop(grace_seconds=10) is False  # it stopped on the interrupt
    assert process.wait(timeout=5) != 0


def test_stop_kills_a_worker_that_ignores_the_interrupt_and_its_children(spawn):
    process = spawn(STUBBORN, stdout=subprocess.PIPE, text=True)
    child = int(process.stdout.readline())
    worker = RunWorker(process.pid, reported_at=time.time())
    begun = time.monotonic()
    assert worker.stop(grace_seconds=1) is True
    assert time.monotonic() - begun >= 1
    assert process.wait(timeout=5) == -9
    wait_for(lambda: not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE,
             10, "the child to be killed")  # fmt: skip


@pytest.fixture
def instance(tmp_path):
    offload_instance.ensure_config(tmp_path)
    with dg.DagsterInstance.from_config(str(tmp_path)) as opened:
        yield opened


def started_run(instance: dg.DagsterInstance, pid: int, **tags: str) -> dg.DagsterRun:
    run = instance.add_run(dg.DagsterRun(job_name="job", status=dg.DagsterRunStatus.STARTED, tags=tags))
    # What the run worker logs before RUN_START (dagster/_grpc/impl.py), and a step subprocess's own pid.
    instance.report_engine_event("Started process for run", run, EngineEventData.in_process(pid))
    instance.report_engine_event(
        "Executing step in subprocess", run, EngineEventData.in_process(1), step_key="s"
    )
    return run


def test_health_check_reads_the_recorded_worker_and_reports_it_gone(instance, spawn):
    process = spawn(SLEEPER)
    run = started_run(instance, process.pid, **{WORKER_HOST_TAG: socket.gethostname()})
    launcher = instance.run_launcher
    assert isinstance(launcher, OffloadRunLauncher)
    assert run_worker(instance, run.run_id) == RunWorker(
        process.pid, run_worker(instance, run.run_id).reported_at
    )
    assert launcher.check_run_worker_health(run).status == WorkerStatus.RUNNING
    process.kill()
    process.wait(timeout=5)
    result = launcher.check_run_worker_health(run)
    assert result.status == WorkerStatus.NOT_FOUND
    assert f"run worker (pid {process.pid}) is gone" in str(result.msg)


@pytest.mark.parametrize(
    "tags", [{}, {WORKER_HOST_TAG: "another-machine"}], ids=["not-launched-here", "remote"]
)
def test_runs_from_elsewhere_are_not_judged(instance, tags):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(timeout=10)
    run = started_run(instance, dead.pid, **tags)
    assert instance.run_launcher.check_run_worker_health(run).status == WorkerStatus.RUNNING


def test_a_run_without_a_worker_yet_is_running(instance):
    run = instance.add_run(
        dg.DagsterRun(
            job_name="job", status=dg.DagsterRunStatus.STARTED, tags={WORKER_HOST_TAG: socket.gethostname()}
        )
    )
    assert instance.run_launcher.check_run_worker_health(run).status == WorkerStatus.RUNNING


def test_an_unknown_start_method_is_refused():
    with pytest.raises(ValueError, match=r"^start_method: must be one of forkserver, spawn, got 'thread'$"):
        OffloadRunLauncher(start_method="thread")


def test_the_default_launcher_forks_from_the_project(instance):
    launcher = instance.run_launcher
    assert launcher.start_method == "forkserver"
    assert launcher.fork_server.preload_modules == ("dagster", "definitions")
    assert launcher.fork_server.working_directory == str(paths.PROJECT_ROOT)
