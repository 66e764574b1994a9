"""Distributed steps: ``OFFLOAD_EXECUTOR=celery`` sends each step of a run to Celery workers over a broker.

The settings the executor and the workers share (``offload.runtime.executors.celery_settings``) as pure
functions;
then the real thing: a Celery worker process (``offload/runtime/celery_worker.py``) on the local Redis, on a
queue
of this test run's own, and ``offload job execute`` of ``video_pipeline`` on a 1 s clip with a persistent
instance (SQLite in a temporary DAGSTER_HOME) the worker shares. The run succeeds, and the event log shows
that the steps ran in the worker's pool processes (their pids are its children, not the CLI's or this
test's), under the worker's name. The worker is stopped by its own pid and must exit, pool and all.
"""

import os
import signal
import socket
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import celery
import dagster as dg
import psutil
import pytest
import redis

from benchmarks.support import services
from benchmarks.support.waiting import wait_for
from offload import paths
from offload.errors import ConfigurationError
from offload.runtime.executors import (
    BACKEND_VAR,
    BROKER_VAR,
    LOCAL_BROKER,
    QUEUE_VAR,
    VISIBILITY_VAR,
    celery_settings,
)
from pipelines.video.samples import make_clip
from tests.test_cli import cli_env

REDIS_URL = "redis://127.0.0.1:6379/0"
DEATH_REDIS_URL = "redis://127.0.0.1:6379/11"  # the worker-death test's own database
STEPS_IN_PARALLEL = ("thumbnail", "transcode[mp4]", "transcode[webm]")


