"""``sensors/failure_alerts.py``: the ops alert for runs that failed for good, evaluated through Dagster's own
run-failure sensor machinery (cursor, event log) on a real instance after real failing runs of
``resilient_task`` (a 404 from a loopback server): the message reaches a fake Slack Web API through
slack-sdk with the job name, the error and the run link; the offline default writes it to the outbox;
ops are emailed when ``OFFLOAD_ALERT_EMAIL`` is set; a run that Dagster's run retries will launch again
stays silent; an undeliverable alert is reported on the tick without the token."""

from __future__ import annotations

import email
import email.policy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from dagster._core.definitions.reconstruct import ReconstructableRepository
from dagster._core.definitions.run_status_sensor_definition import RunStatusSensorCursor
from dagster._core.execution.api import execute_run
from dagster._core.remote_origin import RegisteredCodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin

from benchmarks.support.http_server import LocalHTTPServer
from offload import paths
from offload.client.runs import Status, error_of, status_of
from offload.net.http import HttpClient
from pipelines.content import generate_content
from pipelines.web import resilient_task
from resources import resources_for
from resources.ai import OpenAIResource
from resources.database import AppDatabase
from resources.email import OutboxEmail
from resources.slack import SlackAPI
from sensors.failure_alerts import ops_failure_alert, run_url
from tests.support.slack_server import FakeSlack, fake_slack_server
from tests.test_cli import run_job

TOKEN = "xoxb-alerts-0123456789-secret"


