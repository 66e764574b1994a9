"""offload/runtime/run_status.py on SQLite and on Postgres: a run that reached a final status takes no other.

The monitor and the run worker are two instances on one storage (two processes' connections). The race
seen in production is replayed with Dagster's own max-runtime check (``check_run_timeout``) and offload's
launcher, deterministically: the run record the monitor acts on is read while the run is STARTED, and the
worker's RUN_SUCCESS lands either before the monitor starts acting (the run record is stale) or while the
launcher is held between its read of the run and its failure write. Either way the run stays SUCCESS, no
RUN_FAILURE or RUN_CANCELING event is stored (run-failure sensors and the retry daemon read those), no
retry is planned, and the worker is not interrupted. The other order (the stop first) leaves the run
FAILURE and refuses the late success. Concurrent final writes: exactly one stands.
"""

import logging
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._core.events import DagsterEvent, DagsterEventType, EngineEventData
from dagster._daemon.monitoring.run_monitoring import check_run_timeout

from benchmarks.support import dagster_deployment
from benchmarks.support.postgres import temporary_database
from benchmarks.support.waiting import wait_for
from offload.runtime import instance as offload_instance
from offload.runtime import max_runtime
from offload.runtime.launcher import FORKSERVER, START_METHOD_TAG, WORKER_HOST_TAG

LOG = logging.getLogger("test_run_status")
SLEEPER = "import time\nwhile True: time.sleep(0.1)"
FINAL_EVENTS = {DagsterEventType.RUN_SUCCESS, DagsterEventType.RUN_FAILURE, DagsterEventType.RUN_CANCELED}


@pytest.fixture(params=["sqlite", "postgres"])
def home(request, tmp_path) -> Iterator[Path]:
    """A DAGSTER_HOME with offload's instance settings on SQLite or on a database of its own in Postgres."""
    if request.param == "sqlite":
        offload_instance.ensure_config(tmp_path)
        yield tmp_path
        return
    with temporary_database() as url:
        config = offload_instance.instance_config(dagster_deployment.postgres_storage(url))
        (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(config))
        yield tmp_path


@pytest.fixture
def monitor(home) -> Iterator[dg.DagsterInstance]:
    with dg.DagsterInstance.from_config(str(home)) as opened:
        yield opened


@pytest.fixture
def worker(home, monitor) -> Iterator[dg.DagsterInstance]:
    with dg.DagsterInstance.from_config(str(home)) as opened:
        yield opened


@pytest.fixture
def worker_process() -> Iterator[subprocess.Popen]:
    process = subprocess.Popen([sys.executable, "-c", SLEEPER])
    yield process
    process.kill()
    process.wait(timeout=10)


def report(instance: dg.DagsterInstance, run_id: str, event_type: DagsterEventType) -> None:
    """What the run worker stores: RUN_START, RUN_SUCCESS ..."""
    instance.report_dagster_event(
        DagsterEvent(event_type_value=event_type.value, job_name="job"), run_id=run_id
    )


def overtime_run(monitor: dg.DagsterInstance, worker: dg.DagsterInstance, pid: int) -> dg.DagsterRun:
    """A run started by a forked worker (``pid``) on this machine, over its max runtime of 1 s."""
    tags = {WORKER_HOST_TAG: socket.gethostname(), START_METHOD_TAG: FORKSERVER, **max_runtime.max_runtime(1)}
    run = monitor.add_run(dg.DagsterRun(job_name="job", tags=tags))
    worker.report_engine_event("Run worker forked", run, EngineEventData.in_process(pid))
    report(worker, run.run_id, DagsterEventType.RUN_START)

    def over() -> bool:
        record = monitor.get_run_record_by_id(run.run_id)
        return record is not None and max_runtime.is_over(record.start_time, 1)

    wait_for(over, 30, "the run to be over its max runtime")
    return run


def status_events(instance: dg.DagsterInstance, run_id: str) -> list[DagsterEventType]:
    entries = instance.all_logs(run_id)
    return [e.dagster_event.event_type for e in entries if e.dagster_event and e.dagster_event.is_job_event]


def ignored(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    entries = instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT)
    return [e.message for e in entries if e.message.startswith("Ignored ")]


