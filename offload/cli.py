"""``offload``: the ``dagster`` CLI with the embedded instance in place.

Dagster needs ``DAGSTER_HOME`` to keep runs between commands; without it every command gets a throwaway
instance. ``offload <dagster args>`` defaults it to the project-local ``.dagster_home`` (created on first
use, with telemetry off since the embedded default works offline, and offload's run queue: concurrency
limits and retries on request) and runs ``dagster <dagster args>``.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import yaml

from offload import concurrency, paths

# Appended to the embedded default: the run queue of offload/concurrency.py (generated from its ``Queue``
# rules, one line each), and run retries, which ``trigger(max_attempts=N)`` asks for per run.
RUN_QUEUE_BLOCKS = {
    "run_coordinator": concurrency.run_coordinator_config(),
    "run_retries": {"enabled": True, "max_retries": 0},  # only runs that ask (dagster/max_retries tag)
}

EMBEDDED_INSTANCE = """\
# Embedded default: SQLite run, event and schedule storage in this directory.
telemetry:
  enabled: false
# The run queue and retries: offload/concurrency.py, offload/client.py (generated).
""" + yaml.safe_dump(RUN_QUEUE_BLOCKS, sort_keys=False, default_flow_style=None, width=200)


def ensure_instance() -> Path:
    """Create DAGSTER_HOME (and its dagster.yaml) on first use and export it for child processes."""
    home = paths.dagster_home()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(EMBEDDED_INSTANCE)
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def dagster_executable() -> str:
    """The ``dagster`` script next to this interpreter (the virtualenv's), else the one on PATH."""
    beside = Path(sys.executable).with_name("dagster")
    return str(beside) if beside.exists() else (shutil.which("dagster") or "dagster")


def main() -> None:
    ensure_instance()
    executable = dagster_executable()
    os.execv(executable, [executable, *sys.argv[1:]])
