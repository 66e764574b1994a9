"""Crash-resume and max runtime with the real system: ``offload dev`` (webserver, daemon, code server) on a
temporary DAGSTER_HOME configured by offload's own instance settings (intervals shortened), the test-only
code location tests/crash_location.py, runs submitted through GraphQL.

* ``kill -9`` of the run worker while a step waits, at two step positions: Dagster's code server notices
  its child died and fails the run, and the run-retry settings re-execute it from failure.
* ``kill -9`` of the whole tree, then a restart: no code server is left to notice, so offload's launcher
  health check finds the worker gone, and the retry follows.
* ``kill -9`` of the run worker while its run is STARTING (held in executor set-up, before RUN_START):
  Dagster's monitor would wait for its 180 s start timeout; offload's launcher knows the pid.
Each time: the run is failed within 30 s, a retry run completes, the step log shows that the steps that
had finished ran exactly once and the interrupted one again from its start, and the final output equals an
uninterrupted run's. Also with mapped steps, when the worker dies in the first of three (the retry must run
the two that never started: offload/reexecution.py).
* A run over its ``dagster/max_runtime`` ends as failed with "exceeded max runtime of 2 s", is not
  retried, and its worker is gone, also when the step swallows the interrupt.
"""

import os
import pickle
import signal
import time
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.events import DagsterEventType

from offload.launcher import RunWorker, run_worker
from tests.support.dagster_dev import DagsterDev, finished, step_log, submit, wait_for

HERE = Path(__file__).parent
DETECTION_TARGET = 30  # seconds, the target
STEPS = ["first", "second", "third"]


@pytest.fixture(scope="module")
def dev(tmp_path_factory):
    root = tmp_path_factory.mktemp("crash")
    services = DagsterDev(root / "home", HERE / "crash_workspace.yaml", root / "dev.log")
    try:
        services.start()
        yield services
    finally:
        services.stop()


@pytest.fixture(scope="module")
def instance(dev):
    with dg.DagsterInstance.from_config(str(dev.home)) as opened:
        yield opened


def run_of(instance: dg.DagsterInstance, run_id: str) -> dg.DagsterRun:
    run = instance.get_run_by_id(run_id)
    assert run is not None
    return run


def output(dev: DagsterDev, run_id: str, step: str = "third") -> object:
    """The step's output as the run's IO manager stored it (Dagster's fs IO manager under DAGSTER_HOME)."""
    return pickle.loads((dev.home / "storage" / run_id / step / "result").read_bytes())


def failure_message(instance: dg.DagsterInstance, run_id: str) -> str:
    """The run's one RUN_FAILURE message. Waited for: offload's instance marks a run failed a moment
    before it stores the event (offload/reexecution.py), so a run seen failed may not show it yet."""
    events = wait_for(
        lambda: instance.all_logs(run_id, of_type=DagsterEventType.RUN_FAILURE), 10, "the failure event"
    )
    assert len(events) == 1, [event.message for event in events]
    return events[0].message


@pytest.fixture(scope="module")
def uninterrupted(dev, instance, tmp_path_factory):
    """The reference: the same job run without any interruption."""
    scratch = tmp_path_factory.mktemp("uninterrupted")
    run_id = submit(dev, scratch, "three_steps", {})
    run = wait_for(lambda: finished(instance, run_id), 60, "the uninterrupted run")
    assert run.status == dg.DagsterRunStatus.SUCCESS
    assert step_log(scratch) == STEPS
    return output(dev, run_id)


def start_blocked_run(dev, instance, scratch: Path, step: str) -> tuple[str, RunWorker]:
    """Submit ``three_steps`` with ``step`` waiting on the gate; return the run id and its worker."""
    run_id = submit(dev, scratch, "three_steps", {step: {"config": {"block": True}}})
    wait_for(lambda: step_log(scratch)[-1:] == [step], 60, f"step {step} to start")
    worker = run_worker(instance, run_id)
    assert worker is not None and worker.is_alive()
    return run_id, worker


def check_resumed(dev, instance, scratch: Path, run_id: str, step: str, uninterrupted: object) -> None:
    """A retry re-executes from failure: earlier steps once, ``step`` again, the same final output."""
    (scratch / "gate").touch()
    retry_id = wait_for(
        lambda: run_of(instance, run_id).tags.get("dagster/auto_retry_run_id"), 30, "the retry"
    )
    retry = wait_for(lambda: finished(instance, retry_id), 60, "the retry to finish")
    assert retry.status == dg.DagsterRunStatus.SUCCESS
    assert retry.parent_run_id == run_id
    position = STEPS.index(step)
    assert step_log(scratch) == [*STEPS[: position + 1], *STEPS[position:]]
    assert output(dev, retry_id) == uninterrupted


@pytest.mark.parametrize("step", ["second", "third"])
def test_killed_run_worker_is_retried_from_failure(dev, instance, uninterrupted, tmp_path, step):
    run_id, worker = start_blocked_run(dev, instance, tmp_path, step)
    os.kill(worker.pid, signal.SIGKILL)
    killed_at = time.time()
    failed = wait_for(lambda: finished(instance, run_id), DETECTION_TARGET, "the dead run to be failed")
    assert failed.status == dg.DagsterRunStatus.FAILURE
    record = instance.get_run_record_by_id(run_id)
    assert record is not None and record.end_time is not None
    assert record.end_time - killed_at < DETECTION_TARGET
    check_resumed(dev, instance, tmp_path, run_id, step, uninterrupted)


