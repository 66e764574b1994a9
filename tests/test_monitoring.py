"""offload/runtime/monitoring.py: the daemon's run monitor fails a STARTING run whose worker offload's
launcher
finds gone (at the next poll, not after Dagster's 180 s start timeout), and leaves a STARTING run alone
while its worker lives or before its pid is recorded. Dagster's own monitor still ignores such a worker
(the check that this module is still needed)."""

import logging
import socket
import subprocess
import sys
from collections.abc import Iterator

import dagster as dg
import pytest
from dagster._core.events import DagsterEvent, DagsterEventType, EngineEventData
from dagster._daemon.monitoring import run_monitoring

from offload.runtime import instance as offload_instance
from offload.runtime import monitoring
from offload.runtime.launcher import FORKSERVER, START_METHOD_TAG, WORKER_HOST_TAG

LOG = logging.getLogger("test_monitoring")


@pytest.fixture
def instance(tmp_path) -> Iterator[dg.DagsterInstance]:
    offload_instance.ensure_config(tmp_path)
    with dg.DagsterInstance.from_config(str(tmp_path)) as opened:
        yield opened


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen]:
    process = subprocess.Popen([sys.executable, "-c", "import time\nwhile True: time.sleep(0.1)"])
    yield process
    process.kill()
    process.wait(timeout=10)


def starting_run(instance: dg.DagsterInstance, pid: int | None) -> dg.DagsterRun:
    """A run launched on this machine and STARTING, its forked worker's pid recorded (unless None)."""
    tags = {WORKER_HOST_TAG: socket.gethostname(), START_METHOD_TAG: FORKSERVER}
    run = instance.add_run(dg.DagsterRun(job_name="job", tags=tags))
    starting = DagsterEvent(event_type_value=DagsterEventType.RUN_STARTING.value, job_name="job")
    instance.report_dagster_event(starting, run_id=run.run_id)
    if pid is not None:
        instance.report_engine_event("Run worker forked", run, EngineEventData.in_process(pid))
    return run


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait(timeout=30)
    return process.pid


def poll(instance: dg.DagsterInstance, run: dg.DagsterRun, monitor=None) -> dg.DagsterRun:
    """One look of the run monitor at ``run`` (the function its iteration calls for STARTING runs)."""
    record = instance.get_run_record_by_id(run.run_id)
    assert record is not None
    (monitor or run_monitoring.monitor_starting_run)(instance, record, LOG)
    current = instance.get_run_by_id(run.run_id)
    assert current is not None
    return current


def test_the_instance_installs_the_check_in_the_monitor(instance):
    assert run_monitoring.monitor_starting_run is monitoring.monitor_starting_run


def test_dagsters_monitor_still_ignores_a_dead_worker_of_a_starting_run(instance):
    run = starting_run(instance, dead_pid())
    assert (
        poll(instance, run, monitoring.dagsters_monitor_starting_run).status == dg.DagsterRunStatus.STARTING
    )


def test_a_starting_run_whose_worker_is_gone_is_failed_and_will_retry(instance):
    pid = dead_pid()
    run = starting_run(instance, pid)
    failed = poll(instance, run)
    assert failed.status == dg.DagsterRunStatus.FAILURE
    [failure] = instance.all_logs(run.run_id, of_type=DagsterEventType.RUN_FAILURE)
    assert f"run worker (pid {pid}) is gone" in failure.message
    assert "while the run was starting" in failure.message
    assert failed.tags.get("dagster/will_retry") == "true"  # resumed as any other crash


def test_a_starting_run_with_a_live_worker_or_no_pid_yet_is_left_to_dagster(instance, sleeper):
    assert poll(instance, starting_run(instance, sleeper.pid)).status == dg.DagsterRunStatus.STARTING
    assert poll(instance, starting_run(instance, None)).status == dg.DagsterRunStatus.STARTING


def test_a_run_launched_elsewhere_is_not_judged(instance):
    run = starting_run(instance, dead_pid())
    instance.add_run_tags(run.run_id, {WORKER_HOST_TAG: "another-machine"})
    assert poll(instance, run).status == dg.DagsterRunStatus.STARTING
