"""offload's run coordinator: a run that would not wait in the queue starts at once; any other is queued,
and no limit is exceeded even when many runs are submitted at the same moment.

A real SQLite instance with offload's coordinator; the run launcher records what it is asked to start
(and marks the run started, as a worker would) so that the test sees every decision.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator, Mapping
from typing import Any, Self

import dagster as dg
import pytest
from dagster._core.events import DagsterEvent, DagsterEventType
from dagster._core.launcher import LaunchRunContext, RunLauncher
from dagster._core.remote_origin import RegisteredCodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin
from dagster._core.run_coordinator import SubmitRunContext
from dagster._serdes import ConfigurableClass, ConfigurableClassData

from offload.errors import PayloadError
from offload.runtime import concurrency
from offload.runtime.concurrency import Queue
from offload.runtime.coordinator import OffloadRunCoordinator

STARTED = {dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED}


class RecordingLauncher(RunLauncher, ConfigurableClass):
    """Starts nothing: records the run and writes RUN_START as its worker would. ``ready`` and ``fail``
    are set by tests."""

    launched: list[str] = []
    ready = True
    fail = False

    def __init__(self, inst_data: ConfigurableClassData | None = None):
        self._inst_data = inst_data
        super().__init__()

    @property
    def inst_data(self) -> ConfigurableClassData | None:
        return self._inst_data

    @classmethod
    def config_type(cls) -> dict[str, Any]:
        return {}

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]) -> Self:
        return cls(inst_data=inst_data)

    def ready_to_launch(self, run: dg.DagsterRun, workspace: Any) -> bool:
        return RecordingLauncher.ready

    def launch_run(self, context: LaunchRunContext) -> None:
        if RecordingLauncher.fail:
            raise ConnectionError("code server unreachable")
        run = context.dagster_run
        RecordingLauncher.launched.append(run.run_id)
        start = DagsterEvent(event_type_value=DagsterEventType.RUN_START.value, job_name=run.job_name)
        self._instance.report_dagster_event(start, run_id=run.run_id)

    def terminate(self, run_id: str) -> bool:
        return False


@dg.op
def noop() -> None:
    pass


@dg.job(tags=Queue("solo", limit=1).job_tags())
def solo() -> None:
    noop()


@dg.job(tags=Queue("pair", limit=2).job_tags())
def pair() -> None:
    noop()


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    RecordingLauncher.launched = []
    RecordingLauncher.ready = True
    RecordingLauncher.fail = False
    overrides = {
        "run_coordinator": concurrency.run_coordinator_config(),
        "run_launcher": {"module": __name__, "class": "RecordingLauncher"},
    }
    with dg.DagsterInstance.local_temp(overrides=overrides) as instance:
        assert isinstance(instance.run_coordinator, OffloadRunCoordinator)
        yield instance


def origin(job: dg.JobDefinition) -> RemoteJobOrigin:
    """Where the run came from: Dagster queues only runs that say which code location they belong to."""
    location = RegisteredCodeLocationOrigin("tests")
    return RemoteJobOrigin(RemoteRepositoryOrigin(location, "__repository__"), job.name)


def submit(instance: dg.DagsterInstance, job: dg.JobDefinition = pair) -> dg.DagsterRun:
    run = instance.create_run_for_job(
        job_def=job,
        tags=dict(job.run_tags),  # as the UI and the client give them
        remote_job_origin=origin(job),
    )
    return instance.run_coordinator.submit_run(SubmitRunContext(run, workspace=None))  # type: ignore[arg-type]


def events(instance: dg.DagsterInstance, run: dg.DagsterRun) -> list[str]:
    return [
        entry.dagster_event.event_type_value
        for entry in instance.all_logs(run.run_id)
        if entry.dagster_event is not None
    ]


def test_a_run_with_room_and_nothing_queued_starts_at_once_without_the_queue(instance):
    run = submit(instance)
    assert RecordingLauncher.launched == [run.run_id]
    assert run.status in STARTED
    assert "PIPELINE_ENQUEUED" not in events(instance, run)
    assert events(instance, run)[0] == "PIPELINE_STARTING"


def test_a_run_over_its_limit_is_queued_and_not_launched(instance):
    first = submit(instance, solo)
    second = submit(instance, solo)
    assert RecordingLauncher.launched == [first.run_id]
    assert second.status == dg.DagsterRunStatus.QUEUED
    assert "PIPELINE_STARTING" not in events(instance, second)


def test_a_run_never_overtakes_a_queued_one(instance):
    submit(instance, solo)
    waiting = submit(instance, solo)  # queued behind the first solo run
    other = submit(instance, pair)  # room under pair's own limit, but a run is waiting
    assert waiting.status == other.status == dg.DagsterRunStatus.QUEUED
    assert len(RecordingLauncher.launched) == 1


def test_a_launcher_that_is_not_ready_gets_the_run_queued(instance):
    RecordingLauncher.ready = False
    run = submit(instance)
    assert run.status == dg.DagsterRunStatus.QUEUED
    assert RecordingLauncher.launched == []


def test_a_failed_launch_puts_the_run_in_the_queue_with_the_reason(instance):
    RecordingLauncher.fail = True
    run = submit(instance)
    assert run.status == dg.DagsterRunStatus.QUEUED
    messages = [entry.message for entry in instance.all_logs(run.run_id)]
    assert any("Starting at once failed (ConnectionError): queued instead." in m for m in messages)


def test_start_at_once_off_is_dagsters_queue(instance):
    coordinator = instance.run_coordinator
    coordinator.start_at_once = False
    run = submit(instance)
    assert run.status == dg.DagsterRunStatus.QUEUED
    assert RecordingLauncher.launched == []


def test_the_setting_is_read_from_the_instance_config():
    config = concurrency.run_coordinator_config()
    config["config"]["start_at_once"] = False
    with dg.DagsterInstance.local_temp(overrides={"run_coordinator": config}) as instance:
        coordinator = instance.run_coordinator
        assert isinstance(coordinator, OffloadRunCoordinator) and coordinator.start_at_once is False
        assert coordinator.get_run_queue_config().max_concurrent_runs == -1


@pytest.mark.parametrize(("job", "limit"), [(solo, 1), (pair, 2)])
def test_runs_submitted_at_the_same_moment_never_exceed_the_limit(instance, job, limit):
    """Twelve threads submit at once: each run either started (within the limit) or is queued."""
    barrier = threading.Barrier(12)
    runs: list[dg.DagsterRun] = []

    def one() -> None:
        barrier.wait()
        runs.append(submit(instance, job))

    threads = [threading.Thread(target=one) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    statuses = [instance.get_run_by_id(run.run_id).status for run in runs]
    assert len(statuses) == 12
    assert len(RecordingLauncher.launched) <= limit  # all may lose the race: then the queue starts them
    assert len(set(RecordingLauncher.launched)) == len(RecordingLauncher.launched)
    assert sum(status in STARTED for status in statuses) == len(RecordingLauncher.launched)
    assert statuses.count(dg.DagsterRunStatus.QUEUED) == 12 - len(RecordingLauncher.launched)


# --- secrets: refused where runs are created, whoever creates them ------------------------------------------

LEAKED = "sk-coordinator-test-5e2b7d1a"


@dg.job(config=dg.ConfigMapping(config_fn=lambda payload: {}, config_schema=dg.Permissive()))
def permissive() -> None:
    noop()


def submit_through_dagster(instance: dg.DagsterInstance, run_config: dict, tags: dict) -> dg.DagsterRun:
    """As the webserver's launchRun and the daemon's sensors do: create the run, then instance.submit_run
    (which reports a failure of the coordinator on the run before re-raising)."""
    run = instance.create_run_for_job(
        job_def=permissive,
        run_config=run_config,
        tags=tags,
        remote_job_origin=origin(permissive),
        job_code_origin=dg.reconstructable(permissive).get_python_origin(),
    )
    return instance.submit_run(run.run_id, workspace=None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("run_config", "tags", "line"),
    [
        ({"api_key": "abc"}, {}, "api_key: looks like a secret"),
        ({"note": f"key {LEAKED}"}, {}, "note: holds a secret of this app's environment"),
        ({"note": base64.b64encode(LEAKED.encode()).decode()}, {}, "note: holds a secret"),
        ({"db": "postgresql://app:hunter22@db/app"}, {}, "db: holds a secret"),
        ({"home": {"env": "HOME"}}, {}, "home: {env: ...} is not allowed"),
        ({}, {"team": LEAKED.upper()}, "tags: 'team' holds a secret"),
    ],
)
def test_a_run_carrying_a_secret_is_refused_and_leaves_no_run(instance, monkeypatch, run_config, tags, line):
    """The client's secret check also holds for a run created any other way (GraphQL, the Launchpad)."""
    monkeypatch.setenv("OPENAI_API_KEY", LEAKED)
    with pytest.raises(PayloadError) as caught:
        submit_through_dagster(instance, run_config, tags)

    assert str(caught.value).startswith(line) and "\n" not in str(caught.value)
    assert LEAKED not in str(caught.value)
    assert instance.get_runs() == []  # no failed run showing the config either
    assert RecordingLauncher.launched == []


def test_a_run_without_secrets_is_submitted(instance, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", LEAKED)
    run = submit_through_dagster(
        instance,
        {
            "video_url": "https://cdn.test/v.mp4?X-Amz-Signature=abc",
            "resources": {"ai": {"key": {"env": "X"}}},
        },
        {"team": "video"},
    )
    assert RecordingLauncher.launched == [run.run_id]