@pytest.fixture
def server() -> Iterator[LocalHTTPServer]:
    with LocalHTTPServer({}) as running:  # every path answers 404
        yield running


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with fake_slack_server() as fake:
        yield fake


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    (tmp_path / "home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "home")) as test_instance:
        yield test_instance


class Sensor:
    """Ticks ``ops_failure_alert`` as the daemon would, keeping the cursor between ticks. ``location``: the
    code location the sensor runs in, as under the daemon (without it, Dagster's test context matches
    runs of any origin)."""

    def __init__(self, instance: dg.DagsterInstance, resources: dict[str, Any], location: str | None = None):
        self.instance, self.resources, self.location = instance, resources, location
        self.cursor: str | None = None

    def tick(self) -> Any:
        if self.location is None:
            context = dg.build_sensor_context(
                instance=self.instance, cursor=self.cursor, resources=self.resources
            )
        else:
            context = dg.SensorEvaluationContext(
                instance_ref=None,
                instance=self.instance,
                cursor=self.cursor,
                resources=self.resources,
                repository_name="__repository__",
                code_location_origin=RegisteredCodeLocationOrigin(self.location),
            )
        data = ops_failure_alert.evaluate_tick(context)
        self.cursor = data.cursor
        return data


def tags_of(instance: dg.DagsterInstance, run_id: str) -> dict[str, str]:
    run = instance.get_run_by_id(run_id)
    assert run is not None
    return dict(run.tags)


def fail_resilient_task(
    instance: dg.DagsterInstance, server: LocalHTTPServer, tags: dict[str, str] | None = None
) -> str:
    """A real failed run: ``resilient_task`` calling a URL that answers 404 (aborted, not retried)."""
    result = resilient_task.execute_in_process(
        run_config={"url": server.url("/orders/7")},
        resources={"http": HttpClient(allow_hosts=[server.origin])},
        instance=instance,
        tags=tags,
        raise_on_error=False,
    )
    assert not result.success
    return result.run_id


def test_failure_alert_reaches_slack_with_job_error_and_link(
    instance: dg.DagsterInstance, server: LocalHTTPServer, slack: FakeSlack, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("OFFLOAD_UI_URL", "https://ops.example.test/dagster/")
    monkeypatch.delenv("OFFLOAD_ALERT_EMAIL", raising=False)
    sensor = Sensor(instance, {
        "slack": SlackAPI(token=TOKEN, base_url=slack.url, default_channel="#ops"),
        "email": OutboxEmail(directory=str(tmp_path / "outbox")),
    })  # fmt: skip
    sensor.tick()  # the first tick only sets the cursor: runs from before the sensor are not alerted
    run_id = fail_resilient_task(instance, server)
    data = sensor.tick()
    assert [reaction.error for reaction in data.dagster_run_reactions] == [None]
    [request] = slack.requests
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    message = request.body
    link = f"https://ops.example.test/dagster/runs/{run_id}"
    assert message["channel"] == "#ops"
    assert message["text"] == (
        f"Run of resilient_task failed: call_endpoint: url: HTTP 404 from {server.url('/orders/7')}\n{link}"
    )
    blocks_text = json.dumps(message["blocks"])
    assert "*resilient_task* failed" in blocks_text
    assert f"<{link}|Open run {run_id}>" in blocks_text
    assert not (tmp_path / "outbox").exists()  # no OFFLOAD_ALERT_EMAIL: no email
    sensor.tick()
    assert len(slack.requests) == 1  # a run is alerted once


def test_offline_default_writes_the_alert_to_the_outbox_and_emails_ops(
    instance: dg.DagsterInstance, server: LocalHTTPServer, data_dir: Path, monkeypatch
) -> None:
    monkeypatch.delenv("OFFLOAD_UI_URL", raising=False)
    monkeypatch.setenv("OFFLOAD_ALERT_EMAIL", "ops@example.com")
    local = resources_for(paths.LOCAL)
    sensor = Sensor(instance, {"slack": local["slack"], "email": local["email"]})
    sensor.tick()
    run_id = fail_resilient_task(instance, server)
    sensor.tick()
    [posted] = (data_dir / "outbox" / "slack").glob("*.json")
    message = json.loads(posted.read_text())
    assert message["channel"] == "#offload-alerts"
    assert message["text"].startswith("Run of resilient_task failed: call_endpoint: url: HTTP 404 from ")
    assert message["text"].endswith(f"\nhttp://127.0.0.1:3000/runs/{run_id}")
    [sent] = (data_dir / "outbox").glob("*.eml")
    mail = email.message_from_bytes(sent.read_bytes(), policy=email.policy.default)
    assert mail["To"] == "ops@example.com"
    assert mail["Subject"] == "[offload] resilient_task failed"
    html = mail.get_body(("html",))
    assert html is not None
    assert f"http://127.0.0.1:3000/runs/{run_id}" in html.get_content()


def fail_resilient_task_launched(
    instance: dg.DagsterInstance, server: LocalHTTPServer, monkeypatch, tags: dict[str, str] | None = None
) -> str:
    """The same failure in a run launched from the code location (as the webserver or a schedule launches
    it: the run records its origin), the only kind Dagster's run retries can launch again."""
    monkeypatch.setenv("OFFLOAD_FETCH_ALLOW_HOSTS", server.origin)
    job = ReconstructableRepository.for_file(
        str(paths.PROJECT_ROOT / "definitions.py"), "defs"
    ).get_reconstructable_job("resilient_task")
    origin = RemoteJobOrigin(
        RemoteRepositoryOrigin(RegisteredCodeLocationOrigin("offload"), "__repository__"), "resilient_task"
    )
    run = instance.create_run_for_job(
        job_def=job.get_definition(),
        run_config={"url": server.url("/orders/7")},
        tags=tags,
        remote_job_origin=origin,
        job_code_origin=job.get_python_origin(),
    )
    assert not execute_run(job, run, instance).success
    return run.run_id


def test_no_alert_while_run_retries_will_launch_the_run_again(
    tmp_path: Path, server: LocalHTTPServer, slack: FakeSlack, monkeypatch
) -> None:
    overrides = {"run_retries": {"enabled": True, "max_retries": 1}}
    (tmp_path / "home").mkdir()
    with dg.instance_for_test(overrides=overrides, temp_dir=str(tmp_path / "home")) as instance:
        sensor = Sensor(instance, {
            "slack": SlackAPI(token=TOKEN, base_url=slack.url),
            "email": OutboxEmail(directory=str(tmp_path / "outbox")),
        })  # fmt: skip
        sensor.tick()
        retried = fail_resilient_task_launched(instance, server, monkeypatch)
        # Dagster itself marks the run as it records the failure: a run retry will follow.
        assert tags_of(instance, retried)["dagster/will_retry"] == "true"
        sensor.tick()
        assert slack.requests == []
        # The last run of a chain (no retries left) alerts.
        last = fail_resilient_task_launched(instance, server, monkeypatch, tags={"dagster/max_retries": "0"})
        assert tags_of(instance, last)["dagster/will_retry"] == "false"
        sensor.tick()
        assert [m["text"].rsplit("/", 1)[1] for m in slack.messages] == [last]


def failed_without_retry_decision(instance: dg.DagsterInstance, server: LocalHTTPServer, monkeypatch) -> str:
    """A launched run whose FAILURE is written but not yet Dagster's ``will_retry`` decision: the instance
    drops that tag while it records the failure, as if read in the moment between the two writes."""
    job = ReconstructableRepository.for_file(
        str(paths.PROJECT_ROOT / "definitions.py"), "defs"
    ).get_reconstructable_job("resilient_task")
    origin = RemoteJobOrigin(
        RemoteRepositoryOrigin(RegisteredCodeLocationOrigin("offload"), "__repository__"), "resilient_task"
    )
    run = instance.create_run_for_job(
        job_def=job.get_definition(),
        run_config={"url": server.url("/orders/7")},
        remote_job_origin=origin,
        job_code_origin=job.get_python_origin(),
    )
    add_run_tags = instance.add_run_tags
    with monkeypatch.context() as patch:
        patch.setattr(instance, "add_run_tags", lambda run_id, tags: add_run_tags(
            run_id, {k: v for k, v in tags.items() if k != "dagster/will_retry"}))  # fmt: skip
        instance.report_run_failed(run)
    assert "dagster/will_retry" not in tags_of(instance, run.run_id)
    return run.run_id


def test_a_failure_whose_retry_is_undecided_waits_for_the_decision(
    tmp_path: Path, server: LocalHTTPServer, slack: FakeSlack, monkeypatch
) -> None:
    """A failed run read before Dagster tagged ``will_retry``: no alert while undecided; alerted once when
    the decision is no retry; never when it is a retry; alerted when no decision comes within the grace."""
    import threading

    from sensors import failure_alerts

    overrides = {"run_retries": {"enabled": True, "max_retries": 1}}
    (tmp_path / "home").mkdir()
    with dg.instance_for_test(overrides=overrides, temp_dir=str(tmp_path / "home")) as instance:
        sensor = Sensor(instance, {
            "slack": SlackAPI(token=TOKEN, base_url=slack.url),
            "email": OutboxEmail(directory=str(tmp_path / "outbox")),
        })  # fmt: skip
        sensor.tick()
        reads = threading.Semaphore(0)
        get_run_by_id = instance.get_run_by_id

        def counted(run_id: str) -> Any:
            reads.release()
            return get_run_by_id(run_id)

        monkeypatch.setattr(instance, "get_run_by_id", counted)

        def tick_while_undecided(decision: str) -> None:
            while reads.acquire(blocking=False):  # reads of an earlier tick
                pass
            ticking = threading.Thread(target=sensor.tick)
            ticking.start()
            for _ in range(3):  # the first read, then two more: the tick is waiting for the decision
                assert reads.acquire(timeout=60)
            assert ticking.is_alive() and slack.requests == []
            instance.add_run_tags(run_id, {"dagster/will_retry": decision})
            ticking.join(timeout=120)
            assert not ticking.is_alive()

        run_id = failed_without_retry_decision(instance, server, monkeypatch)
        tick_while_undecided("true")
        assert slack.requests == []  # the retry will run: the first attempt is never alerted

        run_id = failed_without_retry_decision(instance, server, monkeypatch)
        tick_while_undecided("false")
        assert [m["text"].rsplit("/", 1)[1] for m in slack.messages] == [run_id]
        sensor.tick()
        assert len(slack.messages) == 1  # alerted once

        # No decision ever (the process that was to write it died): alerted once the grace has passed.
        monkeypatch.setattr(failure_alerts, "RETRY_DECISION_GRACE", 0.0)
        orphan = failed_without_retry_decision(instance, server, monkeypatch)
        sensor.tick()
        assert [m["text"].rsplit("/", 1)[1] for m in slack.messages] == [run_id, orphan]


@pytest.mark.parametrize(
    ("setting", "reason"),
    [
        ("openai", "OPENAI_API_KEY is not set"),
        ("database", "DATABASE_URL: scheme 'mysql' is not supported"),
    ],
)
def test_a_missing_or_bad_setting_fails_the_run_once_with_its_reason(
    setting: str, reason: str, tmp_path: Path, data_dir: Path, slack: FakeSlack, monkeypatch
) -> None:
    """No OpenAI key, or a DATABASE_URL of an unsupported database: the run is FAILED (not CRASHED) with the
    one-line reason as its error, Dagster's run retries leave it alone, and ops get one alert that quotes
    the reason, not DagsterResourceFunctionError. The password in the bad URL is never shown."""
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    resources = {**resources_for(paths.LOCAL), "openai": OpenAIResource()}
    if setting == "database":
        resources |= {"openai": OpenAIResource(api_key="sk-test-unused-0000"),
                      "database": AppDatabase(url="mysql://app:hunter2-secret@127.0.0.1/app")}  # fmt: skip
    overrides = {"run_retries": {"enabled": True, "max_retries": 2}}
    (tmp_path / "home").mkdir()
    with dg.instance_for_test(overrides=overrides, temp_dir=str(tmp_path / "home")) as instance:
        sensor = Sensor(instance, {
            "slack": SlackAPI(token=TOKEN, base_url=slack.url),
            "email": OutboxEmail(directory=str(tmp_path / "outbox")),
        })  # fmt: skip
        sensor.tick()
        result = generate_content.execute_in_process(
            run_config={"topic": "background jobs"},
            resources=resources,
            instance=instance,
            raise_on_error=False,
        )
        assert not result.success
        tags = tags_of(instance, result.run_id)
        assert tags["dagster/will_retry"] == "false"  # a setting does not appear by running again
        record = {"status": "FAILURE", "startTime": 1.0, "endTime": 2.0,
                  "tags": [{"key": k, "value": v} for k, v in tags.items()]}  # fmt: skip
        assert status_of(record) is Status.FAILED
        assert (error_of([], tags) or "").startswith(reason)
        sensor.tick()
        sensor.tick()
        [message] = slack.messages
        assert message["text"].startswith(f"Run of generate_content failed: {reason}")
        assert "DagsterResourceFunctionError" not in message["text"]
        assert "hunter2" not in message["text"] and "hunter2" not in json.dumps(tags)


@dg.op(required_resource_keys={"storage", "email", "slack", "database"})
def uses_the_production_settings() -> None: ...


@dg.job
def needs_settings() -> None:
    uses_the_production_settings()


PRODUCTION_SETTINGS = [
    "DATABASE_URL",
    "OFFLOAD_S3_BUCKET",
    "RESEND_API_KEY",
    "OFFLOAD_EMAIL_FROM",
    "SLACK_BOT_TOKEN",
]


@pytest.mark.parametrize("variable", PRODUCTION_SETTINGS)
def test_an_unset_production_variable_fails_the_run_once_naming_it(
    variable: str, tmp_path: Path, slack: FakeSlack, monkeypatch
) -> None:
    """The production resource set with one required variable unset (where the run resolves its resources:
    the run worker builds them again): not Dagster's config error at run start, retried as a crash, but a
    FAILED run whose error is "NAME is not set", no retry, and one alert quoting it."""
    values = {"DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}", "OFFLOAD_S3_BUCKET": "uploads",
              "RESEND_API_KEY": "re_unused_0000", "OFFLOAD_EMAIL_FROM": "Acme <noreply@example.com>",
              "SLACK_BOT_TOKEN": "xoxb-unused-0000"}  # fmt: skip
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv(variable)
    resources = resources_for(paths.PRODUCTION)
    overrides = {"run_retries": {"enabled": True, "max_retries": 2}}
    (tmp_path / "home").mkdir()
    with dg.instance_for_test(overrides=overrides, temp_dir=str(tmp_path / "home")) as instance:
        sensor = Sensor(instance, {
            "slack": SlackAPI(token=TOKEN, base_url=slack.url),
            "email": OutboxEmail(directory=str(tmp_path / "outbox")),
        })  # fmt: skip
        sensor.tick()
        result = needs_settings.execute_in_process(
            resources=resources, instance=instance, raise_on_error=False
        )
        assert not result.success
        tags = tags_of(instance, result.run_id)
        assert tags["dagster/will_retry"] == "false"
        record = {"status": "FAILURE", "startTime": 1.0, "endTime": 2.0,
                  "tags": [{"key": k, "value": v} for k, v in tags.items()]}  # fmt: skip
        assert status_of(record) is Status.FAILED
        assert error_of([], tags) == f"{variable} is not set"
        sensor.tick()
        sensor.tick()
        [message] = slack.messages
        assert message["text"].startswith(f"Run of needs_settings failed: {variable} is not set\n")


def test_a_run_that_fails_before_its_steps_is_alerted_with_the_cause(
    instance: dg.DagsterInstance, slack: FakeSlack, tmp_path: Path
) -> None:
    """A resource that cannot set up for another reason than a setting (a read-only disk): the alert names
    that cause, not Dagster's "An exception was thrown during execution"."""

    @dg.resource
    def scratch(_context: dg.InitResourceContext) -> None:
        raise OSError(30, "Read-only file system")

    @dg.op(required_resource_keys={"scratch"})
    def upload() -> None: ...

    @dg.job(resource_defs={"scratch": scratch})
    def uploads() -> None:
        upload()

    sensor = Sensor(instance, {
        "slack": SlackAPI(token=TOKEN, base_url=slack.url),
        "email": OutboxEmail(directory=str(tmp_path / "outbox")),
    })  # fmt: skip
    sensor.tick()
    assert not uploads.execute_in_process(instance=instance, raise_on_error=False).success
    sensor.tick()
    [message] = slack.messages
    assert message["text"].startswith("Run of uploads failed: OSError: [Errno 30] Read-only file system\n")


def test_a_run_started_from_the_command_line_is_alerted_and_not_left_queued(
    tmp_path: Path, server: LocalHTTPServer, slack: FakeSlack
) -> None:
    """``offload job execute`` of a failing job, on an instance with Dagster's run retries on (their
    defaults: step failures too). Dagster tags the run ``will_retry`` but can never launch it again (it
    has no code location): the client must not show it QUEUED, and the alert, ticked as in the daemon's
    code location, must see it and send it."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(
        "telemetry:\n  enabled: false\nrun_retries:\n  enabled: true\n  max_retries: 2\n"
    )
    done = run_job(tmp_path, {"url": server.url("/orders/7")}, job="resilient_task")
    assert done.returncode != 0 and "RUN_FAILURE" in done.stderr, done.stderr[-3000:]

    with dg.DagsterInstance.from_config(str(home)) as instance:
        [record] = instance.get_run_records()
        run = record.dagster_run
        assert run.remote_job_origin is None and run.tags["dagster/will_retry"] == "true"
        webserver_record = {"status": "FAILURE", "startTime": 1.0, "endTime": 2.0, "repositoryOrigin": None,
                            "tags": [{"key": k, "value": v} for k, v in run.tags.items()]}  # fmt: skip
        assert status_of(webserver_record) is Status.FAILED
        sensor = Sensor(instance, {
            "slack": SlackAPI(token=TOKEN, base_url=slack.url),
            "email": OutboxEmail(directory=str(tmp_path / "outbox")),
        }, location="offload")  # fmt: skip
        sensor.cursor = RunStatusSensorCursor(record_id=0, record_timestamp=None).to_json()
        sensor.tick()
        assert [m["text"].rsplit("/", 1)[1] for m in slack.messages] == [run.run_id]
        assert slack.messages[0]["text"].startswith("Run of resilient_task failed: call_endpoint: ")


def test_an_undeliverable_alert_is_reported_on_the_tick_without_the_token(
    instance: dg.DagsterInstance, server: LocalHTTPServer, slack: FakeSlack, tmp_path: Path
) -> None:
    sensor = Sensor(instance, {
        "slack": SlackAPI(token=TOKEN, base_url=slack.url),
        "email": OutboxEmail(directory=str(tmp_path / "outbox")),
    })  # fmt: skip
    sensor.tick()
    fail_resilient_task(instance, server)
    slack.fail_next.append((200, {"ok": False, "error": "invalid_auth"}))
    [reaction] = sensor.tick().dagster_run_reactions
    assert reaction.error is not None
    text = json.dumps(
        reaction.error.to_string() if hasattr(reaction.error, "to_string") else str(reaction.error)
    )
    assert "slack: chat.postMessage failed with HTTP 200 (invalid_auth)" in text
    assert TOKEN not in text


def test_run_url_uses_the_configured_ui() -> None:
    assert run_url("abc", {}) == "http://127.0.0.1:3000/runs/abc"
    assert (
        run_url("abc", {"OFFLOAD_UI_URL": "https://dagster.acme.test/"})
        == "https://dagster.acme.test/runs/abc"
    )


def test_the_sensor_is_part_of_the_code_location() -> None:
    from definitions import defs

    assert defs.resolve_sensor_def("ops_failure_alert").default_status == dg.DefaultSensorStatus.RUNNING