def stale_record(monitor: dg.DagsterInstance, run_id: str):
    """The monitor's view: the run record as its poll read it, STARTED."""
    record = monitor.get_run_record_by_id(run_id)
    assert record is not None and record.dagster_run.status == dg.DagsterRunStatus.STARTED
    return record


def assert_stays_succeeded(
    monitor: dg.DagsterInstance, run_id: str, worker_process: subprocess.Popen, refused: str
) -> None:
    """SUCCESS, no failure stored, the ``refused`` write recorded as ignored, the worker untouched."""
    run = monitor.get_run_by_id(run_id)
    assert run is not None and run.status == dg.DagsterRunStatus.SUCCESS
    events = status_events(monitor, run_id)
    assert DagsterEventType.RUN_FAILURE not in events
    assert events[-1] == DagsterEventType.RUN_SUCCESS
    assert any(message.startswith(f"Ignored {refused}") for message in ignored(monitor, run_id))
    assert "dagster/will_retry" not in run.tags  # the retry daemon plans nothing
    assert worker_process.poll() is None  # a finished run's worker is left to exit by itself


def test_max_runtime_check_on_a_stale_record_leaves_the_finished_run_succeeded(
    monitor, worker, worker_process
):
    """The order seen in production: the success lands after the monitor read the run, before it acts."""
    run = overtime_run(monitor, worker, worker_process.pid)
    record = stale_record(monitor, run.run_id)
    report(worker, run.run_id, DagsterEventType.RUN_SUCCESS)
    check_run_timeout(monitor, record, LOG, 0.0)
    assert DagsterEventType.RUN_CANCELING not in status_events(monitor, run.run_id)
    assert_stays_succeeded(monitor, run.run_id, worker_process, "PIPELINE_CANCELING (Canceling due to exceed")


def test_success_landing_while_the_stop_is_held_at_the_boundary_stands(
    monitor, worker, worker_process, monkeypatch
):
    """The launcher read the run as in progress and over its limit; the worker stores RUN_SUCCESS before
    the launcher writes the failure."""
    run = overtime_run(monitor, worker, worker_process.pid)
    record = stale_record(monitor, run.run_id)
    read, go = threading.Event(), threading.Event()
    measured = max_runtime.is_over

    def held(*args, **kwargs):  # the launcher's terminate calls it right after reading the run
        over = measured(*args, **kwargs)
        read.set()
        assert go.wait(60)
        return over

    monkeypatch.setattr(max_runtime, "is_over", held)
    errors: list[BaseException] = []

    def stop() -> None:
        try:
            check_run_timeout(monitor, record, LOG, 0.0)
        except BaseException as error:
            errors.append(error)

    stopper = threading.Thread(target=stop)
    stopper.start()
    try:
        assert read.wait(60), "the launcher never read the run"
        report(worker, run.run_id, DagsterEventType.RUN_SUCCESS)
    finally:
        go.set()
        stopper.join(60)
    assert not stopper.is_alive() and not errors, errors
    assert_stays_succeeded(
        monitor, run.run_id, worker_process, "PIPELINE_FAILURE (exceeded max runtime of 1 s)"
    )


def test_a_stop_that_came_first_stands_and_the_late_success_is_refused(monitor, worker, worker_process):
    run = overtime_run(monitor, worker, worker_process.pid)
    check_run_timeout(monitor, stale_record(monitor, run.run_id), LOG, 0.0)
    worker_process.wait(timeout=30)  # interrupted by the stop
    report(worker, run.run_id, DagsterEventType.RUN_SUCCESS)  # a worker that had got past its last step
    failed = monitor.get_run_by_id(run.run_id)
    assert failed is not None and failed.status == dg.DagsterRunStatus.FAILURE
    assert DagsterEventType.RUN_SUCCESS not in status_events(monitor, run.run_id)
    assert any("already finished as FAILURE" in message for message in ignored(monitor, run.run_id))


