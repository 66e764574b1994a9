"""``offload``: the ``dagster`` CLI with the embedded instance in place.

Dagster needs ``DAGSTER_HOME`` to keep runs between commands; without it every command gets a throwaway
instance. ``offload <dagster args>`` defaults it to the project-local ``.dagster_home`` (created on first
use, with telemetry off since the embedded default works offline) and runs ``dagster <dagster args>``.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from offload import paths

EMBEDDED_INSTANCE = """\
# Embedded default: SQLite run, event and schedule storage in this directory.
telemetry:
  enabled: false
# Queued runs start within a second (Dagster's default checks the queue every 5 s), in a worker forked
# from a process that has the code imported already (offload/launcher.py): about 1 s from a webhook to its
# run starting, instead of 5-15 s.
run_queue:
  dequeue_interval_seconds: 1
run_launcher:
  module: offload.launcher
  class: ForkServerRunLauncher
"""


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
