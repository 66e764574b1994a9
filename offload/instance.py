"""The Dagster instance configuration (``dagster.yaml``) offload runs with, from one source.

``deploy/instance-common.yaml`` holds the settings every deployment needs (the instance class, the
launcher, run monitoring, run retries); ``offload.concurrency`` adds the run queue. The embedded default's
``DAGSTER_HOME/dagster.yaml`` is those plus telemetry off, written by :func:`ensure_config` (the
``offload`` command calls it). A production ``dagster.yaml`` is :func:`instance_config` with its storage
block, so it cannot drift from the embedded one.

The embedded file starts with :data:`MARKER`: a file with the marker (or one an older offload wrote) is
offload's and is rewritten whenever the settings change; remove the marker line to own the file, and
offload will leave it alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from offload import concurrency, paths

COMMON_SETTINGS = paths.PROJECT_ROOT / "deploy" / "instance-common.yaml"
MARKER = (
    "# Managed by offload: rewritten from deploy/instance-common.yaml. Delete this line to edit it yourself."
)
EMBEDDED_ONLY = {"telemetry": {"enabled": False}}  # the embedded default works offline

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
    """The common settings, offload's run queue (generated from ``offload.concurrency``: its rules follow
    the ``Queue`` limits, so they are code, not YAML), and a deployment's own blocks (``storage`` ...)."""
    base = merge(common_settings(), {"run_coordinator": concurrency.run_coordinator_config()})
    return merge(merge(base, {"storage": storage} if storage else {}), overrides)


def embedded_config(**overrides: Any) -> dict[str, Any]:
    """The embedded default: Dagster's SQLite storage in DAGSTER_HOME, the common settings, no telemetry."""
    return instance_config(**merge(EMBEDDED_ONLY, overrides))


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