def test_concurrent_final_writes_leave_exactly_one(home, monitor):
    run = monitor.add_run(dg.DagsterRun(job_name="job", status=dg.DagsterRunStatus.STARTED))
    kinds = [DagsterEventType.RUN_SUCCESS, DagsterEventType.RUN_FAILURE, DagsterEventType.RUN_CANCELED] * 2
    barrier = threading.Barrier(len(kinds))
    errors: list[BaseException] = []

    def write(kind: DagsterEventType) -> None:
        try:
            with dg.DagsterInstance.from_config(str(home)) as writer:
                writer.get_run_by_id(run.run_id)  # connected before the barrier
                barrier.wait(60)
                report(writer, run.run_id, kind)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=write, args=(kind,)) for kind in kinds]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    finals = [event for event in status_events(monitor, run.run_id) if event in FINAL_EVENTS]
    assert len(finals) == 1, finals
    current = monitor.get_run_by_id(run.run_id)
    assert current is not None
    assert (
        current.status.value
        == {
            DagsterEventType.RUN_SUCCESS: "SUCCESS",
            DagsterEventType.RUN_FAILURE: "FAILURE",
            DagsterEventType.RUN_CANCELED: "CANCELED",
        }[finals[0]]
    )
    assert len(ignored(monitor, run.run_id)) == len(kinds) - 1


def test_a_finished_status_is_never_seen_without_its_end_time(monitor, worker, monkeypatch):
    """The claim writes the status with its time: a reader between the claim and Dagster's own write of
    the run (here: the moment Dagster's write begins) sees SUCCESS with an end time."""
    run = monitor.add_run(dg.DagsterRun(job_name="job"))
    report(worker, run.run_id, DagsterEventType.RUN_START)
    seen = []
    storage = worker.run_storage
    dagsters_write = storage.handle_run_event

    def observed(run_id, event, update_timestamp=None):
        seen.append(monitor.get_run_record_by_id(run_id))
        return dagsters_write(run_id, event, update_timestamp)

    monkeypatch.setattr(storage, "handle_run_event", observed)
    report(worker, run.run_id, DagsterEventType.RUN_SUCCESS)
    assert seen, "Dagster's write of the run was not reached"
    for record in seen:
        if record.dagster_run.status == dg.DagsterRunStatus.SUCCESS:
            assert record.end_time is not None and record.start_time is not None


def test_dagsters_own_status_write_is_conditional_too(monitor, worker):
    """Dagster's handle_new_event writes the status again after storing the event: that write (a CANCELING
    read as in progress, landing after the worker's success) must not reopen the run either."""
    run = monitor.add_run(dg.DagsterRun(job_name="job"))
    report(worker, run.run_id, DagsterEventType.RUN_START)
    report(worker, run.run_id, DagsterEventType.RUN_SUCCESS)
    canceling = DagsterEvent(event_type_value=DagsterEventType.RUN_CANCELING.value, job_name="job")
    monitor.run_storage.handle_run_event(run.run_id, canceling)
    current = monitor.get_run_by_id(run.run_id)
    assert current is not None and current.status == dg.DagsterRunStatus.SUCCESS


def test_a_status_event_is_written_once_and_other_writes_still_check(monitor, worker):
    """The instance writes a status event's status before storing it; Dagster's repeat of that write is
    skipped (one UPDATE of the runs table per status event), while a write from anywhere else still goes
    through the final-status check."""
    import sqlalchemy as sa

    run = monitor.add_run(dg.DagsterRun(job_name="job"))
    updates: list[str] = []

    def count(connection, cursor, statement, parameters, context, executemany) -> None:
        if statement.lstrip().upper().startswith("UPDATE RUNS "):
            updates.append(statement)

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", count)
    try:
        report(worker, run.run_id, DagsterEventType.RUN_START)
        report(worker, run.run_id, DagsterEventType.RUN_SUCCESS)
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", count)
    assert len(updates) == 2, updates
    started_and_succeeded = [DagsterEventType.RUN_START, DagsterEventType.RUN_SUCCESS]
    assert status_events(monitor, run.run_id)[-2:] == started_and_succeeded
    failure = DagsterEvent(event_type_value=DagsterEventType.RUN_FAILURE.value, job_name="job")
    monitor.run_storage.handle_run_event(run.run_id, failure)  # not the instance's write: checked
    current = monitor.get_run_by_id(run.run_id)
    assert current is not None and current.status == dg.DagsterRunStatus.SUCCESS
