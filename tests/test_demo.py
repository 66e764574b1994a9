"""What the demo prints: the steps' own lines and offload's summary, not Dagster's DEBUG event lines nor its
superseded/beta warnings (they stay in the run's event log and in the raw log the demo keeps). The filter
is checked on a captured sample of the demo's output, and once on a real ``dagster job execute`` run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from offload.console import ConsoleFilter

RUN = "2e58f2df-f48b-4e8c-b5c3-7a80cb0049ea"
PREFIX = "2026-12-04 16:37:14 +0000 - dagster"
CAPTURED = f"""\
/work/.venv/lib/python3.11/site-packages/click/core.py:911: SupersessionWarning: Function \
`job_execute_command` is superseded and its usage is discouraged. Use 'dg launch --job <job_name>' instead.
  return callback(*args, **kwargs)
/work/.venv/lib/python3.11/site-packages/dagster/_core/definitions/sensor_definition.py:809: BetaWarning: \
Parameter `owners` of initializer `SensorDefinition.__init__` is currently in beta.
  return SensorDefinition(
{PREFIX} - DEBUG - video_pipeline - {RUN} - 19818 - RUN_START - Started execution of run for "video_pipeline".
{PREFIX} - DEBUG - video_pipeline - {RUN} - 19818 - download - STEP_START - Started step "download".
{PREFIX} - INFO - video_pipeline - {RUN} - download - downloaded {{"video_id": "sample", "bytes": 996986}}
{PREFIX} - DEBUG - video_pipeline - {RUN} - download - Writing file at: /work/.dagster_home/storage/x/result
{PREFIX} - INFO - video_pipeline - {RUN} - transcode[mp4] - mp4 100%
{PREFIX} - ERROR - video_pipeline - {RUN} - 19818 - upload - STEP_FAILURE - Execution of step "upload" failed.

OSError: disk full

Stack Trace:
  File "/work/pipelines/video/steps.py", line 170, in upload
{PREFIX} - DEBUG - video_pipeline - {RUN} - 19818 - ENGINE_EVENT - Finished steps in process
  (continued)
{PREFIX} - WARNING - video_pipeline - {RUN} - notify - users without an email address were not sent mail
"""


def shown(text: str) -> list[str]:
    console = ConsoleFilter()
    return [line for raw in text.splitlines(keepends=True) if (line := console.line(raw)) is not None]


def test_the_filter_keeps_the_steps_lines_and_drops_debug_events_and_warnings():
    assert shown(CAPTURED) == [
        '  download - downloaded {"video_id": "sample", "bytes": 996986}',
        "  transcode[mp4] - mp4 100%",
        '  upload - STEP_FAILURE - Execution of step "upload" failed.',
        "",
        "OSError: disk full",
        "",
        "Stack Trace:",
        '  File "/work/pipelines/video/steps.py", line 170, in upload',
        "  notify - users without an email address were not sent mail",
    ]
    assert shown("video_pipeline succeeded\n  /var/storage/a.mp4  (1 bytes)\n") == [
        "video_pipeline succeeded",
        "  /var/storage/a.mp4  (1 bytes)",
    ]


def test_a_real_run_shows_no_debug_lines_or_warnings(tmp_path, monkeypatch, capsys):
    from examples.demo import execute
    from offload.cli import ensure_instance

    for name in [k for k in os.environ if k.startswith(("OFFLOAD_", "DAGSTER_"))]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("OFFLOAD_DATA_DIR", str(tmp_path / "data"))
    ensure_instance()
    log_file = tmp_path / "demo.log"

    returncode = execute("hello_world", Path("examples/hello_world.yaml").resolve(), log_file)

    printed = capsys.readouterr().out
    assert returncode == 0, log_file.read_text()
    assert 'greet - greeted {"name": "Ada"}' in printed
    for noise in ("DEBUG", "Warning", "superseded", "STEP_START"):
        assert noise not in printed
    raw = log_file.read_text()
    assert " - DEBUG - hello_world - " in raw and "SupersessionWarning" in raw  # kept in the raw log


def test_the_demo_run_carries_the_payload_ids_as_tags(tmp_path, monkeypatch, capsys):
    """The video demo's payload through the same command, tagged ``video_id`` and ``user_id``."""
    import dagster as dg

    from examples.demo import execute
    from offload.cli import ensure_instance

    for name in [k for k in os.environ if k.startswith(("OFFLOAD_", "DAGSTER_"))]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("OFFLOAD_DATA_DIR", str(tmp_path / "data"))
    ensure_instance()
    payload = tmp_path / "typed_task.yaml"
    payload.write_text("user_id: demo-user\nemail: demo@example.com\n")

    assert execute("typed_task", payload, tmp_path / "demo.log") == 0, (tmp_path / "demo.log").read_text()

    with dg.DagsterInstance.from_config(str(tmp_path / "home")) as instance:
        [run] = instance.get_runs()
    assert run.tags["user_id"] == "demo-user"


@pytest.fixture(autouse=True)
def _project_root(monkeypatch):
    from offload import paths

    monkeypatch.chdir(paths.PROJECT_ROOT)
