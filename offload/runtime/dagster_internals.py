"""The Dagster internals offload uses outside ``offload/runtime``, imported from one place.

Dagster exports none of these; the Dagster set is pinned in pyproject.toml, and tests/test_layout.py keeps
every other ``dagster._*`` import inside ``offload/runtime``, so an upgrade has one package to check.
"""

from __future__ import annotations

from typing import Any

# The selector the gateway resolves a job with, as ``dagster job launch`` does.
from dagster._core.definitions.selector import JobSubsetSelector

# ``define_asset_job`` returns one; offload's daily report types its schedule with it.
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

# Raised when a run id is taken: the webhook gateway creates runs with ids of its own.
from dagster._core.errors import DagsterRunAlreadyExists

# The error Dagster stores with a failed step or run: offload reads the cause out of its chain.
from dagster._utils.error import SerializableErrorInfo

# The iterator Dagster's scheduler daemon itself walks cron strings with: the previous tick offload
# computes is then the one the daemon fired, across DST changes too.
from dagster._utils.schedules import is_valid_cron_string, reverse_cron_string_iterator

__all__ = [
    "DagsterRunAlreadyExists",
    "JobSubsetSelector",
    "SerializableErrorInfo",
    "UnresolvedAssetJobDefinition",
    "is_valid_cron_string",
    "reverse_cron_string_iterator",
    "workspace_process_context",
]


def workspace_process_context(instance: Any, workspace_file: str) -> Any:
    """A workspace context for ``workspace_file`` (the gateway loads the code location itself). Imported
    when called: these modules cost start-up time and ``import dagster`` does not load them."""
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import WorkspaceFileTarget

    return WorkspaceProcessContext(instance, WorkspaceFileTarget(paths=[workspace_file]))