# -- settings -------------------------------------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch):
    for name in (BROKER_VAR, BACKEND_VAR, QUEUE_VAR, "OFFLOAD_ENV"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_the_embedded_default_uses_the_local_redis_for_both(clean_env):
    settings = celery_settings()
    assert (settings.broker, settings.backend, settings.queue) == (LOCAL_BROKER, LOCAL_BROKER, "dagster")
    assert settings.executor_config()["broker"] == LOCAL_BROKER


def test_urls_from_variables_reach_dagster_as_variables_not_values(clean_env):
    clean_env.setenv(BROKER_VAR, "redis://:s3cret@redis.internal:6379/2")
    config = celery_settings().executor_config()
    assert config["broker"] == {"env": BROKER_VAR}
    assert config["backend"] == {"env": BROKER_VAR}  # a Redis broker keeps the results too
    assert "s3cret" not in repr(config)


@pytest.mark.parametrize(
    ("broker", "backend", "expected"),
    [
        ("amqp://guest@rabbit:5672//", None, "rpc://"),  # results answered over RabbitMQ itself
        ("amqp://guest@rabbit:5672//", "redis://cache:6379/1", "redis://cache:6379/1"),
        ("rediss://cache:6380/0", None, "rediss://cache:6380/0"),
    ],
)
def test_the_backend_follows_the_broker_unless_set(clean_env, broker, backend, expected):
    clean_env.setenv(BROKER_VAR, broker)
    if backend:
        clean_env.setenv(BACKEND_VAR, backend)
    assert celery_settings().backend == expected


def test_production_names_its_broker(clean_env):
    clean_env.setenv("OFFLOAD_ENV", "production")
    with pytest.raises(ConfigurationError, match=f"^{BROKER_VAR} is not set"):
        celery_settings()


@pytest.mark.parametrize("queue", ["a b", "q/1", "x" * 101])
def test_a_bad_queue_name_is_one_line_naming_the_variable(clean_env, queue):
    clean_env.setenv(QUEUE_VAR, queue)
    with pytest.raises(ConfigurationError, match=f"^{QUEUE_VAR} = .*: must be 1-100 characters"):
        celery_settings()


# -- a real worker --------------------------------------------------------------------------------------


def worker_answers(name: str, broker: str = REDIS_URL) -> bool:
    app = celery.Celery(broker=broker)
    try:
        return bool(app.control.ping(destination=[name], timeout=1.0))
    finally:
        app.close()


def test_video_steps_run_in_a_celery_worker(tmp_path):
    queue = f"offload-test-{uuid.uuid4().hex[:12]}"  # this run's own: other runs on the broker never see it
    name = f"{queue}@{socket.gethostname()}"
    env = cli_env(tmp_path, OFFLOAD_EXECUTOR="celery", **{BROKER_VAR: REDIS_URL, QUEUE_VAR: queue})
    data = Path(env["OFFLOAD_DATA_DIR"])
    clip = make_clip(data / "samples" / "clip.mp4", seconds=1, width=160, height=120)
    payload = tmp_path / "payload.yaml"
    payload.write_text(
        f"video_id: celery1\nvideo_url: {clip.as_uri()}\nuser_id: u1\nuser_email: ada@example.com\n"
        "formats: [mp4, webm]\n"
    )
    worker = services.celery_worker(env, name, tmp_path / "worker.log").start()
    try:
        wait_for(lambda: worker.process.poll() is None and worker_answers(name), 120,
                          f"the celery worker {name} to answer (log: {worker.log})")  # fmt: skip
        pool = {child.pid for child in psutil.Process(worker.pid).children()}
        run = subprocess.run(
            [str(Path(sys.executable).with_name("offload")), "job", "execute", "-f", "definitions.py",
             "-j", "video_pipeline", "-c", str(payload)],
            cwd=paths.PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=400,
        )  # fmt: skip
        assert run.returncode == 0, f"{run.stderr[-3000:]}\nworker:\n{worker.tail()}"

        # Stopped by its own pid: Celery's warm shutdown ends the pool, and nothing of the group lives on.
        assert worker.terminate(timeout=60) == 0, worker.tail()
        wait_for(lambda: not worker.group_alive(), 30, "the worker's pool to exit")
    finally:
        worker.stop()
        redis.Redis.from_url(REDIS_URL).delete(queue, f"_kombu.binding.{queue}")

    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        [record] = instance.get_run_records()
        assert record.dagster_run.status == dg.DagsterRunStatus.SUCCESS
        events = [e.dagster_event for e in instance.all_logs(record.dagster_run.run_id) if e.dagster_event]

    orchestrator = {e.pid for e in events if e.event_type == dg.DagsterEventType.RUN_START}
    started = {e.step_key: e.pid for e in events if e.event_type == dg.DagsterEventType.STEP_START}
    assert set(started) >= {"download", "probe", *STEPS_IN_PARALLEL, "upload", "notify"}
    for step, pid in started.items():
        assert pid in pool, f"{step} ran in pid {pid}, not in the worker's pool {pool}"
        assert pid not in orchestrator and pid != os.getpid()
    # dagster-celery's own record of each step: the worker that took it, by name.
    taken_by = {
        e.step_key: e.event_specific_data.metadata["Celery worker"].value
        for e in events
        if e.event_type == dg.DagsterEventType.ENGINE_EVENT and "in celery worker" in (e.message or "")
    }
    assert {step: taken_by.get(step) for step in STEPS_IN_PARALLEL} == dict.fromkeys(STEPS_IN_PARALLEL, name)
    for fmt in ("mp4", "webm"):
        assert (data / "storage" / "videos" / "u1" / f"celery1.{fmt}").stat().st_size > 0


def started_pids(root: Path) -> list[int]:
    return sorted(int(path.name.removeprefix("started-")) for path in root.glob("started-*"))


@pytest.mark.parametrize("killed", ["pool process", "whole worker"])
def test_a_step_whose_worker_is_killed_runs_again_and_its_effect_happens_once(tmp_path, killed):
    """Killed (SIGKILL, by pid) after the step's effect (an email with an idempotency key) and before the
    step returns: either the pool process running the step (the worker's main process requeues the step at
    once), or the whole worker, main process and pool (a machine lost: a second worker gets the step after
    the visibility timeout, 10 s here). The step runs again to the end, the run succeeds, one email."""
    queue = f"offload-death-{uuid.uuid4().hex[:12]}"
    names = [f"{queue}-{n}@{socket.gethostname()}" for n in (1, 2)]
    broker = DEATH_REDIS_URL
    env = cli_env(
        tmp_path, OFFLOAD_EXECUTOR="celery", **{BROKER_VAR: broker, QUEUE_VAR: queue, VISIBILITY_VAR: "10"}
    )
    root = tmp_path / "scratch"
    root.mkdir()
    config = tmp_path / "run.yaml"
    config.write_text(
        f"ops:\n  effect: {{config: {{root: '{root}'}}}}\n  after: {{config: {{root: '{root}'}}}}\n"
    )
    workers = [services.celery_worker(env, names[0], tmp_path / "worker-1.log", concurrency=1).start()]
    run = services.Service(
        "offload job execute",
        [str(Path(sys.executable).with_name("offload")), "job", "execute",
         "-f", "tests/celery_death_location.py", "-j", "worker_death", "-c", str(config)],
        env, tmp_path / "run.log",
    )  # fmt: skip
    try:
        worker = workers[0]
        wait_for(lambda: worker.process.poll() is None and worker_answers(names[0], broker), 120,
                          f"the celery worker {names[0]} to answer (log: {worker.log})")  # fmt: skip
        run.start()
        wait_for(lambda: started_pids(root), 240, f"the step to start ({run.tail()})")
        [first] = started_pids(root)
        assert first in {child.pid for child in psutil.Process(worker.pid).children()}
        wait_for(lambda: len(list((root / "outbox").glob("*.eml"))) == 1, 60, "the effect")
        # The step is waiting for the gate: killed mid-step.
        if killed == "pool process":
            os.kill(first, signal.SIGKILL)
        else:
            os.killpg(worker.pid, signal.SIGKILL)  # the worker leads its own process group: pool included
            wait_for(lambda: not worker.group_alive(), 30, "the killed worker's processes to end")
            workers.append(
                services.celery_worker(env, names[1], tmp_path / "worker-2.log", concurrency=1).start()
            )
            worker = workers[1]
        wait_for(lambda: len(started_pids(root)) == 2, 180, f"the step again ({worker.tail()})")
        assert first in started_pids(root)  # and another process took the step
        (root / "gate").touch()
        assert run.process is not None and run.process.wait(timeout=300) == 0, run.tail(60)
    finally:
        run.stop()
        for started in workers:
            started.stop()
        redis.Redis.from_url(broker).delete(queue, f"_kombu.binding.{queue}")

    assert (root / "after").read_text() == "effect done"
    assert len(list((root / "outbox").glob("*.eml"))) == 1  # the second run of the step sent nothing new
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        [record] = instance.get_run_records()
        assert record.dagster_run.status == dg.DagsterRunStatus.SUCCESS
        events = [e.dagster_event for e in instance.all_logs(record.dagster_run.run_id) if e.dagster_event]
    successes = [e.step_key for e in events if e.event_type == dg.DagsterEventType.STEP_SUCCESS]
    assert sorted(successes) == ["after", "effect"]


def test_acks_late_and_the_visibility_timeout_reach_the_workers(clean_env):
    clean_env.setenv(VISIBILITY_VAR, "900")
    source = celery_settings().executor_config()["config_source"]
    assert source["task_acks_late"] is True and source["task_reject_on_worker_lost"] is True
    assert source["broker_transport_options"]["visibility_timeout"] == 900
    clean_env.setenv(VISIBILITY_VAR, "soon")
    with pytest.raises(ConfigurationError, match=f"^{VISIBILITY_VAR} = 'soon': must be a whole number"):
        celery_settings()


def test_a_second_delivery_waits_for_the_first_and_returns_its_result(tmp_path, monkeypatch):
    """Two deliveries of one task id (the broker gave the step again while its first delivery still ran):
    the second waits for the first, then returns the first's stored result without running the body; a
    third, after both, does the same."""
    from offload.runtime import celery_worker

    monkeypatch.setenv("OFFLOAD_IDEMPOTENCY_DB", f"sqlite:///{tmp_path / 'leases.sqlite3'}")
    monkeypatch.setattr(celery_worker, "_store", None)
    app = celery.Celery("lease-test", broker="memory://", backend=DEATH_REDIS_URL)
    app.conf.task_store_eager_result = True
    runs: list[str] = []
    gate = threading.Event()

    @app.task(base=celery_worker.StepTask, name="lease-test.step")
    def step() -> str:
        runs.append("ran")
        assert gate.wait(60)
        return f"result {len(runs)}"

    task_id = f"lease-test-{uuid.uuid4().hex}"
    results: dict[str, object] = {}

    def deliver(which: str) -> None:
        results[which] = step.apply(task_id=task_id).get(timeout=120)

    first = threading.Thread(target=deliver, args=("first",))
    second = threading.Thread(target=deliver, args=("second",))
    try:
        first.start()
        wait_for(lambda: runs == ["ran"], 30, "the first delivery to start the body")
        second.start()
        second.join(timeout=3)  # the second is still waiting: it did not run the body meanwhile
        assert second.is_alive() and runs == ["ran"]
        gate.set()
        first.join(timeout=60)
        second.join(timeout=60)
        deliver("third")
    finally:
        gate.set()
        redis.Redis.from_url(DEATH_REDIS_URL).delete(f"celery-task-meta-{task_id}")
    assert results == {"first": "result 1", "second": "result 1", "third": "result 1"} and runs == ["ran"]
