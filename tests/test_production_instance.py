"""The production instance file, deploy/dagster.yaml: generated from the same source as the embedded one
(and committed current), loaded by Dagster itself against a database of the local PostgreSQL with every
setting offload relies on, a missing variable named in the error, and a whole deployment on it (webserver,
daemon, code server: ``dagster dev`` with that file) whose runs, event logs, schedule ticks and sensor
cursors are rows in Postgres."""

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster._core.scheduler.instigation import InstigatorState
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

from benchmarks.support import dagster_deployment
from benchmarks.support.postgres import rows, temporary_database
from benchmarks.support.waiting import wait_for
from offload import paths
from offload.client import Client, Status
from offload.runtime import concurrency, instance
from offload.runtime.compute_logs import OffloadComputeLogManager
from offload.runtime.launcher import OffloadRunLauncher
from offload.runtime.reexecution import OffloadInstance

PG_VARIABLES = (
    "DAGSTER_PG_HOST",
    "DAGSTER_PG_PORT",
    "DAGSTER_PG_USER",
    "DAGSTER_PG_PASSWORD",
    "DAGSTER_PG_DB",
)


def test_committed_file_is_what_the_generator_writes(capsys):
    """Regenerate with `python -m offload.runtime.instance --production > deploy/dagster.yaml`."""
    instance.main(["--production"])
    assert capsys.readouterr().out == instance.PRODUCTION_FILE.read_text()


def test_production_file_is_the_common_settings_with_postgres_from_the_environment():
    config = yaml.safe_load(instance.PRODUCTION_FILE.read_text())
    for key, value in instance.common_settings().items():
        assert config[key] == instance.merge(value, instance.PRODUCTION_ONLY.get(key, {}))
    assert config["run_coordinator"] == concurrency.run_coordinator_config()
    database = config["storage"]["postgres"]["postgres_db"]
    assert {value["env"] for value in database.values() if isinstance(value, dict)} == set(PG_VARIABLES)
    assert database["scheme"] == "postgresql+psycopg2"  # shared/REFERENCE.md: not psycopg v3
    assert config["compute_logs"]["config"]["base_dir"] == {"env": "DAGSTER_COMPUTE_LOG_DIR"}
    assert database["password"] == {"env": "DAGSTER_PG_PASSWORD"}  # the file never holds a secret


@pytest.fixture
def production_env(tmp_path, monkeypatch) -> Iterator[tuple[Path, str]]:
    with temporary_database() as url:
        for name, value in dagster_deployment.production_env(url, tmp_path).items():
            monkeypatch.setenv(name, value)
        yield dagster_deployment.production_home(tmp_path), url


def test_dagster_loads_it_with_postgres_storage_and_offloads_settings(production_env):
    home, url = production_env
    with dg.DagsterInstance.from_config(str(home)) as loaded:
        assert isinstance(loaded, OffloadInstance)
        assert isinstance(loaded.run_storage, PostgresRunStorage)
        assert isinstance(loaded.event_log_storage, PostgresEventLogStorage)
        assert isinstance(loaded.schedule_storage, PostgresScheduleStorage)
        assert isinstance(loaded.run_launcher, OffloadRunLauncher)
        coordinator = loaded.run_coordinator
        assert isinstance(coordinator, QueuedRunCoordinator)
        assert coordinator.dequeue_interval_seconds == 1
        assert len(coordinator.get_run_queue_config().tag_concurrency_limits) == len(
            concurrency.tag_concurrency_limits()
        )
        assert loaded.run_monitoring_enabled and loaded.run_retries_max_retries == 2
        assert isinstance(loaded.compute_log_manager, OffloadComputeLogManager)
        assert loaded.compute_log_manager._base_dir == str(home.parent / "compute_logs")  # no public accessor

        result = dg.execute_job(dg.reconstructable(_one_op_job), instance=loaded)
        assert result.success
    [(status,)] = rows(url, "SELECT status FROM runs WHERE run_id = %(run)s", run=result.run_id)
    assert status == "SUCCESS"
    assert rows(url, "SELECT count(*) FROM event_logs WHERE run_id = %(run)s", run=result.run_id)[0][0] > 3


def test_a_missing_variable_is_named(production_env, monkeypatch):
    home, _url = production_env
    monkeypatch.delenv("DAGSTER_PG_HOST")
    with pytest.raises(Exception, match="DAGSTER_PG_HOST"):
        dg.DagsterInstance.from_config(str(home))


