"""Per-job max runtime: one way to declare it, one way to read it, one wording for the failure.

A job (or a single run) declares its limit as the ``dagster/max_runtime`` tag, the tag Dagster's run
monitoring already enforces: ``@dg.job(tags=max_runtime(3600))``, or the same tag given when a run is
submitted, which wins over the job's. There is no default limit: jobs may run for hours. The limit counts
from the start of each attempt (a crash retry starts its own clock), and it is checked every run-monitoring
poll, so a run ends between N and N + poll interval seconds after it started
(``deploy/instance-common.yaml``).

Dagster's own failure text is "Exceeded maximum runtime of N seconds."; offload's launcher records
:func:`max_runtime_message` instead (``offload/runtime/launcher.py``), so the UI says "exceeded max runtime
of N s".
"""

from __future__ import annotations

import time
from collections.abc import Mapping

# Dagster's tag (dagster._core.storage.tags.MAX_RUNTIME_SECONDS_TAG) and the alias its monitor also reads.
MAX_RUNTIME_TAG = "dagster/max_runtime"
_MAX_RUNTIME_ALIAS = "dagster/max_runtime_seconds"


def max_runtime(seconds: int) -> dict[str, str]:
    """Tags that give a job (or a run) a max runtime of ``seconds``: ``@dg.job(tags=max_runtime(600))``."""
    if isinstance(seconds, bool) or not isinstance(seconds, int) or seconds <= 0:
        raise ValueError(f"max_runtime: must be a whole number of seconds > 0, got {seconds!r}")
    return {MAX_RUNTIME_TAG: str(seconds)}


def max_runtime_of(tags: Mapping[str, str], default: float = 0) -> float | None:
    """The limit a run's tags declare (else ``default``, the instance-wide setting); None when unlimited.

    Reads the tags exactly as Dagster's monitor does (``dagster/_daemon/monitoring/run_monitoring.py``):
    ``dagster/max_runtime``, then ``dagster/max_runtime_seconds``; an unparsable value means no limit.
    """
    raw = tags.get(MAX_RUNTIME_TAG, tags.get(_MAX_RUNTIME_ALIAS))
    try:
        limit = float(raw) if raw else float(default)
    except ValueError:
        return None
    return limit if limit > 0 else None


def is_over(start_time: float | None, limit: float | None, now: float | None = None) -> bool:
    """Whether a run that started at ``start_time`` (epoch seconds) has run longer than ``limit``."""
    if start_time is None or limit is None:
        return False
    return (time.time() if now is None else now) - start_time > limit


def max_runtime_message(limit: float) -> str:
    """The failure reason of a run that ran out of time: ``exceeded max runtime of 600 s``."""
    shown = str(int(limit)) if float(limit).is_integer() else str(limit)
    return f"exceeded max runtime of {shown} s"
