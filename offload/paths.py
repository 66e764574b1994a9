"""Where the embedded default keeps its files, and the one switch to production.

With no environment variables at all, offload runs on one machine: instance storage in a project-local
DAGSTER_HOME, outputs in a local storage directory, emails in a local outbox. ``OFFLOAD_ENV=production``
selects the production resources (S3, Resend); every path below can be moved with its variable.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]

LOCAL = "local"
PRODUCTION = "production"


def environment() -> str:
    """The deployment name: ``local`` (default) or ``production``; anything else is a configuration error."""
    name = os.environ.get("OFFLOAD_ENV", LOCAL).strip().lower() or LOCAL
    if name not in (LOCAL, PRODUCTION):
        raise ValueError(f"OFFLOAD_ENV: must be 'local' or 'production', got {name!r}")
    return name


def data_dir() -> Path:
    """Root of every local file offload writes (git-ignored ``var/`` by default)."""
    return Path(os.environ.get("OFFLOAD_DATA_DIR", PROJECT_ROOT / "var")).resolve()


def storage_dir() -> Path:
    return data_dir() / "storage"


def outbox_dir() -> Path:
    return data_dir() / "outbox"


def work_dir() -> Path:
    """Scratch space for in-flight files (downloads, transcodes); one subdirectory per run."""
    return data_dir() / "work"


def samples_dir() -> Path:
    """Generated sample media; ``file://`` URLs under it are allowed in the embedded default."""
    return data_dir() / "samples"


def dagster_home() -> Path:
    return Path(os.environ.get("DAGSTER_HOME", PROJECT_ROOT / ".dagster_home")).resolve()