def test_killed_mapped_step_resumes_with_every_mapped_step(dev, instance, tmp_path):
    """Dagster's own from-failure selection drops mapped steps that had not started (dagster issue
    #30248): the retry would sum one value of three. offload's instance completes the selection."""
    run_id = submit(dev, tmp_path, "mapped_steps", {"work": {"config": {"block_key": "a"}}})
    wait_for(lambda: step_log(tmp_path)[-1:] == ["work[a]"], 60, "work[a] to start")
    worker = run_worker(instance, run_id)
    assert worker is not None
    os.kill(worker.pid, signal.SIGKILL)
    wait_for(lambda: finished(instance, run_id), DETECTION_TARGET, "the dead run to be failed")
    (tmp_path / "gate").touch()
    retry_id = wait_for(lambda: run_of(instance, run_id).tags.get("dagster/auto_retry_run_id"), 30, "retry")
    retry = wait_for(lambda: finished(instance, retry_id), 60, "the retry to finish")
    assert retry.status == dg.DagsterRunStatus.SUCCESS
    assert step_log(tmp_path) == ["fan_out", "work[a]", "work[a]", "work[b]", "work[c]", "total"]
    assert output(dev, retry_id, "total") == 2 + 20 + 200


def test_run_survives_kill_of_everything_and_restart(dev, instance, uninterrupted, tmp_path):
    run_id, worker = start_blocked_run(dev, instance, tmp_path, "second")
    dev.kill_everything()
    wait_for(lambda: not worker.is_alive(), 10, "the worker to die with the tree")
    assert run_of(instance, run_id).status == dg.DagsterRunStatus.STARTED  # nobody left to notice
    restarted_at = dev.start()
    failed = wait_for(lambda: finished(instance, run_id), DETECTION_TARGET, "the dead run to be failed")
    assert failed.status == dg.DagsterRunStatus.FAILURE
    record = instance.get_run_record_by_id(run_id)
    assert record is not None and record.end_time is not None
    assert record.end_time - restarted_at < DETECTION_TARGET
    assert f"run worker (pid {worker.pid}) is gone" in failure_message(instance, run_id)
    check_resumed(dev, instance, tmp_path, run_id, "second", uninterrupted)


def test_worker_killed_while_starting_is_failed_within_a_poll_and_retried(
    dev, instance, uninterrupted, tmp_path
):
    """Dagster's monitor only times a STARTING run (180 s); offload's launcher knows the worker's pid from
    the fork and the monitor asks it (offload/monitoring.py)."""
    run_id = submit(dev, tmp_path, "held_start", {}, execution={"scratch": str(tmp_path)})
    wait_for(lambda: step_log(tmp_path) == ["held start"], 60, "the worker to hold while starting")
    worker = run_worker(instance, run_id)
    assert worker is not None and worker.is_alive()
    assert run_of(instance, run_id).status == dg.DagsterRunStatus.STARTING
    os.kill(worker.pid, signal.SIGKILL)
    killed_at = time.time()
    failed = wait_for(
        lambda: finished(instance, run_id), DETECTION_TARGET, "the dead starting run to be failed"
    )
    assert failed.status == dg.DagsterRunStatus.FAILURE
    record = instance.get_run_record_by_id(run_id)
    assert record is not None and record.end_time is not None
    assert record.end_time - killed_at < DETECTION_TARGET
    message = failure_message(instance, run_id)
    assert f"run worker (pid {worker.pid}) is gone" in message and "while the run was starting" in message
    (tmp_path / "start-gate").touch()
    retry_id = wait_for(
        lambda: run_of(instance, run_id).tags.get("dagster/auto_retry_run_id"), 30, "the retry"
    )
    retry = wait_for(lambda: finished(instance, retry_id), 60, "the retry to finish")
    assert retry.status == dg.DagsterRunStatus.SUCCESS
    assert step_log(tmp_path) == ["held start", "held start", *STEPS]  # the retry ran every step, once
    assert output(dev, retry_id) == uninterrupted


@pytest.mark.parametrize("stubborn", [False, True], ids=["step-stops", "step-ignores-interrupt"])
def test_max_runtime_ends_the_run_and_its_worker(dev, instance, tmp_path, stubborn):
    run_id = submit(dev, tmp_path, "overtime", {"sleep_forever": {"config": {"stubborn": stubborn}}})
    run = wait_for(lambda: finished(instance, run_id), 60, "the run to end")
    assert run.status == dg.DagsterRunStatus.FAILURE
    assert failure_message(instance, run_id) == "exceeded max runtime of 2 s"
    record = instance.get_run_record_by_id(run_id)
    assert record is not None and record.start_time is not None and record.end_time is not None
    assert 2 <= record.end_time - record.start_time < 2 + 10  # the limit, plus at most a few monitor polls
    worker = run_worker(instance, run_id)
    assert worker is not None
    wait_for(lambda: not worker.is_alive(), 10, "the worker to be gone")  # stubborn: killed after 2 s grace
    will_retry = wait_for(
        lambda: run_of(instance, run_id).tags.get("dagster/will_retry"), 10, "the retry verdict"
    )
    assert will_retry == "false"  # a timed-out run is final
    if stubborn:
        assert "ignored interrupt" in step_log(tmp_path)
