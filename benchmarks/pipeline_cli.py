"""Running ``video_pipeline`` exactly as a user does: ``dagster job execute -f definitions.py``.

Each run gets its own data directory (``OFFLOAD_DATA_DIR``) with the source linked into its ``samples/``,
the one place the embedded default lets ``file://`` URLs read. The Dagster instance (``DAGSTER_HOME``) is
created once per benchmark and initialised before any timing, as a deployed instance would be.
"""

from __future__ import annotations

import compileall
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import yaml

from benchmarks.inputs import CACHE
from offload.cli import dagster_executable
from offload.paths import PROJECT_ROOT
from offload.runtime import instance

SCRATCH = CACHE / "tmp"  # beside the cached inputs, so they can be hard-linked rather than copied
TAG = "offload/benchmark-run"


@dataclass(frozen=True)
class PipelineRun:
    outputs: dict[str, int]  # file name in storage -> bytes
    tag: str  # the value of the TAG tag on this run, to find it in the instance


def scratch_dir(prefix: str) -> Path:
    SCRATCH.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=SCRATCH))


def compile_project() -> None:
    """Write the project's bytecode, as installing it does: with ``PYTHONDONTWRITEBYTECODE`` set (as in
    some shells and CI images) every run would otherwise compile the code location's ~100 modules again,
    about 0.4 s a run that no deployment pays."""
    for entry in sorted(PROJECT_ROOT.iterdir()):
        if entry.suffix == ".py":
            compileall.compile_file(entry, quiet=1)
        elif (entry / "__init__.py").exists():
            compileall.compile_dir(entry, quiet=1)


@contextlib.contextmanager
def dagster_home() -> Iterator[Path]:
    """A throwaway instance with the embedded default's config, its storages created up front."""
    compile_project()
    home = scratch_dir("dagster-home-")
    instance.ensure_config(home)
    try:
        with dg.DagsterInstance.from_config(str(home)) as dagster_instance:
            dagster_instance.get_runs(limit=1)
        yield home
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _link_or_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def run_pipeline(
    source: Path,
    formats: list[str],
    home: Path,
    executor: str = "in_process",
    monitor: Callable[[int], AbstractContextManager[object]] | None = None,
) -> PipelineRun:
    """Run the job on ``source`` and return what it stored; ``monitor(pid)`` wraps the CLI process while it
    runs (memory sampling)."""
    data = scratch_dir("data-")
    try:
        clip = data / "samples" / f"source{source.suffix}"
        _link_or_copy(source, clip)
        payload = {"video_id": "bench", "video_url": clip.as_uri(), "user_id": "bench",
                   "user_email": "bench@example.com", "formats": formats}  # fmt: skip
        payload_file = data / "payload.yaml"
        payload_file.write_text(yaml.safe_dump(payload, sort_keys=False))
        env = os.environ | {"DAGSTER_HOME": str(home), "OFFLOAD_DATA_DIR": str(data),
                            "OFFLOAD_ENV": "local", "OFFLOAD_EXECUTOR": executor}  # fmt: skip
        tag = uuid.uuid4().hex
        command = [dagster_executable(), "job", "execute", "-f", "definitions.py", "-j", "video_pipeline",
                   "-c", str(payload_file), "--tags", json.dumps({TAG: tag})]  # fmt: skip
        log = data / "dagster.log"
        with log.open("w") as out:
            cli = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
            with cli, monitor(cli.pid) if monitor else contextlib.nullcontext():
                code = cli.wait()
        if code != 0:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
            raise RuntimeError(f"video_pipeline exited with {code}; last lines of its log:\n{tail}")
        outputs = {p.name: p.stat().st_size for p in sorted((data / "storage").rglob("*")) if p.is_file()}
        if len(outputs) != len(formats) + 1:  # every format and the thumbnail
            raise RuntimeError(f"video_pipeline stored {sorted(outputs)}, expected {formats} and a thumbnail")
        return PipelineRun(outputs=outputs, tag=tag)
    finally:
        shutil.rmtree(data, ignore_errors=True)


def run_breakdown(home: Path, run: PipelineRun) -> dict[str, float]:
    """Where a run's time went, from its event log: the run itself and each step (seconds)."""
    with dg.DagsterInstance.from_config(str(home)) as dagster_instance:
        run_id = dagster_instance.get_runs(filters=dg.RunsFilter(tags={TAG: run.tag}), limit=1)[0].run_id
        stats = dagster_instance.get_run_stats(run_id)
        breakdown = {"run": (stats.end_time or 0.0) - (stats.start_time or 0.0)}
        for step in dagster_instance.get_run_step_stats(run_id):
            breakdown[step.step_key] = (step.end_time or 0.0) - (step.start_time or 0.0)
    return {key: round(seconds, 3) for key, seconds in breakdown.items()}