@dg.op
def _say() -> str:
    return "stored in postgres"


@dg.job
def _one_op_job() -> None:
    _say()


# -- a deployment on the production file ------------------------------------------------------------------

# Paths in a workspace file are relative to the file: this one lives in the test's directory.
SCHEDULE_WORKSPACE = """load_from:
  - python_file: {{relative_path: {root}/definitions.py, working_directory: {root}, location_name: offload}}
  - python_file:
      relative_path: {root}/tests/support/daemon_defs.py
      working_directory: {root}
      location_name: every_minute
"""
DEADLINE = 150.0  # the daemon fires an every-minute schedule at the first minute it has seen: <= ~2 min
RUN_TIMEOUT = 300.0  # welcome_user and its two child runs, each a run worker started on a loaded machine


def in_postgres(condition: Callable[[], Any], what: str, log: Path) -> Any:
    """Poll Postgres for ``condition`` up to ``DEADLINE``; a failure shows the deployment's log."""
    return wait_for(condition, DEADLINE, f"{what} in Postgres", 1.0, lambda: log.read_text()[-3000:])


def sensor_cursor(url: str, name: str) -> str | None:
    """The cursor the daemon stored for sensor ``name``: its instigator row, read as Dagster wrote it."""
    for (body,) in rows(url, "SELECT instigator_body FROM instigators WHERE instigator_type = 'SENSOR'"):
        state = dg.deserialize_value(body, InstigatorState)
        if state.instigator_name == name and state.sensor_instigator_data is not None:
            return state.sensor_instigator_data.cursor
    return None


def test_a_deployment_on_it_keeps_runs_events_ticks_and_cursors_in_postgres(tmp_path):
    """webserver + daemon + code servers on deploy/dagster.yaml: welcome_user (the job that needs the
    webserver for its child runs), the schedule of tests/support/daemon_defs.py (every minute) and
    offload's sensors (on by default) all write to the Postgres database."""
    (tmp_path / "workspace.yaml").write_text(SCHEDULE_WORKSPACE.format(root=paths.PROJECT_ROOT))
    with temporary_database() as url:
        services = dagster_deployment.start(
            tmp_path,
            instance=instance.PRODUCTION_FILE.read_text(),
            env=dagster_deployment.production_env(url, tmp_path),
            workspace=tmp_path / "workspace.yaml",
        )
        try:
            client = Client(services.url, idempotency_db=f"sqlite:///{tmp_path / 'keys.sqlite3'}")
            try:
                handle = client.trigger("welcome_user", {"user_id": "pg_user", "email": "pg@example.com",
                                                         "name": "Ada"})  # fmt: skip
                run = client.wait(handle.id, timeout=RUN_TIMEOUT)
            finally:
                client.close()
            assert run.status == Status.COMPLETED, services.log.read_text()[-3000:]

            jobs = dict(rows(url, "SELECT run_id, pipeline_name FROM runs"))
            assert jobs[handle.id] == "welcome_user"
            assert {"hello_world", "typed_task"} <= set(jobs.values())  # its child runs
            [(events,)] = rows(url, "SELECT count(*) FROM event_logs WHERE run_id = %(run)s", run=handle.id)
            assert events > 5

            ticks = "SELECT count(*) FROM job_ticks WHERE type = %(kind)s AND status = 'SUCCESS'"
            in_postgres(lambda: rows(url, ticks, kind="SCHEDULE")[0][0], "schedule tick",
                     services.log)  # fmt: skip
            scheduled = rows(
                url,
                "SELECT pipeline_name FROM runs WHERE run_id IN (SELECT run_id FROM run_tags"
                " WHERE key = 'dagster/schedule_name')",
            )
            assert ("cleanup",) in scheduled  # the tick's run, in the same database
            sensor_ticks = "SELECT count(*) FROM job_ticks WHERE type = 'SENSOR'"
            in_postgres(lambda: rows(url, sensor_ticks)[0][0], "sensor tick", services.log)
            cursor = in_postgres(
                lambda: sensor_cursor(url, "ops_failure_alert"), "sensor cursor", services.log
            )
            assert "record_id" in cursor  # a run status sensor's cursor: where it is in the event log
        finally:
            services.stop()
