"""``offload``: the ``dagster`` CLI with the embedded instance in place.

Dagster needs ``DAGSTER_HOME`` to keep runs between commands; without it every command gets a throwaway
instance. ``offload <dagster args>`` defaults it to the project-local ``.dagster_home`` (created on first
use), brings its ``dagster.yaml`` up to date (offload's launcher, run monitoring and retries, telemetry off:
``offload/runtime/instance.py``) and runs ``dagster <dagster args>``; ``offload dev`` is ``dagster dev`` with
its UI
behind offload's guard against other web pages (``offload/runtime/dev_server.py``); ``offload queues``
changes queue limits at run time (``offload/cli/queues.py``).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import yaml

from offload import paths
from offload.runtime import instance


def ensure_instance() -> Path:
    """Create DAGSTER_HOME on first use, keep offload's dagster.yaml current, export it to child processes."""
    home = paths.dagster_home()
    home.mkdir(parents=True, exist_ok=True)
    if instance.ensure_config(home) == instance.NOT_MANAGED:
        settings = yaml.safe_load((home / "dagster.yaml").read_text()) or {}
        if (settings.get("run_launcher") or {}).get("module") != "offload.runtime.launcher":
            print(
                f"offload: {home / 'dagster.yaml'} is not managed by offload and does not use its run"
                " launcher: crashed runs will not be detected or resumed (settings:"
                " deploy/instance-common.yaml)",
                file=sys.stderr,
            )
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def dagster_executable() -> str:
    """The ``dagster`` script next to this interpreter (the virtualenv's), else the one on PATH."""
    beside = Path(sys.executable).with_name("dagster")
    return str(beside) if beside.exists() else (shutil.which("dagster") or "dagster")


def main() -> None:
    if sys.argv[1:2] in (["new"], ["init"]):  # offload's own commands (dagster has neither)
        from offload.cli import scaffold

        sys.exit(scaffold.main(sys.argv[1:]))
    ensure_instance()
    if sys.argv[1:2] == ["queues"]:  # queue limits at run time (offload/cli/queues.py)
        from offload.cli import queues

        sys.exit(queues.main(sys.argv[2:]))
    if sys.argv[1:2] == ["dev"]:
        from offload.runtime import dev_server as dev

        dev.main(sys.argv[2:])
        return
    executable = dagster_executable()
    os.execv(executable, [executable, *sys.argv[1:]])
