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
the two that never started: offload/runtime/reexecution.py).
* A run over its ``dagster/max_runtime`` ends as failed with "exceeded max runtime of 2 s", is not
  retried, and its worker is gone, also when the step swallows the interrupt.
* ``kill -9`` of the run worker in the middle of ``transcode[mp4|webm|gif]`` (an encode slowed to outlast
  the resume): no ffmpeg of the run is left 1 s after the kill, the retry's output decodes (and for mp4
  and gif is byte for byte an uninterrupted run's).
"""

import contextlib
import os
import pickle
import signal
import time
from pathlib import Path

import dagster as dg
import psutil
import pytest
from dagster._core.events import DagsterEventType

from benchmarks.support.dagster_deployment import (
    DagsterDeployment,
    crash_deployment,
    finished,
    step_log,
    submit,
)
from benchmarks.support.waiting import wait_for
from offload.runtime.launcher import RunWorker, run_worker
from pipelines.video import media
from pipelines.video.samples import make_clip

DETECTION_TARGET = 30  # seconds, the target
STEPS = ["first", "second", "third"]


@pytest.fixture(scope="module")
def dev(tmp_path_factory):
    root = tmp_path_factory.mktemp("crash")
    services = crash_deployment(root)
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


def output(dev: DagsterDeployment, run_id: str, step: str = "third") -> object:
    """The step's output as the run's IO manager stored it (Dagster's fs IO manager under DAGSTER_HOME)."""
    return pickle.loads((dev.home / "storage" / run_id / step / "result").read_bytes())


def failure_message(instance: dg.DagsterInstance, run_id: str) -> str:
    """The run's one RUN_FAILURE message. Waited for: offload's instance marks a run failed a moment
    before it stores the event (offload/runtime/reexecution.py), so a run seen failed may not show it yet."""
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
    the fork and the monitor asks it (offload/runtime/monitoring.py)."""
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


def child_pid(scratch: Path) -> int | None:
    found = [int(line.split()[1]) for line in step_log(scratch) if line.startswith("child ")]
    return found[0] if found else None


def gone(pid: int, started_before: float) -> bool:
    """The process is gone: no such pid, a zombie, or the pid now belongs to a later process."""
    try:
        process = psutil.Process(pid)
        return process.status() == psutil.STATUS_ZOMBIE or process.create_time() > started_before + 1
    except psutil.NoSuchProcess:
        return True


def test_cancel_ends_a_step_that_ignores_the_interrupt_and_its_child(dev, instance, tmp_path):
    """A cancel (GraphQL terminateRun, as the UI's Terminate and Client.cancel) of a step that swallows the
    interrupt and has started a child process: after the grace the run is CANCELED and neither the worker
    nor its child is left."""
    config = {"sleep_forever": {"config": {"stubborn": True, "child": True}}}
    run_id = submit(dev, tmp_path, "unbounded", config)
    pid = wait_for(lambda: child_pid(tmp_path), 60, "the step's child process")
    now = time.time()
    try:
        wait_for(lambda: "sleep_forever" in step_log(tmp_path), 30, "the step to sleep")
        worker = wait_for(lambda: run_worker(instance, run_id), 30, "the worker's pid")
        assert worker.is_alive() and not gone(pid, now)
        dev.client().terminate_run(run_id)
        run = wait_for(lambda: finished(instance, run_id), 60, "the run to end")
        assert run.status == dg.DagsterRunStatus.CANCELED
        assert "ignored interrupt" in step_log(tmp_path)
        wait_for(lambda: not worker.is_alive(), 30, "the worker to be gone")
        wait_for(lambda: gone(pid, now), 30, "the step's child to be gone")
    finally:
        if not gone(pid, now):
            os.kill(pid, signal.SIGKILL)


CLIP_SECONDS = 8  # the slowed encode takes as long: longer than detecting the crash and starting the retry


@pytest.fixture(scope="module")
def clip(dev) -> Path:
    return make_clip(dev.data_dir / "clips" / "clip.mp4", seconds=CLIP_SECONDS, width=320, height=240)


def submit_video(dev: DagsterDeployment, clip: Path, video_id: str, formats: list[str]) -> str:
    payload = {"video_id": video_id, "video_url": clip.as_uri(), "user_id": "u1",
               "user_email": "ada@example.com", "formats": formats}  # fmt: skip
    return dev.client().submit_job_execution(
        "slow_video", repository_location_name="crash_tests", run_config=payload
    )


def stored_video(dev: DagsterDeployment, video_id: str, fmt: str) -> Path:
    return dev.data_dir / "storage" / "videos" / "u1" / f"{video_id}.{fmt}"


def ffmpegs_of(dev: DagsterDeployment, run_id: str) -> list[psutil.Process]:
    """The live ffmpeg processes working in the run's work directory."""
    work = str(dev.data_dir / "work" / run_id)
    found = []
    for process in psutil.process_iter(["name", "cmdline", "status"]):
        cmdline = process.info["cmdline"] or []
        if process.info["status"] == psutil.STATUS_ZOMBIE or not cmdline or "ffmpeg" not in cmdline[0]:
            continue
        if any(work in arg for arg in cmdline):
            found.append(process)
    return found


def encoding(dev: DagsterDeployment, run_id: str, fmt: str) -> psutil.Process | None:
    """The run's ffmpeg encoding ``fmt``, once it has been at it for 2 s (of the slowed encode's 8). Not
    judged by its output file: the GIF encoder writes nothing until it has seen every frame."""
    for process in ffmpegs_of(dev, run_id):
        with contextlib.suppress(psutil.NoSuchProcess, OSError):
            if process.cmdline()[-1].endswith(f".{fmt}") and time.time() - process.create_time() >= 2:
                return process
    return None


@pytest.fixture(scope="module")
def reference_videos(dev, instance, clip) -> str:
    """The uninterrupted run of every format (slowed as the crashed ones are): its video id."""
    run_id = submit_video(dev, clip, "reference", ["mp4", "webm", "gif"])
    run = wait_for(lambda: finished(instance, run_id), 240, "the uninterrupted video run")
    assert run.status == dg.DagsterRunStatus.SUCCESS
    return "reference"


@pytest.mark.parametrize("fmt", ["mp4", "webm", "gif"])
def test_worker_killed_mid_transcode_leaves_no_ffmpeg_and_resumes_with_a_whole_file(
    dev, instance, clip, reference_videos, fmt
):
    run_id = submit_video(dev, clip, f"crash-{fmt}", [fmt])
    wait_for(lambda: encoding(dev, run_id, fmt), 120, f"transcode[{fmt}] to be encoding")
    worker = run_worker(instance, run_id)
    assert worker is not None and worker.is_alive()
    os.kill(worker.pid, signal.SIGKILL)
    # The kernel ends ffmpeg with its worker (PR_SET_PDEATHSIG): nothing keeps writing the run's files.
    wait_for(lambda: not ffmpegs_of(dev, run_id), 1, "every ffmpeg of the killed run to be gone")
    failed = wait_for(lambda: finished(instance, run_id), DETECTION_TARGET, "the dead run to be failed")
    assert failed.status == dg.DagsterRunStatus.FAILURE
    retry_id = wait_for(lambda: run_of(instance, run_id).tags.get("dagster/auto_retry_run_id"), 30, "retry")
    retry = wait_for(lambda: finished(instance, retry_id), 120, "the retry to finish")
    assert retry.status == dg.DagsterRunStatus.SUCCESS
    output = stored_video(dev, f"crash-{fmt}", fmt)
    media.verify(output, fmt, media.probe(clip))  # decodes end to end, every stream, the full length
    if fmt in ("mp4", "gif"):  # libvpx's realtime mode is not bit-exact from run to run
        assert output.read_bytes() == stored_video(dev, reference_videos, fmt).read_bytes()
