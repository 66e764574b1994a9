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

import yaml

from offload import concurrency, paths


def _rules_yaml() -> str:
    """One line per rule; they are generated from offload/concurrency.py, never edited by hand."""
    lines = [yaml.safe_dump(rule, default_flow_style=True, width=200).strip()
             for rule in concurrency.tag_concurrency_limits()]  # fmt: skip
    return "\n".join(f"      - {line}" for line in lines)


EMBEDDED_INSTANCE = f"""\
# Embedded default: SQLite run, event and schedule storage in this directory.
telemetry:
  enabled: false
# The run queue: a run waits for a free slot of its nesting level, queue and key (offload/concurrency.py).
run_coordinator:
  module: dagster._core.run_coordinator
  class: QueuedRunCoordinator
  config:
    max_concurrent_runs: -1  # the offload/depth rule caps runs per nesting level instead
    dequeue_interval_seconds: 1  # Dagster's default (5 s) would be most of a short run's start latency
    tag_concurrency_limits:
{_rules_yaml()}
# trigger(max_attempts=N) sets the dagster/max_retries tag; runs without it are not retried.
run_retries:
  enabled: true
  max_retries: 0
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
