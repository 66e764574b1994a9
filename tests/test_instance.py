"""offload/runtime/instance.py and the ``offload`` CLI's instance handling: the embedded dagster.yaml comes
from
deploy/instance-common.yaml, loads into a real Dagster instance of offload's class with its launcher, run
monitoring and run retries, and is rewritten only when it is offload's (marker line, or what an older
offload wrote)."""

import dagster as dg
import pytest
import yaml

from offload.runtime import instance
from offload.runtime.launcher import OffloadRunLauncher
from offload.runtime.reexecution import OffloadInstance


def test_embedded_config_is_the_common_settings_plus_telemetry_off():
    config = instance.embedded_config()
    common = yaml.safe_load(instance.COMMON_SETTINGS.read_text())
    assert {key: config[key] for key in common} == common
    assert config["telemetry"] == {"enabled": False}
    assert config["run_launcher"]["class"] == "OffloadRunLauncher"
    assert config["run_monitoring"]["poll_interval_seconds"] <= 30  # the crash detection target


def test_production_config_adds_storage_to_the_same_settings():
    storage = {"postgres": {"postgres_url": "postgresql+psycopg2://u@db/offload"}}
    config = instance.instance_config(storage)
    assert config["storage"] == storage
    assert config["run_monitoring"] == instance.common_settings()["run_monitoring"]
    assert "telemetry" not in config


def test_merge_overrides_nested_keys_only():
    merged = instance.merge({"a": {"x": 1, "y": 2}, "b": 1}, {"a": {"y": 3}, "c": 4})
    assert merged == {"a": {"x": 1, "y": 3}, "b": 1, "c": 4}


def test_written_config_loads_with_offloads_launcher_and_daemons(tmp_path):
    assert instance.ensure_config(tmp_path) == instance.CREATED
    with dg.DagsterInstance.from_config(str(tmp_path)) as loaded:
        assert isinstance(loaded, OffloadInstance)
        assert isinstance(loaded.run_launcher, OffloadRunLauncher)
        assert loaded.run_launcher.supports_check_run_worker_health
        assert loaded.run_launcher.terminate_grace_seconds == 5
        assert loaded.run_monitoring_enabled
        assert loaded.run_monitoring_max_resume_run_attempts == 0
        assert loaded.run_retries_enabled and loaded.run_retries_max_retries == 2
        assert not loaded.run_retries_retry_on_asset_or_op_failure
        assert loaded.run_monitoring_max_runtime_seconds == 0  # no default limit


def test_managed_file_is_left_alone_when_current_and_rewritten_when_stale(tmp_path):
    config = tmp_path / "dagster.yaml"
    instance.ensure_config(tmp_path)
    assert instance.ensure_config(tmp_path) == instance.UNCHANGED
    config.write_text(config.read_text().replace("poll_interval_seconds: 10", "poll_interval_seconds: 99"))
    assert instance.ensure_config(tmp_path) == instance.UPDATED
    assert config.read_text() == instance.render(instance.embedded_config())


@pytest.mark.parametrize("legacy", instance.LEGACY_FILES)
def test_file_written_by_an_older_offload_is_upgraded(tmp_path, legacy):
    (tmp_path / "dagster.yaml").write_text(legacy)
    assert instance.ensure_config(tmp_path) == instance.UPDATED
    assert (
        yaml.safe_load((tmp_path / "dagster.yaml").read_text())["run_launcher"]["module"]
        == "offload.runtime.launcher"
    )


def test_users_own_file_is_never_touched(tmp_path):
    mine = "# my instance\ntelemetry:\n  enabled: true\n"
    (tmp_path / "dagster.yaml").write_text(mine)
    assert instance.ensure_config(tmp_path) == instance.NOT_MANAGED
    assert (tmp_path / "dagster.yaml").read_text() == mine
