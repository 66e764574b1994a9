"""The code location through the real CLI, as a user runs it: definitions load from workspace.yaml, the
``offload`` wrapper creates the embedded instance on first use, ``dagster job execute`` runs the main job
from a payload file, a bad payload prints one line per field (no traceback) and starts no run, and a job
whose AI settings are missing fails before its first step with the one line naming the variable.

Every job has an example payload in examples/, and ``dagster definitions validate`` and ``offload job
execute -c examples/<job>.yaml`` succeed for each on the production instance file (deploy/dagster.yaml)
against a database of the local PostgreSQL, where the run and its events are then rows. Only what must
point at this machine is laid over an example (a second ``-c`` file: its URLs, by loopback servers)."""

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml

from benchmarks.support import dagster_deployment
from benchmarks.support.http_server import LocalHTTPServer, body
from benchmarks.support.postgres import rows, temporary_database
from offload import paths
from tests.support.openai_server import openai_server

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


# -- every job from its example payload, on the production instance ---------------------------------------

# welcome_user's step triggers child runs through the webserver, which a CLI process has not got: it runs
# in the deployment on the same instance file (tests/test_production_instance.py). publish_article waits
# for an editor: its resume needs the daemon (tests/test_waits.py runs it).
NEEDS_WEBSERVER = {"welcome_user", "publish_article"}
PARTITION = json.dumps({"dagster/partition": "2026-02-28"})  # daily_report_job reports one day


def job_names() -> list[str]:
    from definitions import defs

    return sorted(job.name for job in defs.resolve_all_job_defs() if not job.name.startswith("__"))


def test_every_job_has_an_example_payload():
    examples = {path.stem for path in (ROOT / "examples").glob("*.yaml")}
    assert set(job_names()) - examples == set()


@dataclass
class Production:
    url: str  # the instance's Postgres database
    env: dict[str, str]
    root: Path
    overrides: dict[str, dict[str, Any]]  # per job: what points an example at this machine


def sync_source(path: Path) -> Path:
    """A small source table for data_pipeline (the example's key and cursor column)."""
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, customer TEXT, amount INTEGER,"
                   " updated_at TIMESTAMP)")  # fmt: skip
        db.executemany(
            "INSERT INTO orders VALUES (?, ?, ?, ?)",
            [(1, "ada", 100, "2026-03-01 12:01:00"), (2, "grace", 250, "2026-03-01 12:07:00")],
        )
    return path


@pytest.fixture(scope="module")
def production(tmp_path_factory) -> Iterator[Production]:
    from pipelines.video.samples import make_clip
    from tests.test_content_jobs import writer

    root = tmp_path_factory.mktemp("production")
    site = LocalHTTPServer({
        "/ok": body(b'{"ok": true}', headers={"Content-Type": "application/json"}),
        "/page": body(b"<html><body><h1>Tides</h1><p><a href='/more'>more</a></p></body></html>",
                      headers={"Content-Type": "text/html; charset=utf-8"}),
    })  # fmt: skip
    with temporary_database() as url, site, openai_server() as model:
        model.chat = writer  # outline, article and SEO pass, as content_workflow asks
        samples = root / "data" / "samples"  # the embedded resources allow file:// under it
        samples.mkdir(parents=True)
        clip = make_clip(samples / "clip.mp4", seconds=1, width=160, height=120).as_uri()
        dagster_deployment.production_home(root)
        env = cli_env(
            root,
            **dagster_deployment.production_env(url, root),
            OFFLOAD_FETCH_ALLOW_HOSTS=f"{site.origin},{model.origin}",
            OPENAI_BASE_URL=model.url,
            OPENAI_API_KEY="sk-test-not-a-key",
            OFFLOAD_SYNC_SOURCE_URL=f"sqlite:///{sync_source(root / 'source.db')}",
            OFFLOAD_SYNC_SOURCE_TABLE="orders",
            NO_PROXY="127.0.0.1,localhost",
        )
        overrides: dict[str, dict[str, Any]] = {
            "video_pipeline": {"video_url": clip},
            "process_video": {"video_url": clip},
            "resilient_task": {"url": site.url("/ok")},
            "scrape_websites": {"urls": [site.url("/page")]},
        }
        yield Production(url, env, root, overrides)


def test_definitions_validate_on_the_production_instance(production):
    done = subprocess.run(
        [BIN / "dagster", "definitions", "validate", "-f", "definitions.py"],
        cwd=ROOT, env=production.env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Validation successful" in done.stdout + done.stderr


@pytest.mark.parametrize("job", sorted(set(job_names()) - NEEDS_WEBSERVER))
def test_every_job_runs_from_its_example_payload_on_the_production_instance(production, job):
    command = [str(BIN / "offload"), "job", "execute", "-f", "definitions.py", "-j", job,
               "-c", f"examples/{job}.yaml"]  # fmt: skip
    if job in production.overrides:  # merged over the example: the later file's keys win
        local = production.root / f"{job}.local.yaml"
        local.write_text(yaml.safe_dump(production.overrides[job]))
        command += ["-c", str(local)]
    if job == "daily_report_job":
        command += ["--tags", PARTITION]
    done = subprocess.run(command, cwd=ROOT, env=production.env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    [(run_id, status)] = rows(
        production.url, "SELECT run_id, status FROM runs WHERE pipeline_name = %(job)s", job=job
    )
    assert status == "SUCCESS"
    events = {kind for (kind,) in rows(
        production.url, "SELECT dagster_event_type FROM event_logs WHERE run_id = %(run)s", run=run_id
    )}  # fmt: skip
    stored = {kind.value for kind in (dg.DagsterEventType.RUN_START, dg.DagsterEventType.STEP_SUCCESS,
                                      dg.DagsterEventType.RUN_SUCCESS)}  # fmt: skip
    assert stored <= events  # (run events are stored under their old PIPELINE_ names)
