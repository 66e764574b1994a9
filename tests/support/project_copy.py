"""A throwaway copy of the project, for tests that run commands which write into it (``offload new job``).

The copy has the source files only (no virtualenv, caches, run history or data) and a ``.venv`` symlink to
this project's, so ``.venv/bin/...`` commands work in it as in the project. Commands run in the copy get
``DAGSTER_HOME`` and ``OFFLOAD_DATA_DIR`` inside it, so nothing lands in the real project.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from offload.paths import PROJECT_ROOT

IGNORED = shutil.ignore_patterns(
    ".git", ".venv", "var", ".dagster_home", "__pycache__", "*.egg-info", ".mypy_cache", ".ruff_cache",
    ".pytest_cache", "results", "build",
)  # fmt: skip


def copy_project(target: Path) -> Path:
    """Copy the project's sources to ``target`` (which must not exist) and link its virtualenv."""
    shutil.copytree(PROJECT_ROOT, target, ignore=IGNORED)
    (target / ".venv").symlink_to(PROJECT_ROOT / ".venv")
    return target


def copy_env(root: Path) -> dict[str, str]:
    """The environment for a command run in the copy at ``root``: its own instance and data directory."""
    return {
        **os.environ,
        "DAGSTER_HOME": str(root / ".dagster_home"),
        "OFFLOAD_DATA_DIR": str(root / "var"),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
