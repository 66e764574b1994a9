"""The code location through the real CLI, as a user runs it: definitions load from workspace.yaml, the
``offload`` wrapper creates the embedded instance on first use, ``dagster job execute`` runs the main job
from a payload file, a bad payload prints one line per field (no traceback) and starts no run, and a job
whose AI settings are missing fails before its first step with the one line naming the variable."""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import yaml

from offload import paths

ROOT = paths.PROJECT_ROOT
BIN = Path(sys.executable).parent


def cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OFFLOAD_", "DAGSTER_", "OPENAI_")) and k != "DATABASE_URL"
    }
    return env | {"DAGSTER_HOME": str(tmp_path / "home"), "OFFLOAD_DATA_DIR": str(tmp_path / "data")} | extra


def test_definitions_are_loadable():
    from definitions import defs

    dg.Definitions.validate_loadable(defs)
    assert {job.name for job in defs.resolve_all_job_defs()} >= {
        "video_pipeline", "process_video", "generate_content", "content_workflow", "send_email",
        "data_pipeline", "cleanup", "invoicing", "daily_report_job"}  # fmt: skip
    assert {schedule.name for schedule in defs.schedules or []} == {
        "daily_report", "frequent_sync", "weekly_cleanup", "monthly_invoicing"}  # fmt: skip


# Each costs 0.25-2 s to import and only some jobs use it: loading the code location (every `dagster job
# execute`, every run worker) must not pay for them (issue 2's overhead budget against bare ffmpeg).
LAZY_IMPORTS = (
    *("openai", "matplotlib", "jinja2", "boto3", "numpy", "PIL"),
    *("resend", "slack_sdk", "stripe", "svix"),
)


def test_loading_the_code_location_leaves_heavy_sdks_unimported(tmp_path):
    probe = f"import sys, definitions; print(' '.join(m for m in {LAZY_IMPORTS!r} if m in sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, env=cli_env(tmp_path), capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == []


def test_cli_loads_workspace_yaml(tmp_path):
    (tmp_path / "home").mkdir()
    done = subprocess.run(
        [BIN / "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=ROOT, env=cli_env(tmp_path), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "offload" in done.stdout + done.stderr


def test_offload_wrapper_creates_the_embedded_instance(tmp_path):
    home = tmp_path / "fresh" / "home"
    done = subprocess.run(
        [BIN / "offload", "instance", "info"], cwd=ROOT, env=cli_env(tmp_path, DAGSTER_HOME=str(home)),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    settings = yaml.safe_load((home / "dagster.yaml").read_text())
    assert settings["telemetry"] == {"enabled": False}
    assert settings["run_launcher"]["class"] == "OffloadRunLauncher"
    assert "SqliteRunStorage" in done.stdout
    assert "OffloadRunLauncher" in done.stdout


def test_offload_wrapper_warns_when_the_users_instance_lacks_crash_detection(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    done = subprocess.run(
        [BIN / "offload", "instance", "info"], cwd=ROOT, env=cli_env(tmp_path),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "is not managed by offload and does not use its run launcher" in done.stderr
    assert (home / "dagster.yaml").read_text() == "telemetry:\n  enabled: false\n"


def run_job(
    tmp_path: Path, payload: dict, *extra_env: tuple[str, str], job: str = "video_pipeline"
) -> subprocess.CompletedProcess[str]:
    payload_file = tmp_path / "payload.yaml"
    payload_file.write_text(yaml.safe_dump(payload))
    command = [str(BIN / "offload"), "job", "execute", "-f", "definitions.py", "-j", job]
    return subprocess.run(
        [*command, "-c", str(payload_file)],
        cwd=ROOT, env=cli_env(tmp_path, **dict(extra_env)), capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def runs_in(tmp_path: Path) -> int:
    with dg.DagsterInstance.from_config(str(tmp_path / "home")) as instance:
        return len(instance.get_run_records())


def test_job_execute_runs_the_main_job_from_a_payload_file(tmp_path, clips):
    samples = tmp_path / "data" / "samples"  # the embedded default allows file:// under samples/
    samples.mkdir(parents=True)
    clip = samples / "clip.mp4"
    clip.write_bytes(clips["plain"].read_bytes())
    done = run_job(tmp_path, {"video_id": "cli", "video_url": clip.as_uri(), "user_id": "u",
                              "user_email": "u@example.com", "formats": ["mp4"]})  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "RUN_SUCCESS" in done.stderr
    assert (tmp_path / "data" / "storage" / "videos" / "u" / "cli.mp4").stat().st_size > 1000
    assert len(list((tmp_path / "data" / "outbox").glob("*.eml"))) == 1
    assert runs_in(tmp_path) == 1


def test_bad_payload_prints_one_line_per_field_and_starts_no_run(tmp_path):
    (tmp_path / "home").mkdir()
    done = run_job(tmp_path, {"video_id": "a/b", "video_url": "ftp://h/v.mp4", "user_id": "ok",
                              "user_email": "nope", "formats": ["mp4", "avi"]})  # fmt: skip
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    lines = done.stderr[done.stderr.index("invalid payload:") :].strip().splitlines()[1:]
    assert [line.split()[0] for line in lines] == ["video_id", "video_url", "user_email", "formats"]
    assert runs_in(tmp_path) == 0


def test_missing_field_is_reported_by_name(tmp_path):
    (tmp_path / "home").mkdir()
    done = run_job(tmp_path, {"video_id": "a", "user_id": "b", "user_email": "c@example.com"})
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert 'Missing required config entry "video_url"' in done.stderr


def test_missing_openai_settings_fail_before_the_first_step_with_one_line(tmp_path):
    (tmp_path / "home").mkdir()
    done = run_job(tmp_path, {"topic": "Tides"}, job="generate_content")
    assert done.returncode != 0
    assert done.stderr.strip().splitlines()[-1] == (
        "configuration error: OPENAI_API_KEY is not set: set it to your OpenAI API key, "
        "or set OPENAI_BASE_URL to an OpenAI-compatible server that needs no key"
    )
    assert "STEP_START" not in done.stderr and "RESOURCE_INIT_FAILURE" in done.stderr
    assert runs_in(tmp_path) == 1  # the run exists, and failed
