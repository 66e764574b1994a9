"""``offload new job NAME``: bad names and files in the way change nothing; generated jobs load together in
the code location, their generated tests pass and they are lint-clean as written."""

import subprocess
import sys
from pathlib import Path

import pytest

from offload.cli.scaffold import ScaffoldError, job_files, new_job
from tests.support.project_copy import copy_env, copy_project


@pytest.mark.parametrize(
    ("name", "line"),
    [
        ("Resize", "name = 'Resize': must be 1-32 characters of a-z, 0-9 and '_'"),
        ("resize-image", "name = 'resize-image': must be"),
        ("2fast", "name = '2fast': must be"),
        ("class", "name = 'class': must be"),
        ("a" * 33, f"name = '{'a' * 33}': must be 1-32 characters"),
    ],
)
def test_bad_name_is_one_line_and_writes_nothing(tmp_path, name, line):
    (tmp_path / "pipelines").mkdir()
    with pytest.raises(ScaffoldError) as caught:
        new_job(name, tmp_path, taken=set())
    assert str(caught.value).startswith(line) and "\n" not in str(caught.value)
    assert [p.name for p in tmp_path.rglob("*")] == ["pipelines"]


def test_existing_job_or_file_is_refused_and_nothing_written(tmp_path):
    (tmp_path / "pipelines").mkdir()
    with pytest.raises(ScaffoldError, match="name = 'hello_world': a job of that name exists already"):
        new_job("hello_world", tmp_path)  # the installed code location's own job
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_resize_image.py").write_text("mine\n")
    with pytest.raises(ScaffoldError, match=r"tests/test_resize_image\.py exists already; nothing written"):
        new_job("resize_image", tmp_path, taken=set())
    assert not (tmp_path / "pipelines" / "custom").exists()
    assert (tmp_path / "tests" / "test_resize_image.py").read_text() == "mine\n"


def test_outside_a_project_is_refused(tmp_path):
    with pytest.raises(ScaffoldError, match="not an offload project"):
        new_job("resize_image", tmp_path, taken=set())


def test_generated_jobs_load_together_and_their_tests_pass(tmp_path):
    root = copy_project(tmp_path / "project")
    env = copy_env(root)
    for name in ("resize_image", "a234567890123456789012345678901z"):  # the longest name: lines stay < 110
        made = subprocess.run(
            [".venv/bin/offload", "new", "job", name], cwd=root, env=env, capture_output=True, text=True
        )
        assert made.returncode == 0, made.stderr
        assert f"wrote {root / 'pipelines' / 'custom' / name}.py" in made.stdout
    generated = [root / path for name in ("resize_image", "a234567890123456789012345678901z")
                 for path in job_files(name) if path.endswith(".py")]  # fmt: skip
    tests = [str(path) for path in generated if path.name.startswith("test_")]
    # Both jobs in one code location: their op names must not clash (Dagster refuses the location if so).
    ran = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
        cwd=root, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-2000:]
    assert "6 passed" in ran.stdout
    ruff = str(root / ".venv" / "bin" / "ruff")
    for check in ([ruff, "check", *map(str, generated)], [ruff, "format", "--check", *map(str, generated)]):
        linted = subprocess.run(check, cwd=root, capture_output=True, text=True)
        assert linted.returncode == 0, linted.stdout + linted.stderr


def test_cli_init_says_how_to_start():
    offload = str(Path(sys.executable).with_name("offload"))
    said = subprocess.run([offload, "init"], capture_output=True, text=True)
    assert said.returncode == 2 and "bash scripts/demo.sh" in said.stderr and "offload new job" in said.stderr
