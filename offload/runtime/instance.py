"""The Dagster instance configuration (``dagster.yaml``) offload runs with, from one source.

``deploy/instance-common.yaml`` holds the settings every deployment needs (the instance class, the
launcher, run monitoring, run retries); ``offload.runtime.concurrency`` adds the run queue. The embedded
default's
``DAGSTER_HOME/dagster.yaml`` is those plus telemetry off, written by :func:`ensure_config` (the
``offload`` command calls it). The production ``deploy/dagster.yaml`` is :func:`production_config`: the
same settings with Postgres storage and a compute log directory, both read from environment variables
when Dagster loads the file. It is generated (``python -m offload.runtime.instance --production``) and a test
checks that the committed file is current, so the two cannot drift.

The embedded file starts with :data:`MARKER`: a file with the marker (or one an older offload wrote) is
offload's and is rewritten whenever the settings change; remove the marker line to own the file, and
offload will leave it alone.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from offload import paths
from offload.runtime import concurrency

COMMON_SETTINGS = paths.PROJECT_ROOT / "deploy" / "instance-common.yaml"
MARKER = (
    "# Managed by offload: rewritten from deploy/instance-common.yaml. Delete this line to edit it yourself."
)
EMBEDDED_ONLY = {"telemetry": {"enabled": False}}  # the embedded default works offline

PRODUCTION_FILE = paths.PROJECT_ROOT / "deploy" / "dagster.yaml"
PRODUCTION_HEADER = (
    "# Production Dagster instance for offload. Generated: edit deploy/instance-common.yaml or\n"
    "# offload/runtime/instance.py, then run\n"
    "# `python -m offload.runtime.instance --production > deploy/dagster.yaml`.\n"
    "# Every `env:` value is read from the environment when a Dagster process loads this file\n"
    "# (docs/production.md).\n"
)


def env(name: str) -> dict[str, str]:
    """A value Dagster reads from the environment variable ``name`` when it loads the instance."""
    return {"env": name}


# Run, event log and schedule storage in one Postgres database. The psycopg2 scheme is explicit: on
# SQLAlchemy 2.1 dagster-postgres would reach for psycopg v3, which is not installed (shared/REFERENCE.md).
POSTGRES_STORAGE = {
    "postgres": {
        "postgres_db": {
            "hostname": env("DAGSTER_PG_HOST"),
            "port": env("DAGSTER_PG_PORT"),
            "username": env("DAGSTER_PG_USER"),
            "password": env("DAGSTER_PG_PASSWORD"),
            "db_name": env("DAGSTER_PG_DB"),
            "scheme": "postgresql+psycopg2",
        }
    }
}
# Step stdout/stderr, written by run workers on the code server's machine and read by the webserver: a
# directory both mount (compose: the `compute-logs` volume).
PRODUCTION_ONLY = {"compute_logs": {"config": {"base_dir": env("DAGSTER_COMPUTE_LOG_DIR")}}}

# What earlier versions of offload wrote, before the marker existed: still ours to upgrade.
LEGACY_FILES = (
    "# Embedded default: SQLite run, event and schedule storage in this directory.\n"
    "telemetry:\n  enabled: false\n",
    # The webhooks branch's embedded file, which named the fork-server launcher by its old module path.
    "# Embedded default: SQLite run, event and schedule storage in this directory.\n"
    "telemetry:\n  enabled: false\n"
    "# Queued runs start within a second (Dagster's default checks the queue every 5 s), in a worker forked\n"
    "# from a process that has the code imported already (offload/launcher.py): about 1 s from a webhook"
    " to its\n"
    "# run starting, instead of 5-15 s.\n"
    "run_queue:\n  dequeue_interval_seconds: 1\n"
    "run_launcher:\n  module: offload.launcher\n  class: ForkServerRunLauncher\n",
)

CREATED, UPDATED, UNCHANGED, NOT_MANAGED = "created", "updated", "unchanged", "not managed"


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``override`` laid over it, nested mappings merged key by key."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def common_settings() -> dict[str, Any]:
    return yaml.safe_load(COMMON_SETTINGS.read_text())


def instance_config(storage: Mapping[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
    """The common settings, offload's run queue (generated from ``offload.runtime.concurrency``: its rules
    follow
    the ``Queue`` limits, so they are code, not YAML), and a deployment's own blocks (``storage`` ...)."""
    base = merge(common_settings(), {"run_coordinator": concurrency.run_coordinator_config()})
    return merge(merge(base, {"storage": storage} if storage else {}), overrides)


def embedded_config(**overrides: Any) -> dict[str, Any]:
    """The embedded default: Dagster's SQLite storage in DAGSTER_HOME, the common settings, no telemetry."""
    return instance_config(**merge(EMBEDDED_ONLY, overrides))


def production_config() -> dict[str, Any]:
    """``deploy/dagster.yaml``: the common settings and run queue, Postgres storage, compute log directory."""
    return instance_config(POSTGRES_STORAGE, **PRODUCTION_ONLY)


def render_production() -> str:
    body = yaml.safe_dump(production_config(), sort_keys=False, default_flow_style=False)
    return f"{PRODUCTION_HEADER}{body}"


def render(config: Mapping[str, Any]) -> str:
    """The managed file's text: the marker, then the settings."""
    body = yaml.safe_dump(dict(config), sort_keys=False, default_flow_style=False)
    return f"{MARKER}\n# Embedded default: SQLite run, event and schedule storage in this directory.\n{body}"


def is_managed(text: str) -> bool:
    return text.startswith(MARKER) or text in LEGACY_FILES


def ensure_config(home: Path) -> str:
    """Write ``home/dagster.yaml`` if it is missing or offload's and out of date; say which happened."""
    config = home / "dagster.yaml"
    wanted = render(embedded_config())
    if not config.exists():
        config.write_text(wanted)
        return CREATED
    current = config.read_text()
    if not is_managed(current):
        return NOT_MANAGED
    if current == wanted:
        return UNCHANGED
    config.write_text(wanted)
    return UPDATED


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m offload.runtime.instance", description="Print a dagster.yaml offload runs with."
    )
    parser.add_argument("--production", action="store_true", help="the production file (deploy/dagster.yaml)")
    args = parser.parse_args(argv)
    sys.stdout.write(render_production() if args.production else render(embedded_config()))


if __name__ == "__main__":
    main()
